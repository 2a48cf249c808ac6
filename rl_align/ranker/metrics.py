"""Ranking-quality metrics of a CTR model: AUC and GAUC (numpy, tie-aware)."""

from __future__ import annotations

import numpy as np


def _midranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x`` with ties given their average rank."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    _, first, counts = np.unique(xs, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks = np.empty(x.size, np.float64)
    ranks[order] = np.repeat(avg, counts)
    return ranks


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC (Mann–Whitney U with tie correction); NaN when only one class is present.

    Args:
        scores: (N,) float.
        labels: (N,) bool / {0, 1}.
    """
    scores = np.asarray(scores, np.float64).ravel()
    labels = np.asarray(labels).astype(bool).ravel()
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    r = _midranks(scores)
    return float((r[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def gauc(scores: np.ndarray, labels: np.ndarray, groups: np.ndarray) -> tuple[float, int]:
    """Group AUC: per-group AUC weighted by the group's size, over groups holding both classes.

    Args:
        scores, labels, groups: (N,) arrays; ``groups`` is e.g. the user id of each impression.
    Returns:
        (gauc, number of groups that counted).
    """
    scores = np.asarray(scores, np.float64).ravel()
    labels = np.asarray(labels).astype(bool).ravel()
    groups = np.asarray(groups).ravel()
    order = np.argsort(groups, kind="mergesort")
    g = groups[order]
    cuts = np.flatnonzero(np.diff(g)) + 1
    num = den = 0.0
    used = 0
    for idx in np.split(order, cuts):
        lab = labels[idx]
        if lab.all() or not lab.any():
            continue
        num += auc(scores[idx], lab) * idx.size
        den += idx.size
        used += 1
    return (num / den if den else float("nan")), used
