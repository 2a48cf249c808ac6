"""Merging per-item log-scores from two routes into one ranked list (pure numpy; no policy or catalog)."""

from __future__ import annotations

from typing import Optional

import numpy as np


def merge_and_rank(score: dict[int, float], extra: dict[int, float], banned: Optional[np.ndarray], k: int,
                   tie: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray]:
    """One ranked list from two mixture components of log-probabilities.

    ``score`` is item → log-score of the first component (modified in place), ``extra`` item → log-score of the
    second: an item in both gets their log-sum-exp. Items of ``banned`` (1-D, -1 padded) are dropped. Order: score
    descending, then ``tie`` descending (a function of the candidate array, e.g. content similarity; None: item
    index ascending).

    Returns:
        items (m,) int64 and their scores (m,) float64, m ≤ k.
    """
    for it, v in extra.items():
        score[it] = float(np.logaddexp(score[it], v)) if it in score else v
    if banned is not None:
        for it in banned[banned >= 0].tolist():
            score.pop(int(it), None)
    cand = np.fromiter(score.keys(), np.int64, len(score))
    val = np.fromiter(score.values(), np.float64, len(score))
    order = np.lexsort((-(tie(cand) if tie is not None else -cand.astype(float)), -val))[:k]
    return cand[order], val[order]
