"""Item indexes for the dual tower, all on faiss, all inner-product (vectors are unit norm: cosine).

- ``exact``: ``IndexFlatIP`` over item-view vectors; n_items distance computations per query.
- ``ivfpq``: faiss's standard ``IVF{nlist},PQ{m}`` (or ``IVF{nlist},Flat`` with ``m=None``: exact scores in the probed lists) (factory string), coarse k-means *and* residual PQ on the
  item-view vectors; queries route with their own vectors against item-view centroids.
- ``dual_view`` (SCI's consistent index): the coarse level is k-means on the *query-view* item vectors
  f_q([i]) — the space queries live in — and each item is routed there; the fine level is PQ on the item-view
  residual f_i([i]) − c_l, c_l the mean item-view vector of list l. A query is routed with its query vector
  against the query-view centroids (the same routing as the items got), then scored by faiss's IVFPQ scanner
  (ADC) in the item view: score = q·c_l + q·PQ(residual).

``search`` returns scores, ids and the distance computations per query (coarse centroids + codes scanned), the
budget the issue compares indexes at.
"""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
from faiss.contrib.ivf_tools import add_preassigned, search_preassigned

from rl_align.utils.io import atomic_path, load_npz, read_json, write_json, write_npz


def _f32(x: np.ndarray, d: int | None, what: str) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"{what}: expected a 2-d (n, d) array, got shape {x.shape}")
    if d is not None and x.shape[1] != d:
        raise ValueError(f"{what}: dimension {x.shape[1]} does not match the index dimension {d}")
    return x


