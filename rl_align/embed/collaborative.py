"""Collaborative item vectors from the training interactions (pure numpy/torch).

Text vectors place *Toy Story* next to *Toy Story 2*; co-consumption places it
next to what the same users watched. Semantic IDs built on text alone make the
policy's first code a genre-ish guess that says little about what a user will
watch next (LETTER, LC-Rec and ColaRec add this collaborative signal to the
tokenizer for that reason). ``cf_vectors`` factorises the item × user matrix of
**training** interactions only — each user's items before the validation item,
so no held-out event reaches the tokenizer — with the symmetric normalisation
of spectral collaborative filtering:

    Â = D_i^{-1/2} X D_u^{-1/2},   X ∈ {0,1}^{items × users}
    Â ≈ U S Vᵀ (rank k, randomised SVD) → item vectors U·S, L2-normalised

Items without a training interaction (cold items) get the zero vector from
``cf_vectors``; ``fill_from_neighbours`` then gives each of them the mean
collaborative vector of its k nearest items by text, so a cold item lands where
the items it reads like are consumed. ``blend`` joins both views into one vector.
"""

from __future__ import annotations

import numpy as np
import torch


def cf_vectors(items: np.ndarray, users: np.ndarray, n_items: int, n_users: int, dim: int, seed: int = 0) -> np.ndarray:
    """Rank-``dim`` spectral item factors of the (items × users) interaction matrix.

    Args:
        items, users: (m,) index pairs, one per interaction (repeats count once).
        dim: factor dimension (capped at min(n_items, n_users) − 1).

    Returns:
        (n_items, dim) float32, unit rows; all-zero rows for items with no interaction.
    """
    if dim < 1:
        raise ValueError(f"embed.cf_dim must be ≥ 1, got {dim}")
    if items.size == 0:
        raise ValueError("collaborative item vectors: there are no training interactions")
    pairs = np.unique(items * n_users + users)
    i, u = pairs // n_users, pairs % n_users
    di = np.bincount(i, minlength=n_items).astype(np.float64)
    du = np.bincount(u, minlength=n_users).astype(np.float64)
    val = 1.0 / np.sqrt(di[i] * du[u])
    a = torch.sparse_coo_tensor(torch.from_numpy(np.stack([i, u])), torch.from_numpy(val), (n_items, n_users),
                                check_invariants=True)
    k = max(1, min(dim, n_items - 1, n_users - 1))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        U, S, _ = torch.svd_lowrank(a.coalesce(), q=k, niter=6)
    v = (U * S).numpy()
    v = np.pad(v, ((0, 0), (0, dim - k))) if k < dim else v
    norm = np.linalg.norm(v, axis=1, keepdims=True)
    return np.where(norm > 1e-12, v / np.maximum(norm, 1e-12), 0.0).astype(np.float32)


def fill_from_neighbours(text: np.ndarray, cf: np.ndarray, k: int) -> tuple[np.ndarray, int]:
    """Collaborative vectors for items that have none, from their ``k`` nearest text neighbours that do.

    Args:
        text: (n, d_t) text vectors. cf: (n, d_c) collaborative vectors, all-zero rows = no interactions.
        k: neighbours to average (0 = leave the zero rows as they are).

    Returns:
        (n, d_c) float32 with the zero rows filled (unit norm), and how many rows were filled.
    """
    import faiss

    if k < 0:
        raise ValueError(f"embed.cf_fill_neighbours must be ≥ 0, got {k}")
    missing = ~np.any(cf != 0, axis=1)
    if k == 0 or not missing.any() or missing.all():
        return cf, 0
    t = np.ascontiguousarray(text / np.maximum(np.linalg.norm(text, axis=1, keepdims=True), 1e-12), np.float32)
    have = np.flatnonzero(~missing)
    index = faiss.IndexFlatIP(t.shape[1])
    index.add(t[have])
    _, nn = index.search(t[missing], min(k, have.size))
    fill = cf[have[nn]].mean(axis=1)
    fill /= np.maximum(np.linalg.norm(fill, axis=1, keepdims=True), 1e-12)
    out = cf.copy()
    out[missing] = fill
    return out.astype(np.float32), int(missing.sum())


def blend(text: np.ndarray, cf: np.ndarray, weight: float) -> np.ndarray:
    """[√(1−w)·text, √w·cf] with each view L2-normalised first: cosine = (1−w)·cos_text + w·cos_cf.

    Args:
        text: (n, d_t) vectors. cf: (n, d_c) vectors (zero rows allowed). weight: w ∈ [0, 1].

    Returns:
        (n, d_t + d_c) float32.
    """
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"embed.cf_weight must be in [0, 1], got {weight}")
    if text.shape[0] != cf.shape[0]:
        raise ValueError(f"text vectors have {text.shape[0]} rows, collaborative vectors {cf.shape[0]}")
    t = text / np.maximum(np.linalg.norm(text, axis=1, keepdims=True), 1e-12)
    return np.concatenate([np.sqrt(1.0 - weight) * t, np.sqrt(weight) * cf], axis=1).astype(np.float32)
