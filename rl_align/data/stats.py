"""Dataset statistics (``rl-align data stats``)."""

from __future__ import annotations

import numpy as np

from rl_align.data.dataset import InteractionData


def dataset_stats(data: InteractionData, split=None) -> dict:
    """Counts, density, sequence-length and popularity summaries, and timestamp ties."""
    pop = data.item_popularity()
    lens = np.bincount(data.users, minlength=data.n_users)
    sorted_pop = np.sort(pop)[::-1]
    top20 = max(1, int(round(0.2 * data.n_items)))
    out = {
        "name": data.name,
        "users": data.n_users,
        "items": data.n_items,
        "interactions": data.n_interactions,
        "density": data.n_interactions / max(1, data.n_users * data.n_items),
        "seq_len_mean": float(lens.mean()) if lens.size else 0.0,
        "seq_len_median": float(np.median(lens)) if lens.size else 0.0,
        "seq_len_min": int(lens.min()) if lens.size else 0,
        "seq_len_max": int(lens.max()) if lens.size else 0,
        "items_without_interactions": int((pop == 0).sum()),
        "top20pct_items_share": float(sorted_pop[:top20].sum() / max(1, sorted_pop.sum())),
        "pop_gini": _gini(pop),
        "users_tied_at_last_timestamp": last_timestamp_ties(data),
    }
    if split is not None:
        out.update({"train_examples": len(split.train), "valid_examples": len(split.valid),
                    "test_examples": len(split.test), "max_history": split.max_history})
    return out


def last_timestamp_ties(data: InteractionData) -> int:
    """Users whose last two interactions share a timestamp (the order then comes from the file)."""
    order = np.lexsort((np.arange(data.n_interactions), data.timestamps, data.users))
    u, t = data.users[order], data.timestamps[order]
    last = np.r_[u[1:] != u[:-1], True]
    idx = np.flatnonzero(last)
    idx = idx[idx >= 1]
    same_user = u[idx - 1] == u[idx]
    return int(((t[idx - 1] == t[idx]) & same_user).sum())


def _gini(x: np.ndarray) -> float:
    if x.size == 0 or x.sum() == 0:
        return 0.0
    s = np.sort(x.astype(np.float64))
    n = s.size
    return float((2 * np.arange(1, n + 1) - n - 1).dot(s) / (n * s.sum()))
