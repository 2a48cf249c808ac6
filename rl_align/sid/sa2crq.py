"""SA²CRQ: adaptive-length residual quantisation (SARQ) with an anchored curriculum for tail items (ACRQ).

*SARQ.* Codes are built level by level as in RQ-KMeans, but an item's code stops growing once its path is
rare: at level l ≥ N (``start_level``) the item stops when the mass under its prefix,
``P(c_1..c_l) = exp(-I(c_1..c_l))`` with ``I = -log P(c_1) - Σ log P(c_i | c_<i)``, is ≤ τ (``tau``); the mass
is the share of (head) items under the prefix — the paper's rule as reported — or, with ``mass:
popularity``, their share of interactions. Head items live under heavy prefixes and get long,
discriminative codes; tail items stop early with short, generalisable ones. Every code ends with the
catalog's end token, so lengths may differ.

*ACRQ.* Stage 1 fits the codebooks and the prefix masses on **head** items only (the ``head_share`` most
interacted items). Stage 2 freezes them and, level by level, learns ``tail_codebook_size`` (default K/4) *new* codewords on
the tail items' residuals; each level's codebook is then hybrid (frozen head codes first, new codes after).
Stop decisions for every item — tail and cold-start included — use the head priors: a prefix the head never
used has mass 0 and stops at N. With ``priors: hybrid`` the priors are recounted after stage 2 on the head items'
codes in the hybrid codebooks (where ``head_codes: hybrid`` puts them), so a head item pulled onto a tail codeword
keeps its mass there.

Shapes: ``codebooks`` (L, K_total, d) float32 with K_total = K (+ K_tail with the curriculum); prefix tables per
level l: ``keys`` (m_l,) int64 mixed-radix prefix ids (sorted) and ``mass`` (m_l,) float64.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import numpy as np

from rl_align.config import SidConfig
from rl_align.sid.base import TOKENIZERS
from rl_align.sid.codes import NO_CODE, SidCodes
from rl_align.sid.rq_kmeans import RQKMeans, assign, kmeans
from rl_align.utils.io import load_npz, write_npz
from rl_align.utils.popularity import head_mask


def prefix_keys(codes: np.ndarray, depth: int, radix: int) -> np.ndarray:
    """(n,) int64 id of each row's first ``depth`` codes (mixed radix ``radix``)."""
    if radix ** depth >= 2 ** 62:
        raise ValueError(f"sa2crq: {depth} levels × {radix} codes do not fit a 62-bit prefix id")
    key = np.zeros(codes.shape[0], np.int64)
    for j in range(depth):
        key = key * radix + codes[:, j].astype(np.int64)
    return key