class ItemIndex:
    """Common checks; subclasses fill ``kind``, ``d``, ``ntotal`` and ``_search``."""

    kind = ""
    nlist = 0

    def search(self, q: np.ndarray, k: int, nprobe: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Top-``k`` items of (N, d) queries.

        Returns:
            scores (N, k) float32, ids (N, k) int64 (-1 = none), distance computations (N,) int64.
        """
        if self.ntotal == 0:
            raise ValueError(f"{self.kind} index is empty: build it from at least one item before searching")
        q = _f32(q, self.d, "query vectors")
        if self.nlist and not 1 <= nprobe <= self.nlist:
            raise ValueError(f"nprobe must lie in [1, nlist={self.nlist}], got {nprobe}")
        if k < 1:
            raise ValueError(f"k must be ≥ 1, got {k}")
        return self._search(q, k, nprobe)


class ExactIndex(ItemIndex):
    kind = "exact"

    def __init__(self, item_view: np.ndarray) -> None:
        x = _f32(item_view, None, "item vectors")
        self.d, self.ntotal = x.shape[1], x.shape[0]
        self.index = faiss.IndexFlatIP(self.d)
        self.index.add(x)

    def _search(self, q, k, nprobe):
        s, i = self.index.search(q, k)
        return s, i, np.full(q.shape[0], self.ntotal, np.int64)


class _IvfBase(ItemIndex):
    """An ``IndexIVFPQ`` plus a routing index over ``route`` centroids (item-view ones for plain IVF-PQ)."""

    def _scanned(self, lists: np.ndarray) -> np.ndarray:
        sizes = np.array([self.ivf.invlists.list_size(int(li)) for li in range(self.nlist)], np.int64)
        return self.nlist + np.where(lists >= 0, sizes[np.clip(lists, 0, None)], 0).sum(1)

    def _search(self, q, k, nprobe):
        _, lists = self.route.search(q, nprobe)
        self.ivf.nprobe = nprobe
        s, i = search_preassigned(self.ivf, q, k, lists)
        return s, i, self._scanned(lists)

    def save(self, directory: str | Path) -> None:
        """``ivf.faiss`` (faiss's own format, no pickle), ``route.npz`` and ``index.json``."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        with atomic_path(d / "ivf.faiss") as tmp:
            faiss.write_index(self.ivf, str(tmp))
        write_npz(d / "route.npz", centroids=self.route.reconstruct_n(0, self.nlist))
        write_json(d / "index.json", {"kind": self.kind, "d": self.d, "nlist": self.nlist, "ntotal": self.ntotal})


def _ivf(centroids: np.ndarray, m: int | None, nbits: int) -> faiss.IndexIVF:
    """IVF over given centroids: PQ residual codes (``m`` sub-quantizers) or, ``m=None``, full vectors (exact)."""
    quant = faiss.IndexFlatIP(centroids.shape[1])
    quant.add(centroids)
    d, nlist, ip = centroids.shape[1], centroids.shape[0], faiss.METRIC_INNER_PRODUCT
    ivf = faiss.IndexIVFFlat(quant, d, nlist, ip) if m is None else faiss.IndexIVFPQ(quant, d, nlist, m, nbits, ip)
    ivf.own_fields = True
    quant.this.disown()
    return ivf


def _check_build(n: int, d: int, nlist: int, m: int | None, nbits: int) -> None:
    if n == 0:
        raise ValueError("cannot build an index from 0 items")
    if not 1 <= nlist <= n:
        raise ValueError(f"nlist must lie in [1, n_items={n}], got {nlist}")
    if m is None:
        return
    if m < 1 or d % m:
        raise ValueError(f"pq m={m} must divide the vector dimension {d}")
    if n < 2 ** nbits:
        raise ValueError(f"PQ with {nbits} bits needs ≥ {2 ** nbits} training items, got {n}")


class IvfPqIndex(_IvfBase):
    """faiss's standard IVF-PQ (``index_factory(d, "IVF{nlist},PQ{m}x{nbits}", IP)``) on item-view vectors."""

    kind = "ivfpq"

    def __init__(self, item_view: np.ndarray, nlist: int, m: int | None = 16, nbits: int = 8, seed: int = 0,
                 train_sample: int | None = None) -> None:
        x = _f32(item_view, None, "item vectors")
        n, self.d = x.shape
        _check_build(n, self.d, nlist, m, nbits)
        self.nlist, self.ntotal = nlist, n
        fine = "Flat" if m is None else f"PQ{m}x{nbits}"
        self.ivf = faiss.index_factory(self.d, f"IVF{nlist},{fine}", faiss.METRIC_INNER_PRODUCT)
        self.ivf.cp.seed = seed
        rng = np.random.default_rng(seed)
        train = x if train_sample is None or train_sample >= n else x[rng.choice(n, train_sample, replace=False)]
        self.ivf.train(train)
        self.ivf.add(x)
        self.route = self.ivf.quantizer  # item-view centroids route the query


class DualViewIndex(_IvfBase):
    """SCI's consistent dual-view index: coarse lists from query-view item vectors, PQ residuals in the item view."""

    kind = "dual_view"

    def __init__(self, query_view: np.ndarray, item_view: np.ndarray, nlist: int, m: int | None = 16, nbits: int = 8,
                 seed: int = 0, train_sample: int | None = None, niter: int = 20) -> None:
        qv = _f32(query_view, None, "query-view item vectors")
        iv = _f32(item_view, qv.shape[1], "item-view item vectors")
        if iv.shape[0] != qv.shape[0]:
            raise ValueError(f"{qv.shape[0]} query-view vs {iv.shape[0]} item-view vectors: one of each per item")
        n, self.d = iv.shape
        _check_build(n, self.d, nlist, m, nbits)
        self.nlist, self.ntotal = nlist, n
        km = faiss.Kmeans(self.d, nlist, niter=niter, seed=seed, spherical=True,
                          max_points_per_centroid=(train_sample or 256 * nlist) // nlist)
        km.train(qv)
        self.route = faiss.IndexFlatIP(self.d)
        self.route.add(km.centroids)
        _, assign = self.route.search(qv, 1)
        assign = assign[:, 0].astype(np.int64)
        counts = np.bincount(assign, minlength=nlist).astype(np.float32)
        cent = np.zeros((nlist, self.d), np.float32)
        np.add.at(cent, assign, iv)
        cent /= np.maximum(counts, 1)[:, None]  # item-view centre of each list (0 for an empty list)
        self.ivf = _ivf(cent, m, nbits)
        if m is not None:
            resid = iv - cent[assign]
            rng = np.random.default_rng(seed)
            pick = train_sample is not None and train_sample < n
            self.ivf.pq.train(resid[rng.choice(n, train_sample, replace=False)] if pick else resid)
        self.ivf.is_trained = True
        add_preassigned(self.ivf, iv, assign)


def load_index(directory: str | Path) -> ItemIndex:
    """An IVF index written by ``save`` (faiss format + NPZ + JSON; no pickle)."""
    d = Path(directory)
    meta = read_json(d / "index.json")
    cls = {"ivfpq": IvfPqIndex, "dual_view": DualViewIndex}.get(meta.get("kind"))
    if cls is None:
        raise ValueError(f"{d / 'index.json'}: kind must be 'ivfpq' or 'dual_view', got {meta.get('kind')!r}")
    obj = cls.__new__(cls)
    obj.d, obj.nlist, obj.ntotal = meta["d"], meta["nlist"], meta["ntotal"]
    obj.ivf = faiss.read_index(str(d / "ivf.faiss"))
    obj.route = faiss.IndexFlatIP(obj.d)
    obj.route.add(np.ascontiguousarray(load_npz(d / "route.npz")["centroids"], np.float32))
    return obj
