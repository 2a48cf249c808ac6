"""Synthetic catalog for scale tests: Zipf popularity, clustered embeddings, sequential users.

Everything is vectorised and generated in chunks, so 1M items × 384-d (1.5 GB
float32) and millions of interactions take seconds, not minutes.
"""

from __future__ import annotations

import numpy as np

from rl_align.config import SyntheticConfig
from rl_align.data.dataset import InteractionData


def synthetic_embeddings(n_items: int, dim: int, n_clusters: int, noise: float, seed: int,
                         chunk: int = 200_000) -> tuple[np.ndarray, np.ndarray]:
    """Clustered unit vectors.

    Returns:
        emb: (n_items, dim) float32, L2-normalised.
        cluster: (n_items,) int64 cluster of each item.
    """
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((n_clusters, dim)).astype(np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    cluster = rng.integers(0, n_clusters, size=n_items)
    emb = np.empty((n_items, dim), np.float32)
    scale = noise / np.sqrt(dim)
    for s in range(0, n_items, chunk):
        e = min(n_items, s + chunk)
        block = centers[cluster[s:e]] + rng.standard_normal((e - s, dim), dtype=np.float32) * scale
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        emb[s:e] = block
    return emb, cluster.astype(np.int64)


def generate_synthetic(cfg: SyntheticConfig) -> InteractionData:
    """Generate a catalog and user sequences from ``cfg``.

    Users walk the catalog: the first item is drawn by global popularity; each
    next item stays in the previous item's cluster with probability
    ``cfg.stay_prob`` (drawn by popularity within it), else is drawn globally.
    """
    if cfg.n_items < 2 or cfg.n_users < 1:
        raise ValueError(f"synthetic: need n_items >= 2 and n_users >= 1, got {cfg.n_items}, {cfg.n_users}")
    rng = np.random.default_rng(cfg.seed + 1)
    emb, cluster = synthetic_embeddings(cfg.n_items, cfg.dim, cfg.n_clusters, cfg.cluster_noise, cfg.seed)
    # Zipf popularity over a random permutation of ranks.
    ranks = rng.permutation(cfg.n_items) + 1
    weight = ranks.astype(np.float64) ** (-cfg.zipf_a)
    # Items ordered by cluster; one global cumulative weight; each cluster is a segment.
    order = np.argsort(cluster, kind="stable")
    cum = np.cumsum(weight[order])
    seg_end = np.searchsorted(cluster[order], np.arange(cfg.n_clusters), side="right")
    seg_start = np.concatenate([[0], seg_end[:-1]])
    lo = np.where(seg_start > 0, cum[np.maximum(seg_start - 1, 0)], 0.0)
    hi = np.where(seg_end > 0, cum[np.maximum(seg_end - 1, 0)], 0.0)

    lengths = np.maximum(5, rng.geometric(1.0 / max(cfg.mean_seq_len - 4, 1.0), size=cfg.n_users) + 4)
    lengths = np.minimum(lengths, 10 * int(cfg.mean_seq_len) + 5)
    max_len = int(lengths.max())
    seq = np.empty((cfg.n_users, max_len), np.int64)
    u = rng.random(cfg.n_users) * cum[-1]
    seq[:, 0] = order[np.minimum(np.searchsorted(cum, u, side="right"), cfg.n_items - 1)]
    for t in range(1, max_len):
        prev_c = cluster[seq[:, t - 1]]
        stay = rng.random(cfg.n_users) < cfg.stay_prob
        a = np.where(stay, lo[prev_c], 0.0)
        b = np.where(stay, hi[prev_c], cum[-1])
        draw = a + rng.random(cfg.n_users) * (b - a)
        seq[:, t] = order[np.minimum(np.searchsorted(cum, draw, side="right"), cfg.n_items - 1)]
    mask = np.arange(max_len)[None, :] < lengths[:, None]
    users = np.broadcast_to(np.arange(cfg.n_users)[:, None], seq.shape)[mask]
    items = seq[mask]
    gaps = rng.integers(1, 3600, size=seq.shape).cumsum(axis=1) + rng.integers(0, 10**8, size=(cfg.n_users, 1))
    ts = gaps[mask].astype(np.float64)
    data = InteractionData(
        name="synthetic",
        user_ids=[str(i) for i in range(cfg.n_users)],
        item_ids=[str(i) for i in range(cfg.n_items)],
        users=users.astype(np.int64),
        items=items,
        timestamps=ts,
        item_text=[f"synthetic item {i} topic {c}" for i, c in enumerate(cluster.tolist())],
        item_features={"cluster": cluster.tolist()},
        item_embeddings=emb,
    )
    data.validate()
    return data
