"""Leave-one-out evaluation with full ranking: HR@K, NDCG@K, head/tail buckets, hallucination, export.

The ranking of a generative retriever is its constrained beam: the top-B SIDs
by sequence log-prob, each a distinct catalog item. Items the user already
interacted with are excluded inside the beam search (as RecBole masks them in
full ranking), so they never take a slot. In a bucket catalog a SID stands for
several items: each beam's bucket contributes its items in the catalog's
within-bucket order (:meth:`rl_align.sid.buckets.Buckets.expand`) and the list
length counts items, not codes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from rl_align.data.split import items_before
from rl_align.policy.data import build_prompts
from rl_align.rollouts.base import GenerationRequest, RolloutEngine
from rl_align.sid.catalog import SidCatalog
from rl_align.utils.io import atomic_path
from rl_align.utils.popularity import head_mask

PARTS = ("valid", "test", "cold", "cold_valid")


@dataclass
class EvalSet:
    """Prompts and targets of one split part.

    Attributes:
        users: (N,) dense user index. targets: (N,) item index.
        history: (N, H) prompt items (-1 padded). seen: (N, S) every earlier item (-1 padded) — excluded from ranking.
    """

    users: np.ndarray
    targets: np.ndarray
    history: np.ndarray
    seen: np.ndarray


def eval_set(split: dict[str, np.ndarray], part: str, limit: Optional[int] = None) -> EvalSet:
    """Build the ``valid``, ``test``, ``cold`` (cold-start protocol) or ``cold_valid`` (its part for choosing, after
    :func:`rl_align.data.cold.split_cold_valid`) set from a run's ``split.npz`` arrays."""
    if part not in PARTS:
        raise ValueError(f"split must be one of {', '.join(map(repr, PARTS))}, got {part!r}")
    if f"{part}_users" not in split:
        need = "eval.cold_valid_share > 0" if part == "cold_valid" else "data.cold_share > 0"
        raise ValueError(f"no {part!r} examples in this run (the cold-start protocol needs {need})")
    users = split[f"{part}_users"]
    pos = split[f"{part}_positions"]
    if limit is not None:
        users, pos = users[:limit], pos[:limit]
    seen = items_before(split["seq_items"], split["seq_offsets"], users, pos)
    n = users.size
    return EvalSet(users=users, targets=split[f"{part}_targets"][:n], history=split[f"{part}_history"][:n], seen=seen)


