"""Head/tail splits of a catalog by interaction counts (one definition for tokenizers, protocols and reports)."""

from __future__ import annotations

import numpy as np


def head_mask(popularity: np.ndarray, share: float) -> np.ndarray:
    """(n,) True for the ``share`` most interacted of the items with ≥ 1 interaction (at least one item; ties broken
    by index). Items never interacted with are never head: in a 100k catalog where most items have no
    interactions, "the top 20% of the catalog" would otherwise swallow every interacted item and leave no tail."""
    pop = np.asarray(popularity, np.float64)
    n = pop.shape[0]
    active = int((pop > 0).sum())
    k = min(n, max(1, int(round(share * (active if active else n)))))
    order = np.lexsort((np.arange(n), -pop))
    mask = np.zeros(n, bool)
    mask[order[:k]] = True
    return mask
