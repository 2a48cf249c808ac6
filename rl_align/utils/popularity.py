"""Head/tail splits of a catalog by interaction counts (one definition for tokenizers, protocols and reports)."""

from __future__ import annotations

import numpy as np


def head_mask(popularity: np.ndarray, share: float) -> np.ndarray:
    """(n,) True for the ``share`` most interacted items (at least one; ties broken by index)."""
    n = popularity.shape[0]
    k = min(n, max(1, int(round(share * n))))
    order = np.lexsort((np.arange(n), -np.asarray(popularity, np.float64)))
    mask = np.zeros(n, bool)
    mask[order[:k]] = True
    return mask
