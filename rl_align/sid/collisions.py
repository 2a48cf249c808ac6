"""Collision resolution: no two items may share a Semantic ID.

- ``append``: items that share a code get one extra disambiguation level
  (0, 1, 2, … within the group, nearest to the shared codeword first); unique
  items keep their code. The new level's codebook has max-group-size codes.
- ``reassign``: every item but the nearest one of a group moves to the nearest
  *free* code at its last level (same prefix); items that find no free code
  (more items under a prefix than codes) fall back to ``append``.
- ``item_token``: every item gets one more level whose code is its own item index
  (codebook = n_items), so codes may share their semantic levels freely and the
  policy reads and writes an item-ID token after the semantic prefix (an ID
  embedding on the input side, as an item-ID model has). Fixed-length codes only.
"""

from __future__ import annotations

import numpy as np

from rl_align.sid.base import SidTokenizer
from rl_align.sid.codes import NO_CODE, SidCodes


def _groups(codes: SidCodes) -> tuple[np.ndarray, np.ndarray]:
    """(group id of each item (n,), item count of each group (n_groups,)); a group = one shared code."""
    _, inv, counts = np.unique(codes.keys(), return_inverse=True, return_counts=True)
    return inv.ravel(), counts


def append_level(codes: SidCodes, priority: np.ndarray) -> SidCodes:
    """Append a disambiguation code to colliding items.

    Args:
        codes: codes with possible collisions.
        priority: (n,) float, lower keeps index 0 within its group (e.g. quantisation error).
    """
    inv, counts = _groups(codes)
    colliding = counts[inv] > 1
    if not colliding.any():
        return codes
    order = np.lexsort((np.arange(codes.n), priority, inv))
    rank = np.empty(codes.n, np.int64)
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank[order] = np.arange(codes.n) - start[inv[order]]
    extra_k = int(counts.max())
    # The extra code goes at each colliding item's own position `length` (codes may be variable-length).
    new_len = codes.lengths + colliding.astype(np.int32)
    L = max(codes.max_len, int(new_len.max()))
    out = np.full((codes.n, L), NO_CODE, np.int32)
    out[:, : codes.max_len] = codes.codes
    rows = np.flatnonzero(colliding)
    out[rows, codes.lengths[rows]] = rank[rows]
    sizes = list(codes.codebook_sizes) + [0] * (L - codes.max_len)
    for lvl in np.unique(codes.lengths[rows]):
        sizes[lvl] = max(sizes[lvl], extra_k)
    return SidCodes(out, new_len, sizes)


def item_level(codes: SidCodes) -> SidCodes:
    """Append each item's own index as a final level (codebook size = n items).

    Args:
        codes: fixed-length codes (n, L), collisions allowed.

    Returns:
        (n, L + 1) codes, every one unique; level L's codebook has n codes.
    """
    if codes.n and (codes.lengths != codes.max_len).any():
        raise ValueError(f"sid.collision: item_token needs fixed-length codes; the tokenizer gave lengths "
                         f"{int(codes.lengths.min())}..{int(codes.lengths.max())} (use append or reassign)")
    out = np.concatenate([codes.codes, np.arange(codes.n, dtype=np.int32)[:, None]], axis=1)
    return SidCodes.fixed(out, list(codes.codebook_sizes) + [max(1, codes.n)])


def reassign_last(codes: SidCodes, tokenizer: SidTokenizer, emb: np.ndarray) -> tuple[SidCodes, int]:
    """Move colliding items to the nearest free code at their last level.

    Returns:
        the new codes and the number of items that could not be moved (left colliding).
    """
    inv, counts = _groups(codes)
    colliding = counts[inv] > 1
    if not colliding.any():
        return codes, 0
    rows = np.flatnonzero(colliding)
    cand, dist = tokenizer.last_level_candidates(emb[rows], _subset(codes, rows), topn=max(codes.codebook_sizes))
    new = codes.codes.copy()
    as_tuple = codes.as_tuples()
    taken = {as_tuple[i] for i in np.flatnonzero(~colliding)}
    # nearest items (smallest distance to their current code) choose first; the first of each
    # group usually finds its own code still free and keeps it
    order = np.argsort(dist[:, 0], kind="stable")
    stuck = 0
    for j in order:
        i = rows[j]
        prefix = as_tuple[i][:-1]
        for c in cand[j].tolist():
            key = prefix + (c,)
            if key not in taken:
                taken.add(key)
                new[i, len(prefix)] = c
                break
        else:
            stuck += 1
    # stuck items keep their original code; resolve_collisions appends a level for what still collides
    return SidCodes(new, codes.lengths, codes.codebook_sizes), stuck


def _subset(codes: SidCodes, rows: np.ndarray) -> SidCodes:
    return SidCodes(codes.codes[rows], codes.lengths[rows], codes.codebook_sizes)


def resolve_collisions(codes: SidCodes, method: str, tokenizer: SidTokenizer, emb: np.ndarray) -> tuple[SidCodes, dict]:
    """Resolve collisions with ``method`` (``append`` | ``reassign`` | ``item_token``); report before/after.

    Returns:
        codes without collisions, and a report with collision stats before and after.
    """
    before = codes.collision_stats()
    report: dict = {"method": method, "before": before}
    if method == "append":
        _, dist = tokenizer.last_level_candidates(emb, codes, topn=1)
        out = append_level(codes, dist[:, 0])
    elif method == "item_token":
        out = item_level(codes)
    elif method == "reassign":
        out, stuck = reassign_last(codes, tokenizer, emb)
        report["reassign_fallback_items"] = stuck
        if stuck:
            _, dist = tokenizer.last_level_candidates(emb, out, topn=1)
            out = append_level(out, dist[:, 0])
    else:
        raise ValueError(f"sid.collision: unknown method {method!r}; expected 'append', 'reassign' or 'item_token'")
    after = out.collision_stats()
    report["after"] = after
    if after["colliding_items"]:
        raise RuntimeError(f"collision resolution ({method}) left {after['colliding_items']} colliding items")
    return out, report
