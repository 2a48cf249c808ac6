"""Which training examples (and serving prompts) become alignment prompts, and what each prompt's user does next
(pure numpy).

Shared by the RL controller and the preference-pair builder. ``split`` is a run's ``data/split.npz``.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from rl_align.data.split import items_before


def recent_examples(users: np.ndarray, positions: np.ndarray, k: Optional[int]) -> np.ndarray:
    """Rows of each user's ``k`` most recent training examples (all rows when ``k`` is None), sorted.

    Args:
        users: (n,) user of each training example. positions: (n,) its position in the user's sequence.
    """
    if k is None:
        return np.arange(users.size)
    order = np.lexsort((-positions, users))               # per user, most recent first
    first = np.r_[True, users[order][1:] != users[order][:-1]]
    start = np.maximum.accumulate(np.where(first, np.arange(order.size), 0))
    return np.sort(order[np.arange(order.size) - start < k])


def future_events(split: dict, rows: np.ndarray, window: int) -> np.ndarray:
    """(n, window) the next ``window`` training events of each prompt row, its ground truth first, -1 padded.

    Only training events count: the sequence is cut at the user's validation event, so
    nothing held out for validation or test reaches a reward.
    """
    seq, off = split["seq_items"], split["seq_offsets"]
    end = np.diff(off).astype(np.int64)                   # per user: first held-out position (default: the end)
    end[split["valid_users"]] = split["valid_positions"]
    users, pos = split["train_users"][rows], split["train_positions"][rows]
    at = pos[:, None] + np.arange(window)[None, :]        # (n, window) positions in the user's sequence
    ok = at < end[users][:, None]
    return np.where(ok, seq[np.where(ok, off[users][:, None] + at, 0)], -1).astype(np.int64)


def seen_before(split: dict, rows: np.ndarray) -> np.ndarray:
    """(n, S) every item of the user's sequence before each prompt row's target, -1 padded (the items a
    ranking at that point would exclude: :attr:`RlConfig.exclude_seen`)."""

    return items_before(split["seq_items"], split["seq_offsets"], split["train_users"][rows],
                        split["train_positions"][rows])


def serving_prompts(split: dict, part: str = "valid") -> dict[str, np.ndarray]:
    """Each user's serving prompt, no ground truth: the history a ``part`` ranking starts from ('valid': every
    training event; 'test': those and the valid event).

    Returns:
        dict with ``users`` (n,) int64, ``history`` (n, H) int64 (-1 padded, the split's ``<part>_history``) and
        ``seen`` (n, S) int64 every item before the prompt, -1 padded. The ``part`` target is never in them.
    """
    if part not in ("valid", "test"):
        raise ValueError(f"part must be 'valid' or 'test', got {part!r}")
    users, pos = split[f"{part}_users"].astype(np.int64), split[f"{part}_positions"]
    return {"users": users, "history": split[f"{part}_history"].astype(np.int64),
            "seen": items_before(split["seq_items"], split["seq_offsets"], users, pos)}


def pad_cat(a: np.ndarray, b: np.ndarray, fill: int = -1) -> np.ndarray:
    """Rows of ``a`` then ``b`` (both (n, ·)), right-padded with ``fill`` to the wider of the two."""
    w = max(a.shape[1], b.shape[1])
    pa = np.pad(a, ((0, 0), (0, w - a.shape[1])), constant_values=fill)
    pb = np.pad(b, ((0, 0), (0, w - b.shape[1])), constant_values=fill)
    return np.concatenate([pa, pb]).astype(a.dtype)