def rank_with_engine(engine: RolloutEngine, catalog: SidCatalog, es: EvalSet, beams: int, exclude_history: bool,
                     batch_size: int = 128, constrained: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Beam-search rankings.

    Returns:
        items (N, beams) int64 ranked best first (-1 = no item / invalid SID), scores (N, beams). In a bucket
        catalog (constrained decoding) the items are the beams' buckets expanded in within-bucket order.
    """
    out_items, out_scores = [], []
    for s in range(0, es.targets.size, batch_size):
        ids, mask = build_prompts(es.history[s: s + batch_size], catalog, es.users[s: s + batch_size])
        banned = torch.from_numpy(es.seen[s: s + batch_size]) if (exclude_history and constrained) else None
        res = engine.generate(GenerationRequest(ids, mask, n=beams, mode="beam", constrained=constrained,
                                                banned_items=banned))
        items, scores = res.items.numpy(), res.seq_logprob.numpy()
        if constrained and catalog.has_buckets:
            items, scores = catalog.buckets.expand(items, scores, es.history[s: s + batch_size], beams,
                                                   None if banned is None else banned.numpy(),
                                                   users=es.users[s: s + batch_size])
        out_items.append(items)
        out_scores.append(scores)
    return np.concatenate(out_items), np.concatenate(out_scores)


def top_unseen(scores: torch.Tensor, seen: Optional[np.ndarray], k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Full-catalog top-``k`` of each row with the row's seen items masked (RecBole's full ranking).

    Args:
        scores: (N, n_items) float, masked in place. seen: (N, S) item indices, -1 padded; None = mask nothing.
    Returns:
        items (N, k') best first, -1 where a row has fewer than k' unseen items, and their scores (N, k'),
        k' = min(k, n_items).
    """
    if seen is not None:
        r, c = np.nonzero(seen >= 0)
        scores[torch.from_numpy(r), torch.from_numpy(seen[r, c])] = float("-inf")
    sc, it = scores.topk(min(k, scores.shape[1]), dim=1)
    return torch.where(torch.isfinite(sc), it, torch.full_like(it, -1)), sc


def rank_popularity(popularity: np.ndarray, es: EvalSet, k: int, exclude_history: bool) -> np.ndarray:
    """Most popular items first (ties by item index), the user's seen items excluded. Returns (N, k)."""
    order = np.argsort(-popularity, kind="stable")
    out = np.full((es.targets.size, k), -1, np.int64)
    pool = order[: k + es.seen.shape[1] + 1]
    for r in range(es.targets.size):
        if exclude_history:
            seen = es.seen[r][es.seen[r] >= 0]
            cand = pool[~np.isin(pool, seen)][:k]
        else:
            cand = pool[:k]
        out[r, : cand.size] = cand
    return out


def target_ranks(ranked: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """(N,) 0-based position of y* in each ranked row, -1 when absent.

    Args:
        ranked: (N, B) item indices best first (-1 = empty slot). targets: (N,).
    """
    hit = ranked == targets[:, None]
    return np.where(hit.any(1), hit.argmax(1), -1).astype(np.int64)


def metrics(ranked: np.ndarray, targets: np.ndarray, ks: Sequence[int]) -> dict[str, float]:
    """HR@K and NDCG@K (one relevant item per row).

    Args:
        ranked: (N, B) item indices best first (-1 = empty slot). targets: (N,).
    """
    rank = target_ranks(ranked, targets)
    rank = np.where(rank < 0, np.iinfo(np.int64).max, rank)
    out = {}
    for k in ks:
        if k > ranked.shape[1]:
            raise ValueError(f"cannot compute @{k} from rankings of length {ranked.shape[1]} (raise eval.beams)")
        inside = rank < k
        out[f"hr@{k}"] = float(inside.mean()) if targets.size else 0.0
        gains = np.where(inside, 1.0 / np.log2(np.minimum(rank, 10**9) + 2.0), 0.0)
        out[f"ndcg@{k}"] = float(gains.mean()) if targets.size else 0.0
    return out


def bucketed(ranked: np.ndarray, targets: np.ndarray, popularity: np.ndarray, ks: Sequence[int],
             head_share: float) -> dict[str, dict[str, float]]:
    """Metrics for targets among the most popular ``head_share`` of interacted items ('head', the split
    :func:`rl_align.utils.popularity.head_mask` gives tokenizers and the cold-start protocol) and the rest ('tail')."""
    head = head_mask(popularity, head_share)
    out = {}
    for name, sel in (("head", head[targets]), ("tail", ~head[targets])):
        m = metrics(ranked[sel], targets[sel], ks) if sel.any() else {}
        m["n"] = int(sel.sum())
        out[name] = m
    return out


def export_predictions(path: str | Path, ranked: np.ndarray, users: np.ndarray, user_ids: list[str],
                       item_ids: list[str], k: int = 20) -> None:
    """JSON lines ``{"user_id": raw, "items": [raw, ... up to k, best first]}``, one per user, atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            for u, row in zip(users, ranked):
                items = [item_ids[i] for i in row[:k] if i >= 0]
                f.write(json.dumps({"user_id": user_ids[u], "items": items}) + "\n")


def sampled_hallucination_rate(engine: RolloutEngine, catalog: SidCatalog, es: EvalSet, n: int,
                               temperature: float = 1.0, batch_size: int = 128, seed: int = 0) -> float:
    """Share of SIDs sampled without the trie (``n`` per user, seeded per user) that map to no item.

    Free beam search keeps only the policy's likeliest sequences, which are nearly always valid on a small catalog
    (0.00% on ML-100K); sampling at T = 1 draws from the whole distribution, so it shows the probability mass a
    policy puts outside the catalog, and how alignment moves it.
    """
    bad = total = 0
    for s in range(0, es.targets.size, batch_size):
        ids, mask = build_prompts(es.history[s: s + batch_size], catalog, es.users[s: s + batch_size])
        seeds = torch.arange(ids.shape[0]) + seed * 1_000_003 + s
        res = engine.generate(GenerationRequest(ids, mask, n=n, mode="sample", constrained=False,
                                                temperature=temperature, seeds=seeds))
        bad += int((res.items < 0).sum())
        total += res.items.numel()
    return bad / max(1, total)


def hallucination_rate(engine: RolloutEngine, catalog: SidCatalog, es: EvalSet, beams: int,
                       batch_size: int = 128) -> float:
    """Share of SIDs from free (unconstrained) beam search that map to no item."""
    items, scores = rank_with_engine(engine, catalog, es, beams, exclude_history=False, batch_size=batch_size,
                                     constrained=False)
    live = np.isfinite(scores)
    return float((items[live] < 0).mean()) if live.any() else 0.0