def prefix_mass_tables(codes: np.ndarray, weights: np.ndarray, radix: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Popularity mass of every prefix at every depth.

    Args:
        codes: (n, L) full-length codes. weights: (n,) non-negative popularity (normalised here).
    Returns:
        per depth l = 1..L: (sorted prefix ids (m,), mass (m,)) with masses summing to 1 at each depth.
    """
    w = np.asarray(weights, np.float64)
    w = w / w.sum() if w.sum() > 0 else np.full(len(w), 1.0 / max(1, len(w)))
    out = []
    for depth in range(1, codes.shape[1] + 1):
        keys = prefix_keys(codes, depth, radix)
        uniq, inv = np.unique(keys, return_inverse=True)
        out.append((uniq, np.bincount(inv.ravel(), weights=w, minlength=len(uniq))))
    return out


def lookup_mass(table: tuple[np.ndarray, np.ndarray], keys: np.ndarray) -> np.ndarray:
    """(n,) mass of each prefix id in ``table``; 0 for prefixes the table has never seen."""
    uniq, mass = table
    if uniq.size == 0:
        return np.zeros(keys.shape[0])
    pos = np.clip(np.searchsorted(uniq, keys), 0, uniq.size - 1)
    return np.where(uniq[pos] == keys, mass[pos], 0.0)


def tables_to_arrays(tables: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
    """Prefix tables as NPZ arrays ``prefix_keys_<depth>`` / ``prefix_mass_<depth>`` (depth from 1)."""
    out = {}
    for i, (k, m) in enumerate(tables):
        out[f"prefix_keys_{i + 1}"], out[f"prefix_mass_{i + 1}"] = k, m
    return out


def tables_from_arrays(z: dict, levels: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Inverse of :func:`tables_to_arrays` for ``levels`` depths."""
    return [(z[f"prefix_keys_{i}"].astype(np.int64), z[f"prefix_mass_{i}"].astype(np.float64))
            for i in range(1, levels + 1)]


def adaptive_lengths(codes: np.ndarray, tables: list[tuple[np.ndarray, np.ndarray]], tau: float, start_level: int,
                     radix: int, unique: bool = False) -> np.ndarray:
    """SARQ's stop rule: (n,) code length of each item.

    An item stops at the first level l ≥ ``start_level`` whose prefix mass is ≤ ``tau`` (its path's
    self-information reaches -log τ); items that never become rare enough keep all L levels. With
    ``unique``, an item only stops where no other item stopping at that level has the same prefix, so the
    stop rule never creates a collision (items that would collide continue to the next level).

    Args:
        codes: (n, L) full-length codes. tables: :func:`prefix_mass_tables` output (the priors).
    """
    n, L = codes.shape
    lengths = np.full(n, L, np.int32)
    open_ = np.ones(n, bool)
    for depth in range(max(1, start_level), L):
        keys = prefix_keys(codes, depth, radix)
        stop = open_ & (lookup_mass(tables[depth - 1], keys) <= tau)
        if unique and stop.any():
            _, inv, cnt = np.unique(keys[stop], return_inverse=True, return_counts=True)
            idx = np.where(stop)[0]
            stop[idx[cnt[inv.ravel()] > 1]] = False
        lengths[stop] = depth
        open_ &= ~stop
    return lengths


def stopping_codes(r: np.ndarray, books: np.ndarray, tables: list[tuple[np.ndarray, np.ndarray]], tau: float,
                   start_level: int) -> tuple[np.ndarray, np.ndarray]:
    """Greedy residual codes of rows ``r`` (m, d) (updated in place) under ``books`` (L, K, d), where an item leaves
    the search at its stop level.

    Same codes as full greedy assignment cut by :func:`adaptive_lengths` (without ``unique``), but items that
    have stopped are not assigned at deeper levels (most of a catalog stops at N, so deeper levels cost a
    fraction). Prefix ids use radix K = ``books.shape[1]``, as the ``tables`` do.

    Returns:
        codes (m, L) int32 with NO_CODE past each length, lengths (m,) int32.
    """
    m, L, radix = r.shape[0], books.shape[0], books.shape[1]
    codes = np.full((m, L), NO_CODE, np.int32)
    lengths = np.full(m, L, np.int32)
    if radix ** (L - 1) >= 2 ** 62:
        raise ValueError(f"sa2crq: {L - 1} levels × {radix} codes do not fit a 62-bit prefix id")
    alive = np.arange(m)
    key = np.zeros(m, np.int64)
    for lvl in range(L):   # r, key: the rows still alive, compacted whenever some stop
        _, idx = assign(r, books[lvl])
        idx = idx[:, 0]
        codes[alive, lvl] = idx
        depth = lvl + 1
        if depth == L:
            break
        r -= books[lvl][idx]
        key = key * radix + idx
        if depth >= max(1, start_level):
            stop = lookup_mass(tables[depth - 1], key) <= tau
            if stop.any():
                lengths[alive[stop]] = depth
                keep = ~stop
                alive, r, key = alive[keep], r[keep], key[keep]
        if alive.size == 0:
            break
    return codes, lengths


def anchored_kmeans(x: np.ndarray, head: np.ndarray, k: int, niter: int, weight: float,
                    gpu: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Tail codewords anchored to the frozen head codebook of one level.

    Each of the ``k`` codewords starts at one of the head codewords the tail residuals ``x`` use most (its
    anchor a_j) and every Lloyd update is pulled toward it:
    ``c_j = (Σ_{x∈j} x + λ m̄ a_j) / (n_j + λ m̄)`` with λ = ``weight`` and m̄ = m / k the mean cluster size, so a
    tail codeword is a learned residual on top of a head codeword (λ → ∞: the head codeword itself; λ = 0 after
    the first step: plain k-means started at the anchors). An empty cluster returns to its anchor.

    Args:
        x: (m, d) float32 tail residuals at this level. head: (K, d) float32 head codewords (only read).

    Returns:
        codewords (k', d) float32 and the anchor index of each (k',) int64, k' = min(k, m).
    """
    k = min(k, x.shape[0])
    _, idx = assign(x, head, gpu=gpu)
    use = np.bincount(idx[:, 0], minlength=head.shape[0])
    anchors = np.argsort(-use, kind="stable")[:k]
    if anchors.size < k:   # fewer head codewords than tail codewords: repeat the most used ones
        anchors = np.resize(anchors, k)
    a = head[anchors].astype(np.float64)
    c = a.copy()
    pull = weight * x.shape[0] / max(1, k)
    for _ in range(niter):
        _, j = assign(x, c.astype(np.float32), gpu=gpu)
        j = j[:, 0]
        n = np.bincount(j, minlength=k).astype(np.float64)
        sums = np.zeros_like(c)
        np.add.at(sums, j, x)
        c = np.where(n[:, None] + pull > 0, (sums + pull * a) / np.maximum(n[:, None] + pull, 1e-12), a)
    return c.astype(np.float32), anchors.astype(np.int64)


def cut_codes(codes: SidCodes, rows: np.ndarray, length: int) -> SidCodes:
    """``codes`` with the items selected by ``rows`` ((n,) bool) cut to at most ``length`` levels."""
    lengths = np.where(rows, np.minimum(codes.lengths, length), codes.lengths).astype(np.int32)
    out = np.where(np.arange(codes.max_len)[None, :] < lengths[:, None], codes.codes, NO_CODE)
    return SidCodes(out, lengths, codes.codebook_sizes)


class Sa2crqSettings:
    """What both SA²CRQ flavours share: code-book sizes (head K + tail K_tail per level), the config checks, the
    head split and the stop-rule encoding of prepared residuals. Needs ``self.cfg`` and sets ``self.tables``."""

    cfg: SidConfig
    tables: Optional[list[tuple[np.ndarray, np.ndarray]]]
    variable_length = True  # head codes long, tail codes short

    @property
    def _k_tail(self) -> int:
        s = self.cfg.sa2crq
        if not s.curriculum:
            return 0
        # default K/4: on ML-100K 32+8 beat 32+32 (README), and stage 2's k-means costs ∝ K_tail² (its sample is
        # K_tail × max_points_per_centroid), so the curriculum adds ~1/16 of a fit instead of a second one
        return max(1, self.cfg.codebook_size // 4) if s.tail_codebook_size is None else s.tail_codebook_size

    @property
    def _k_total(self) -> int:
        return self.cfg.codebook_size + self._k_tail

    @property
    def codebook_sizes(self) -> list[int]:
        return [self._k_total] * self.cfg.levels

    def _check_cfg(self) -> None:
        s, L = self.cfg.sa2crq, self.cfg.levels
        if not 0.0 <= s.tau <= 1.0:
            raise ValueError(f"sid.sa2crq.tau must be in [0, 1], got {s.tau}")
        if not 1 <= s.start_level <= L:
            raise ValueError(f"sid.sa2crq.start_level must be in [1, sid.levels={L}], got {s.start_level}")
        if not 0.0 < s.head_share <= 1.0:
            raise ValueError(f"sid.sa2crq.head_share must be in (0, 1], got {s.head_share}")
        if s.curriculum and s.tail_codebook_size is not None and s.tail_codebook_size < 1:
            raise ValueError("sid.sa2crq.tail_codebook_size must be ≥ 1 with the curriculum")

    def _head(self, n: int, popularity: Optional[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Checked popularity (n,) float64 and the stage-1 mask (n,) bool: the head, or every item without the
        curriculum."""
        self._check_cfg()
        if popularity is None:
            raise ValueError(f"{self.cfg.tokenizer}: needs item popularity (interaction counts) to fit")
        pop = np.asarray(popularity, np.float64)
        if pop.shape != (n,) or (pop < 0).any():
            raise ValueError(f"{self.cfg.tokenizer}: popularity must be ({n},) non-negative counts, got shape "
                             f"{pop.shape}")
        s = self.cfg.sa2crq
        return pop, (head_mask(pop, s.head_share) if s.curriculum else np.ones(n, bool))

    def fit_encode(self, emb: np.ndarray, popularity: Optional[np.ndarray] = None) -> SidCodes:
        """``fit`` then ``encode``, then by ``popularity``: with ``sa2crq.head_codes: head`` head items are encoded
        with the head codewords only (their stage-1 codes, so their prefixes carry head mass); with
        ``sa2crq.tail_stop: start_level`` every item outside the head is cut to ``start_level`` codes (cold
        items, with no interactions, are tail)."""
        codes = self._tail_codes(emb, popularity, self.fit(emb, popularity).encode(emb))
        s = self.cfg.sa2crq
        if s.head_codes == "head" and s.curriculum and self._k_tail:
            # head items keep the codes stage 1 learned for them: the tail codewords are parked out of reach
            head = head_mask(np.asarray(popularity, np.float64), s.head_share)
            books = self._hybrid_books().copy()
            books[:, self.cfg.codebook_size:] = 1e6
            hc = self._encode_with(emb[head], books)
            arr, lengths = codes.codes.copy(), codes.lengths.copy()
            arr[head], lengths[head] = hc.codes, hc.lengths
            codes = SidCodes(arr, lengths, codes.codebook_sizes)
        if s.tail_stop == "start_level":
            tail = ~head_mask(np.asarray(popularity, np.float64), s.head_share)
            codes = cut_codes(codes, tail, s.start_level)
        return codes

    def _tail_codes(self, emb: np.ndarray, popularity: Optional[np.ndarray], codes: SidCodes) -> SidCodes:
        """Hook: re-encode the tail items of ``codes`` (the VAE flavour's tail encoder); here unchanged."""
        return codes

    def _fit_tail_codewords(self, r: np.ndarray, books: np.ndarray) -> None:
        """ACRQ stage 2: level by level, k-means on the tail residuals ``r`` (m, d) (consumed) fills codes
        K .. K + K_tail of ``books`` (L, K_total, d) in place; codes 0 .. K-1 (the head's) are only read.
        With ``sa2crq.anchor_weight`` > 0 the k-means is :func:`anchored_kmeans` (started at and pulled toward
        the head codewords); ``self.anchor_stats`` records each level's mean distance to the anchors."""
        cfg, K = self.cfg, self.cfg.codebook_size
        w = cfg.sa2crq.anchor_weight
        self.anchor_stats = []
        for lvl in range(books.shape[0]):
            if w > 0:
                c, anchors = anchored_kmeans(r, books[lvl, :K], self._k_tail, cfg.kmeans_iters, w, gpu=self.gpu)
                dist = np.linalg.norm(c - books[lvl, anchors], axis=1)
                self.anchor_stats.append({"level": lvl, "mean_dist_to_anchor": float(dist.mean()),
                                          "mean_head_codeword_norm": float(np.linalg.norm(books[lvl, :K], axis=1).mean())})
            else:
                c = kmeans(r, self._k_tail, cfg.kmeans_iters, cfg.seed + 1000 + lvl, cfg.max_points_per_centroid,
                           cfg.kmeans_redo, gpu=self.gpu)
            books[lvl, K: K + c.shape[0]] = c
            _, idx = assign(r, books[lvl])
            r -= books[lvl][idx[:, 0]]

    def _hybrid_priors(self, head_rows: np.ndarray, weights: np.ndarray, books: np.ndarray) -> None:
        """``sa2crq.priors: hybrid``: recount ``self.tables`` on the head items' full greedy codes under the hybrid
        ``books`` (L, K_total, d), where ``head_codes: hybrid`` encodes them. ``head_rows`` (m, d): their prepared
        rows (consumed); ``weights`` (m,): their popularity (or ones with ``mass: items``)."""
        L = books.shape[0]
        codes, _ = stopping_codes(head_rows, books, self.tables, -1.0, L)   # τ < 0: nothing stops, full codes
        self.tables = prefix_mass_tables(codes, weights, books.shape[1])

    def _encode_rows(self, rows: Callable[[int, int], np.ndarray], n: int, books: np.ndarray,
                     chunk: int) -> SidCodes:
        """Codes of ``n`` items whose prepared rows ``rows(a, b)`` (b - a, d) come in chunks, under ``books``
        (L, K_total, d), cut by the stop rule (head priors)."""
        s, L = self.cfg.sa2crq, books.shape[0]
        # the unique rule looks at the whole catalog at once: full codes first, then the cut
        tau, start = (-1.0, L) if s.unique_stop else (s.tau, s.start_level)
        codes = np.full((n, L), NO_CODE, np.int32)
        lengths = np.full(n, L, np.int32)
        for a in range(0, n, chunk):
            codes[a: a + chunk], lengths[a: a + chunk] = stopping_codes(rows(a, min(n, a + chunk)), books,
                                                                        self.tables, tau, start)
        if s.unique_stop:
            lengths = adaptive_lengths(codes, self.tables, s.tau, s.start_level, books.shape[1], True)
            codes = np.where(np.arange(L)[None, :] < lengths[:, None], codes, NO_CODE)
        return SidCodes(codes, lengths, self.codebook_sizes)


@TOKENIZERS.register("sa2crq")
class Sa2crq(Sa2crqSettings, RQKMeans):
    """SA²CRQ with the k-means flavour: L levels of K head codes (+ K_tail tail codes), adaptive length.

    Residuals, last-level candidates (for collision re-assignment) and reconstruction are RQ-KMeans' own:
    they already follow each item's code length."""


    def __init__(self, cfg: SidConfig) -> None:
        super().__init__(cfg)
        self.tables: Optional[list[tuple[np.ndarray, np.ndarray]]] = None
        self.head_codebooks: Optional[np.ndarray] = None   # stage-1 copy, to prove stage 2 left it untouched

    def fit(self, emb: np.ndarray, popularity: Optional[np.ndarray] = None) -> "Sa2crq":
        """Stage 1 on head items (codebooks + prefix masses), stage 2 new codewords for tail items."""
        cfg, s = self.cfg, self.cfg.sa2crq
        n, d = emb.shape
        pop, head = self._head(n, popularity)
        K, Kt, L = cfg.codebook_size, self._k_total, cfg.levels
        rng = np.random.default_rng(cfg.seed)

        def sample(idx: np.ndarray, k: int) -> np.ndarray:
            m = min(idx.size, k * cfg.max_points_per_centroid)
            return np.sort(rng.choice(idx, m, replace=False)) if m < idx.size else idx

        books = np.full((L, Kt, d), 1e6, np.float32)   # unused codes parked far away
        # stage 1: head codebooks, level by level on head residuals
        h_idx = np.where(head)[0]
        hs = sample(h_idx, K)
        r = self._prep(emb[hs])
        head_codes = np.empty((hs.size, L), np.int32)
        for lvl in range(L):
            c = kmeans(r, K, cfg.kmeans_iters, cfg.seed + lvl, cfg.max_points_per_centroid, cfg.kmeans_redo, gpu=self.gpu)
            books[lvl, : c.shape[0]] = c
            _, idx = assign(r, books[lvl, :K], gpu=self.gpu)
            head_codes[:, lvl] = idx[:, 0]
            r -= books[lvl][idx[:, 0]]
        self.head_codebooks = books[:, :K].copy()
        # head priors: share of the head's items (or of its interactions) under each prefix of their full codes,
        # estimated on the stage-1 sample (all head items unless the head exceeds K × max_points_per_centroid)
        w = pop[hs] if s.mass == "popularity" else np.ones(hs.size)
        self.tables = prefix_mass_tables(head_codes, w, Kt)
        # stage 2: frozen head codes + new tail codewords per level
        t_idx = np.where(~head)[0]
        if s.curriculum and t_idx.size:
            self._fit_tail_codewords(self._prep(emb[sample(t_idx, self._k_tail)]), books)
            if s.priors == "hybrid":
                self._hybrid_priors(self._prep(emb[hs]), w, books)
        self.codebooks = books
        return self

    def _check(self) -> np.ndarray:
        if self.codebooks is None or self.tables is None:
            raise RuntimeError("sa2crq: call fit() before encode()")
        return self.codebooks

    def encode(self, emb: np.ndarray, chunk: int = 65536) -> SidCodes:
        """Greedy residual codes under the hybrid codebooks, cut by the stop rule (head priors)."""
        return self._encode_with(emb, self._check(), chunk)

    def _encode_with(self, emb: np.ndarray, books: np.ndarray, chunk: int = 65536) -> SidCodes:
        """Codes of (n, d) ``emb`` under ``books`` (L, K_total, d), cut by the stop rule."""
        return self._encode_rows(lambda a, b: self._prep(emb[a:b]), emb.shape[0], books, chunk)

    def _hybrid_books(self) -> np.ndarray:
        return self._check()

    def _save_state(self, directory: Path) -> None:
        books = self._check()
        write_npz(directory / "sa2crq.npz", codebooks=books, head_codebooks=self.head_codebooks,
                  **tables_to_arrays(self.tables))

    def _load_state(self, directory: Path) -> None:
        z = load_npz(directory / "sa2crq.npz")
        self.codebooks = z["codebooks"].astype(np.float32)
        self.head_codebooks = z["head_codebooks"].astype(np.float32)
        self.tables = tables_from_arrays(z, self.codebooks.shape[0])
