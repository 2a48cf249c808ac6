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
- ``bucket``: items whose code stopped early (an adaptive tokenizer's short tail codes)
  keep sharing it — the code stands for a bucket of items, ranked inside by a scorer
  (rl_align/sid/buckets.py); only full-length codes are made unique (``reassign``, then
  ``append``). ``sid.bucket_cap`` splits larger buckets by one appended level whose codes
  lie past that level's codebook (K, K+1, …), so a split never lands on another code.
  Collision-free codes may still be shared here: this is the one method after which a
  catalog holds collisions, and it is built with ``buckets=True``.
"""

from __future__ import annotations

from typing import Optional

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


def _merge(codes: SidCodes, rows: np.ndarray, sub: SidCodes) -> SidCodes:
    """``codes`` with the items ``rows`` replaced by ``sub`` (which may have grown a level)."""
    L = max(codes.max_len, sub.max_len)
    out = np.full((codes.n, L), NO_CODE, np.int32)
    out[:, : codes.max_len] = codes.codes
    out[rows] = NO_CODE
    out[rows, : sub.max_len] = sub.codes
    lengths = codes.lengths.copy()
    lengths[rows] = sub.lengths
    sizes = [max(a, b) for a, b in zip(codes.codebook_sizes + [0] * (L - codes.max_len),
                                       sub.codebook_sizes + [0] * (L - sub.max_len))]
    return SidCodes(out, lengths, sizes)


def _unique_among(codes: SidCodes, rows: np.ndarray, tokenizer: SidTokenizer, emb: np.ndarray) -> SidCodes:
    """Make the codes of items ``rows`` unique among themselves: reassign, then append for what still collides."""
    if rows.size < 2:
        return codes
    sub, stuck = reassign_last(_subset(codes, rows), tokenizer, emb[rows])
    if stuck or sub.collision_stats()["colliding_items"]:
        _, dist = tokenizer.last_level_candidates(emb[rows], sub, topn=1)
        sub = append_level(sub, dist[:, 0])
    return _merge(codes, rows, sub)


def bucket_codes(codes: SidCodes, tokenizer: SidTokenizer, emb: np.ndarray, cap: Optional[int] = None
                 ) -> tuple[SidCodes, dict]:
    """Bucket SIDs: short codes may be shared, full-length codes are made unique.

    Args:
        codes: the tokenizer's codes; an item with ``length < codes.max_len`` stopped early.
        cap: largest bucket; a larger one is split into ⌈size / cap⌉ buckets by one appended level (items nearest
            to their codeword first). None = no cap.

    Returns:
        codes in which only items that stopped early share codes, and bucket statistics.
    """
    L = codes.max_len
    full = np.flatnonzero(codes.lengths == L)
    out = _unique_among(codes, full, tokenizer, emb)
    if cap is not None:
        inv, counts = _groups(out)
        big = np.flatnonzero(counts[inv] > cap)
        if big.size:
            _, dist = tokenizer.last_level_candidates(emb[big], _subset(out, big), topn=1)
            sub = _subset(out, big)
            g_inv, g_counts = _groups(sub)
            order = np.lexsort((np.arange(sub.n), dist[:, 0], g_inv))
            start = np.concatenate([[0], np.cumsum(g_counts)[:-1]])
            rank = np.empty(sub.n, np.int64)
            rank[order] = np.arange(sub.n) - start[g_inv[order]]
            sub_bucket = rank // cap
            # the split level's codes lie past the tokenizer's codebook at that level (K + j), so a split bucket
            # can never land on another item's code
            Lb = max(sub.max_len, int(sub.lengths.max()) + 1)
            sizes = list(sub.codebook_sizes) + [0] * (Lb - sub.max_len)
            arr = np.full((sub.n, Lb), NO_CODE, np.int32)
            arr[:, : sub.max_len] = sub.codes
            base = np.asarray(sizes, np.int64)[sub.lengths]
            arr[np.arange(sub.n), sub.lengths] = base + sub_bucket
            for lvl in np.unique(sub.lengths):
                sizes[lvl] += int(sub_bucket[sub.lengths == lvl].max()) + 1
            out = _merge(out, big, SidCodes(arr, sub.lengths + 1, sizes))
    inv, counts = _groups(out)
    shared = counts > 1
    return out, {
        "n_buckets": int(counts.size),
        "shared_codes": int(shared.sum()),
        "items_in_shared_codes": int(counts[shared].sum()),
        "max_bucket_size": int(counts.max()) if counts.size else 0,
        "mean_shared_bucket_size": float(counts[shared].mean()) if shared.any() else 0.0,
        "bucket_cap": cap,
    }


def resolve_collisions(codes: SidCodes, method: str, tokenizer: SidTokenizer, emb: np.ndarray,
                       bucket_cap: Optional[int] = None) -> tuple[SidCodes, dict]:
    """Resolve collisions with ``method`` (``append`` | ``reassign`` | ``item_token`` | ``bucket``); report
    before/after.

    Returns:
        codes without collisions (with ``bucket``: shared only by items that stopped early), and a report with
        collision stats before and after.
    """
    before = codes.collision_stats()
    report: dict = {"method": method, "before": before}
    if method == "append":
        out = codes
        # a short code that gets an appended level may land on a longer item's code (shared prefix): append again
        for rnd in range(4):
            if not out.collision_stats()["colliding_items"]:
                break
            # first pass: nearest to the shared codeword keeps index 0; later passes (levels past the
            # tokenizer's) by item index
            prio = tokenizer.last_level_candidates(emb, out, topn=1)[1][:, 0] if rnd == 0 else np.zeros(out.n)
            out = append_level(out, prio)
    elif method == "item_token":
        out = item_level(codes)
    elif method == "reassign":
        out, stuck = reassign_last(codes, tokenizer, emb)
        report["reassign_fallback_items"] = stuck
        if stuck:
            _, dist = tokenizer.last_level_candidates(emb, out, topn=1)
            out = append_level(out, dist[:, 0])
    elif method == "bucket":
        out, report["buckets"] = bucket_codes(codes, tokenizer, emb, bucket_cap)
    else:
        raise ValueError(f"sid.collision: unknown method {method!r}; expected 'append', 'reassign', 'item_token' "
                         "or 'bucket'")
    after = out.collision_stats()
    report["after"] = after
    if after["colliding_items"] and method != "bucket":
        raise RuntimeError(f"collision resolution ({method}) left {after['colliding_items']} colliding items")
    return out, report
