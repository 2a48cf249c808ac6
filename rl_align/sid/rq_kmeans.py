"""RQ-KMeans: level-wise k-means on residuals (faiss does the k-means and the assignment)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import faiss
import numpy as np

from rl_align.config import SidConfig
from rl_align.sid.base import TOKENIZERS, SidTokenizer
from rl_align.sid.codes import SidCodes
from rl_align.sid.faiss_device import flat_index
from rl_align.utils.io import load_npz, write_npz


def assign(x: np.ndarray, centroids: np.ndarray, k: int = 1, gpu: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Nearest ``k`` centroids of each row (exact L2, faiss flat index; on the GPU(s) when ``gpu``).

    Args:
        x: (n, d) float32. centroids: (K, d) float32.

    Returns:
        dist (n, k) float32 squared L2, idx (n, k) int64.
    """
    index = flat_index(centroids.shape[1], gpu)
    index.add(np.ascontiguousarray(centroids, np.float32))
    return index.search(np.ascontiguousarray(x, np.float32), k)


def nearest_at_levels(r: np.ndarray, level: np.ndarray, books: np.ndarray, topn: int) -> tuple[np.ndarray, np.ndarray]:
    """Nearest ``topn`` codes of each residual row in the codebook of its own level.

    Args:
        r: (n, d) residuals. level: (n,) int level of each row. books: (L, K, d).
    Returns:
        cand (n, topn) int64, dist (n, topn) float32 squared L2 (topn ≤ K).
    """
    cand = np.empty((r.shape[0], topn), np.int64)
    dist = np.empty((r.shape[0], topn), np.float32)
    for lvl in np.unique(level):
        sel = level == lvl
        dd, ii = assign(r[sel], books[lvl], min(topn, books.shape[1]))
        cand[sel], dist[sel] = ii, dd
    return cand, dist


def kmeans(x: np.ndarray, k: int, niter: int, seed: int, max_points_per_centroid: int, redo: int = 1,
           gpu: bool = False) -> np.ndarray:
    """faiss k-means → (k, d) float32 centroids (k is capped at the number of points).

    ``redo`` > 1 runs k-means that many times from different random starts and keeps the
    lowest-inertia centroids (faiss ``nredo``). On small residuals a single run can collapse:
    one centroid takes nearly every point and the level's codes carry no information.
    """
    if redo < 1:
        raise ValueError(f"sid.kmeans_redo must be ≥ 1, got {redo}")
    k = min(k, x.shape[0])
    km = faiss.Kmeans(x.shape[1], k, niter=niter, seed=seed, max_points_per_centroid=max_points_per_centroid,
                      min_points_per_centroid=1, nredo=redo,
                      verbose=False, spherical=False, gpu=gpu)
    km.train(np.ascontiguousarray(x, np.float32))
    return np.asarray(km.centroids, np.float32)


@TOKENIZERS.register("rq_kmeans")
class RQKMeans(SidTokenizer):
    """L levels × K codes; level l clusters the residual left after levels < l.

    Codebooks: (L, K, d) float32.
    """


    def __init__(self, cfg: SidConfig) -> None:
        super().__init__(cfg)
        self.codebooks: Optional[np.ndarray] = None

    @property
    def codebook_sizes(self) -> list[int]:
        return [self.cfg.codebook_size] * self.cfg.levels

    def _prep(self, emb: np.ndarray, copy: bool = True) -> np.ndarray:
        x = np.array(emb, dtype=np.float32, copy=copy)
        if self.cfg.normalize_residuals:
            x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        return x

    def fit(self, emb: np.ndarray, popularity: Optional[np.ndarray] = None) -> "RQKMeans":
        """Level by level: k-means on the residuals of a fixed subsample of K × max_points_per_centroid items.

        faiss k-means would subsample to that size anyway; taking the sample up front
        means the full (n, d) residual matrix is never materialised.
        """
        cfg = self.cfg
        n, d = emb.shape
        m = min(n, cfg.codebook_size * cfg.max_points_per_centroid)
        rng = np.random.default_rng(cfg.seed)
        sample = np.sort(rng.choice(n, m, replace=False)) if m < n else np.arange(n)
        r = self._prep(emb[sample])
        books = np.zeros((cfg.levels, cfg.codebook_size, d), np.float32)
        for lvl in range(cfg.levels):
            c = kmeans(r, cfg.codebook_size, cfg.kmeans_iters, cfg.seed + lvl, cfg.max_points_per_centroid,
                       cfg.kmeans_redo, gpu=self.gpu)
            books[lvl, : c.shape[0]] = c
            if c.shape[0] < cfg.codebook_size:  # fewer points than codes: park unused codes far away
                books[lvl, c.shape[0]:] = 1e6
            _, idx = assign(r, books[lvl], gpu=self.gpu)
            r -= books[lvl][idx[:, 0]]
        self.codebooks = books
        return self

    def _check(self) -> np.ndarray:
        if self.codebooks is None:
            raise RuntimeError("rq_kmeans: call fit() before encode()")
        return self.codebooks

    @staticmethod
    def assign_levels(r: np.ndarray, books: np.ndarray, gpu: bool = False) -> np.ndarray:
        """(n, L) greedy residual codes of prepared residuals ``r`` (updated in place) under ``books`` (L, K, d)."""
        codes = np.empty((r.shape[0], books.shape[0]), np.int32)
        for lvl in range(books.shape[0]):
            _, idx = assign(r, books[lvl], gpu=gpu)
            codes[:, lvl] = idx[:, 0]
            r -= books[lvl][idx[:, 0]]
        return codes

    def encode(self, emb: np.ndarray, chunk: int = 65536) -> SidCodes:
        """Greedy residual assignment, in chunks of ``chunk`` rows (memory O(chunk × d))."""
        books = self._check()
        codes = np.empty((emb.shape[0], books.shape[0]), np.int32)
        for s in range(0, emb.shape[0], chunk):
            codes[s: s + chunk] = self.assign_levels(self._prep(emb[s: s + chunk]), books, self.gpu)
        return SidCodes.fixed(codes, self.codebook_sizes)

    def residual_at(self, emb: np.ndarray, codes: SidCodes, level: np.ndarray) -> np.ndarray:
        """(n, d) residual of each item before quantising at ``level[i]`` (per item)."""
        books = self._check()
        r = self._prep(emb)
        for lvl in range(books.shape[0]):
            sel = level > lvl
            if sel.any():
                r[sel] -= books[lvl][codes.codes[sel, lvl]]
        return r

    def last_level_candidates(self, emb: np.ndarray, codes: SidCodes, topn: int) -> tuple[np.ndarray, np.ndarray]:
        books = self._check()
        last = codes.lengths.astype(np.int64) - 1
        r = self.residual_at(emb, codes, last)
        return nearest_at_levels(r, last, books, topn)

    def reconstruct(self, codes: SidCodes) -> np.ndarray:
        """(n, d) sum of the codewords of each item's code."""
        books = self._check()
        out = np.zeros((codes.n, books.shape[2]), np.float32)
        for lvl in range(codes.max_len):
            sel = codes.lengths > lvl
            if lvl < books.shape[0]:
                out[sel] += books[lvl][codes.codes[sel, lvl]]
        return out

    def _save_state(self, directory: Path) -> None:
        write_npz(directory / "codebooks.npz", codebooks=self._check())

    def _load_state(self, directory: Path) -> None:
        self.codebooks = load_npz(directory / "codebooks.npz")["codebooks"].astype(np.float32)
