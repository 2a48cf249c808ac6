"""Bucket SIDs: a short code may stand for several items, ranked inside the bucket by a named scorer.

Industrial SID retrieval lets tail codes be *generalisable*: the policy generates a code, and the items under
it are ordered inside the bucket. With ``sid.collision: bucket`` the catalog keeps items that stopped early
(SA²CRQ's short tail codes) sharing their code; the trie has one leaf per code, and the engines return each
bucket's representative (its lowest item index). Everything that turns a beam into a ranked list of items
goes through :class:`Buckets`:

- :meth:`Buckets.expand` — ranked codes → ranked items by ``log P(code | x) + log P(item | code, x)``: every
  item of every beam's bucket is a candidate, the scorer gives the within-bucket probability, banned items
  are skipped and the list holds ``k`` items (the budget counts items, not codes).
- :meth:`Buckets.resolve` — one item per generated code: the bucket's first unbanned item in scorer order,
  the one a system would show (what rewards and RL see).

Scorers (``sid.bucket_scorer``) are registered in :data:`BUCKET_SCORERS`: ``content`` (cosine of the item's
vector to the mean vector of the user's history, popularity breaking ties) and ``popularity`` (training
interaction counts). Adding one = a class with ``needs`` and ``score`` + ``@BUCKET_SCORERS.register``.
Their inputs are saved with the catalog (``buckets.npz``: popularity (n,) float32, and for ``content`` the
item vectors (n, d) float16, L2-normalised), so every process that loads the catalog ranks the same way.
A scorer with ``attach_only`` (``reward``: a trained reward model, ``rl_align/rewards/bucket_scorer.py``) is not
saved: the models are trained after the sids stage, so it is attached at evaluation
(``rl-align eval RUN --bucket-scorer reward:sasrec``).

Shapes: ``history`` (N, H) item indices, left-aligned, -1 padded; ``cand`` (N, C) item indices, -1 = none;
``users`` (N,) user indices (None where a caller has none; only scorers that read them need them).
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import Optional

import numpy as np

from rl_align.utils.io import load_npz, write_npz
from rl_align.utils.ranking import merge_and_rank
from rl_align.utils.registry import Registry

BUCKET_SCORERS: Registry[type["BucketScorer"]] = Registry("bucket scorer")


class BucketScorer(abc.ABC):
    """Within-bucket logits for a user: P(item | code, user) = softmax of the logits over the bucket's items.

    Args:
        popularity: (n_items,) training interaction counts. vectors: (n_items, d) L2-normalised item vectors or
            None (only scorers whose ``needs`` holds ``"vectors"`` get them).
        temperature: the content term's temperature (cosine / T).
    """

    registry_name: str = ""
    #: the saved inputs the scorer reads: a subset of ("popularity", "vectors")
    needs: tuple[str, ...] = ("popularity",)
    #: built around a model trained after the sids stage: attached at evaluation, never saved with the catalog
    attach_only: bool = False
    #: whether ``temperature`` enters :meth:`score` (False: ``rl-align eval --bucket-temperature`` is refused)
    uses_temperature: bool = True

    def __init__(self, popularity: np.ndarray, vectors: Optional[np.ndarray] = None, temperature: float = 0.1) -> None:
        self.popularity = np.asarray(popularity, np.float32)
        self.vectors = vectors
        self.temperature = float(temperature)

    @abc.abstractmethod
    def score(self, history: np.ndarray, cand: np.ndarray, users: Optional[np.ndarray] = None) -> np.ndarray:
        """(N, H) histories, (N, C) candidate items, (N,) users or None → (N, C) float logits (entries for
        cand < 0 are ignored)."""

    def score_shared(self, history: np.ndarray, cand: np.ndarray, users: Optional[np.ndarray] = None) -> np.ndarray:
        """(N, H) histories, (C,) candidates shared by every row, (N,) users or None → (N, C) float logits: what
        :meth:`score` gives on the candidates broadcast to every row (a scorer may compute it faster)."""
        return self.score(history, np.broadcast_to(cand, (history.shape[0], cand.size)), users)

    @property
    def label(self) -> str:
        """The name reports and metrics files carry (the registry name; a scorer built on another says so)."""
        return self.registry_name

    def _log_prior(self, cand: np.ndarray) -> np.ndarray:
        """log(1 + training count): the share of a code's training mass each of its items carried (add-one, so an
        item without interactions keeps a share)."""
        return np.log1p(self.popularity[np.maximum(cand, 0)].astype(np.float64))


@BUCKET_SCORERS.register("popularity")
class PopularityScorer(BucketScorer):
    """P(item | code) ∝ 1 + training count: the same order for every user — how the policy's code mass splits over
    the items it was trained on."""

    needs = ("popularity",)
    uses_temperature = False

    def score(self, history: np.ndarray, cand: np.ndarray, users: Optional[np.ndarray] = None) -> np.ndarray:
        return self._log_prior(cand)


@BUCKET_SCORERS.register("content")
class ContentScorer(BucketScorer):
    """P(item | code, user) ∝ (1 + training count) · exp(cos(item, history) / T): the popularity prior re-weighted by
    the cosine of the item's vector to the mean of the history's vectors (T = ``sid.bucket_temperature``)."""

    needs = ("popularity", "vectors")

    def _query(self, history: np.ndarray) -> np.ndarray:
        """(N, H) histories → (N, d) float32 unit mean vector of each history's items."""
        v, valid = self.vectors, history >= 0
        q = (v[np.where(valid, history, 0)].astype(np.float32) * valid[..., None]).sum(1)
        return q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)

    def score_shared(self, history: np.ndarray, cand: np.ndarray, users: Optional[np.ndarray] = None) -> np.ndarray:
        """One (N, d) × (d, C) product instead of a gather of every row's candidate vectors."""
        cos = self._query(history) @ self.vectors[cand].astype(np.float32).T                # (N, C)
        return self._log_prior(cand)[None, :] + cos.astype(np.float64) / self.temperature

    def score(self, history: np.ndarray, cand: np.ndarray, users: Optional[np.ndarray] = None) -> np.ndarray:
        v = self.vectors.astype(np.float32)
        q = self._query(history)                                                        # (N, d)
        cos = np.empty(cand.shape, np.float64)                                          # (N, C)
        rows = max(1, (1 << 24) // max(1, cand.shape[1] * v.shape[1]))    # gathered vectors ≤ 64 MB at a time
        for s in range(0, cand.shape[0], rows):
            cos[s: s + rows] = np.einsum("ncd,nd->nc", v[np.maximum(cand[s: s + rows], 0)], q[s: s + rows])
        return self._log_prior(cand) + cos / self.temperature


class Buckets:
    """Items grouped by shared code, and the scorer that orders them.

    Attributes:
        bucket_of: (n_items,) int64 bucket of each item. offsets: (n_buckets + 1,) int64 CSR offsets.
        members: (n_items,) int64 items of bucket b at ``members[offsets[b]:offsets[b + 1]]`` (index order).
        scorer: the within-bucket :class:`BucketScorer` (None: index order).
        cold_scorer: the scorer that orders the items without training interactions in the cold-start mixture
            (None: ``scorer``). :meth:`attach` sets it when a reward model replaces the saved scorer, since a
            model trained on training events knows nothing of an item without any.
    """

    def __init__(self, bucket_of: np.ndarray, scorer: Optional[BucketScorer] = None) -> None:
        self.bucket_of = np.asarray(bucket_of, np.int64)
        order = np.argsort(self.bucket_of, kind="stable")
        counts = np.bincount(self.bucket_of, minlength=int(self.bucket_of.max()) + 1 if self.bucket_of.size else 0)
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.members = order.astype(np.int64)
        self.scorer = scorer
        self.cold_scorer: Optional[BucketScorer] = None

    def attach(self, scorer: BucketScorer) -> None:
        """Order buckets by ``scorer`` (e.g. a reward model's, attached at evaluation). If it is ``attach_only``
        (trained on training events after the sids stage), items without training interactions keep the saved
        scorer in the cold-start mixture: the model never saw them, while the saved scorer reads their vectors.
        Attaching again keeps that saved scorer; attaching a saved-kind scorer orders every item by it."""
        saved = self.cold_scorer or self.scorer
        self.cold_scorer = saved if scorer.attach_only and saved is not None and not saved.attach_only else None
        self.scorer = scorer

    @property
    def n_buckets(self) -> int:
        return int(self.offsets.size - 1)

    @property
    def sizes(self) -> np.ndarray:
        """(n_buckets,) items per bucket."""
        return np.diff(self.offsets)

    def items_of(self, item: int) -> np.ndarray:
        """The items sharing ``item``'s code (itself included), in index order."""
        b = self.bucket_of[item]
        return self.members[self.offsets[b]: self.offsets[b + 1]]

    def _new(self, items: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """Mask of the valid entries of ``items`` (any shape) that have no training interaction (needs a scorer)."""
        return valid & (self.scorer.popularity[np.maximum(items, 0)] <= 0)

    def new_item_codes(self) -> np.ndarray:
        """(R,) int64 one member (the lowest index) of each bucket that holds an item without training interactions,
        in bucket order: the codes the cold-start mixture routes new items through (needs a scorer)."""
        new = self.scorer.popularity <= 0
        buckets = np.unique(self.bucket_of[new])
        return self.members[self.offsets[buckets]]

    def _ordered(self, reps: np.ndarray, history: np.ndarray, cold_prior: float = 0.0,
                 users: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Members of each rep's bucket in scorer order, for (N, B) reps (S = largest bucket among them).

        With ``cold_prior`` α > 0 (and a scorer), P(item | code, x) is the cold-start mixture: items with training
        interactions share 1 - α by the scorer's softmax over them, items without any share α by the softmax over
        those (a new item sits in a code like any other; :meth:`expand` normalises the cold part over the codes
        reached, so the next item is new with probability α).

        Returns:
            items (N, B, S) int64 (-1 padded), valid (N, B, S) bool, logp (N, B, S) float64 log P(item | code, user)
            (0 for a one-item bucket; uniform without a scorer).
        """
        N, B = reps.shape
        b = self.bucket_of[np.maximum(reps, 0)]
        size = np.where(reps >= 0, self.sizes[b], 0)
        S = max(1, int(size.max()) if size.size else 1)
        j = np.arange(S)
        valid = j[None, None, :] < size[..., None]
        items = np.where(valid, self.members[np.minimum(self.offsets[b][..., None] + j, self.members.size - 1)], -1)
        if S == 1 and not (cold_prior > 0 and self.scorer is not None):   # the mixture still weighs one-item codes
            return items, valid, np.zeros(items.shape)
        logit = (self.scorer.score(history, items.reshape(N, B * S), users).reshape(N, B, S) if self.scorer is not None
                 else np.zeros(items.shape))
        if cold_prior > 0 and self.scorer is not None:
            cold = self._new(items, valid)
            cold_logit = logit if self.cold_scorer is None else \
                self.cold_scorer.score(history, items.reshape(N, B * S), users).reshape(N, B, S)
            logp = np.full(items.shape, -np.inf)
            for part, w, lg in ((valid & ~cold, np.log1p(-cold_prior), logit), (cold, np.log(cold_prior), cold_logit)):
                logp = np.where(part, _log_softmax(np.where(part, lg, -np.inf)) + w, logp)
        else:
            logp = _log_softmax(np.where(valid, logit, -np.inf))
        # scorer order, ties by item index (members are in index order, the sort is stable)
        order = np.argsort(-logp, axis=2, kind="stable")
        take = lambda a: np.take_along_axis(a, order, 2)  # noqa: E731
        return take(items), take(valid), take(logp)

    def expand(self, reps: np.ndarray, scores: np.ndarray, history: np.ndarray, k: int,
               banned: Optional[np.ndarray] = None, cold_prior: float = 0.0,
               users: Optional[np.ndarray] = None,
               parent_cold: Optional[tuple[list[dict[int, float]], np.ndarray]] = None,
               cold_codes: Optional[tuple[np.ndarray, np.ndarray]] = None) -> tuple[np.ndarray, np.ndarray]:
        """Ranked codes → ranked items by ``log P(code | x) + log P(item | code, x)``.

        Every item of every beam's bucket is a candidate, scored by its beam's log-prob plus its within-bucket
        log-prob (:meth:`_ordered`), so a large bucket's items share its mass instead of flooding the list; inside
        one bucket the scorer's order is kept. Banned items are skipped; the list holds ``k`` items.

        With ``cold_prior`` α > 0 this is the cold-start mixture of :mod:`rl_align.eval.cold_expand` on buckets:

            P(i | x) = (1 - α) · P(code | x) · P_warm(i | code, x)            (items with training interactions)
                     + α · P(code | x) · P_cold(i | code, x) / Z(x)           (items without)

        Z(x) = Σ P(code | x) over the reached codes that hold items without interactions, so the cold part is a
        distribution over them: "the next item is new with probability α, and it sits where the code mass is".

        A bucket holding only new items is a code the policy was never trained to emit, so its P(code | x) is
        near 0. ``parent_cold`` gives those items their parent prefix's mass instead, as the RQ expansion does
        (:func:`rl_align.eval.cold_expand.parent_shares`): per row, item → log P(parent | x) - log n(parent),
        and (N,) log Σ P(parent | x) over the reached parents, which joins Z(x); such an item scores
        α · P(parent | x) / (n(parent) · Z(x)), added to any score it gets from a reached code.

        Args:
            reps: (N, B) representative items of the beams, best first (-1 = no beam).
            scores: (N, B) beam log-probs. history: (N, H) prompt items (for the scorer).
            k: ranking length. banned: optional (N, S) items that may not appear (-1 padded).
            cold_prior: α of the cold-start mixture inside buckets (:meth:`_ordered`); 0 = off.
            users: optional (N,) user indices (for a scorer that reads them).
            parent_cold: optional (per-row {item: log share}, (N,) log parent mass), see above; used only with the
                cold mixture (α > 0 and a scorer, which knows the new items).
            cold_codes: optional ((R,) a member of every code holding new items, :meth:`new_item_codes`; (N, R)
                log P(code | x) of each, teacher-forced). With it the cold part covers every such code, reached by a
                beam or not, and Z(x) is their whole mass (``eval.cold_routes: all``); not with ``parent_cold``.

        Returns:
            items (N, k) int64 best first (-1 = empty), scores (N, k) float64 joint log-probs.
        """
        items, valid, logp = self._ordered(reps, history, cold_prior, users)
        N = reps.shape[0]
        joint = np.where(valid & np.isfinite(scores)[..., None], scores[..., None] + logp, -np.inf)
        if cold_prior > 0 and self.scorer is not None and cold_codes is not None:
            if parent_cold is not None:
                raise ValueError("Buckets.expand: cold_codes already score every code holding new items; "
                                 "parent_cold is for the beams' routes only")
            cold = self._new(items, valid)
            return self._with_every_cold_code(items, np.where(cold, -np.inf, joint), cold_codes, history,
                                              cold_prior, users, k, banned)
        if cold_prior > 0 and self.scorer is not None:
            cold = self._new(items, valid)                                             # (N, B, S)
            reached = np.where(cold.any(2) & np.isfinite(scores), scores, -np.inf)     # (N, B) codes holding new items
            log_z = np.logaddexp.reduce(reached, axis=1)                               # (N,) log Z(x); -inf: none
            if parent_cold is not None:
                log_z = np.logaddexp(log_z, parent_cold[1])
            joint = np.where(cold, joint - np.where(np.isfinite(log_z), log_z, 0.0)[:, None, None], joint)
        joint = joint.reshape(N, -1)
        flat = items.reshape(N, -1)
        if parent_cold is not None and cold_prior > 0 and self.scorer is not None:
            return self._merged(flat, joint, parent_cold[0], np.log(cold_prior) - log_z, k, banned)
        return self._top_unique(flat, joint, k, banned)

    def _with_every_cold_code(self, items: np.ndarray, warm: np.ndarray, cold_codes: tuple[np.ndarray, np.ndarray],
                              history: np.ndarray, cold_prior: float, users: Optional[np.ndarray], k: int,
                              banned: Optional[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """The beams' items (N, B, S) scored ``warm`` (new items already -inf) ranked with the new items of every
        code in ``cold_codes`` = ((R,) members, (N, R) log P(code | x)), each scored
        log α + log P(code | x) + log P_cold(i | code, x) - log Z(x), Z(x) = Σ over the R codes.

        Dense over the C new items of those codes (tens of thousands on the synthetic catalog): their cold logits
        in one :meth:`BucketScorer.score_shared` call, the within-code log-softmax by segment, and only the items
        scoring at least a row's (k + banned)-th best (ties kept) go on to the final sort."""
        reps, lp = cold_codes
        N, R = lp.shape
        new, route, starts = self._new_items_by_route(np.asarray(reps, np.int64))
        if R == 0 or new.size == 0:                                                # no code holds a new item
            return self._top_unique(items.reshape(N, -1), warm.reshape(N, -1), k, banned)
        logit = (self.cold_scorer or self.scorer).score_shared(history, new, users)          # (N, C)
        c_logp = _segment_log_softmax(logit, starts) + np.log(cold_prior)
        log_z = np.logaddexp.reduce(lp, axis=1)                                    # (N,)
        c_joint = np.where(np.isfinite(log_z)[:, None],
                           lp[:, route] + c_logp - np.where(np.isfinite(log_z), log_z, 0.0)[:, None], -np.inf)
        top = k + (int((banned >= 0).sum(1).max()) if banned is not None and banned.size else 0)
        keep = (c_joint >= np.partition(c_joint, new.size - top, axis=1)[:, new.size - top: new.size - top + 1]
                if new.size > top else np.ones(c_joint.shape, bool))
        width = int(keep.sum(1).max())
        c_items, c_top = np.full((N, width), -1, np.int64), np.full((N, width), -np.inf)
        for r in range(N):
            idx = np.flatnonzero(keep[r])
            c_items[r, : idx.size], c_top[r, : idx.size] = new[idx], c_joint[r, idx]
        return self._top_unique(np.concatenate([items.reshape(N, -1), c_items], 1),
                                np.concatenate([warm.reshape(N, -1), c_top], 1), k, banned)

    def _new_items_by_route(self, reps: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The items without training interactions in the buckets of (R,) ``reps``: (C,) items grouped by route
        (index order inside one), (C,) each one's route index, and the (G,) start of each non-empty route group."""
        route_of = np.full(self.n_buckets, -1, np.int64)
        route_of[self.bucket_of[reps]] = np.arange(reps.size)
        new = np.flatnonzero(self.scorer.popularity <= 0)
        route = route_of[self.bucket_of[new]]
        order = np.argsort(route, kind="stable")
        new, route = new[order], route[order]
        new, route = new[route >= 0], route[route >= 0]
        starts = np.flatnonzero(np.r_[True, route[1:] != route[:-1]]) if new.size else np.zeros(0, np.int64)
        return new, route, starts

    @staticmethod
    def _top_unique(flat: np.ndarray, joint: np.ndarray, k: int,
                    banned: Optional[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Per row of (N, C) candidates ``flat`` scored ``joint``: the ``k`` best distinct unbanned items (an item
        reached through two beams keeps its first, best entry) and their scores; -1 / -inf pad short rows."""
        N = flat.shape[0]
        out = np.full((N, k), -1, np.int64)
        out_s = np.full((N, k), -np.inf)
        order = np.argsort(-joint, axis=1, kind="stable")
        for r in range(N):
            n = 0
            seen = set(banned[r][banned[r] >= 0].tolist()) if banned is not None else set()
            for c in order[r]:
                if not np.isfinite(joint[r, c]) or n == k:
                    break
                it = int(flat[r, c])
                if it in seen:   # banned, or a second beam reached the same bucket
                    continue
                seen.add(it)
                out[r, n], out_s[r, n] = it, joint[r, c]
                n += 1
        return out, out_s

    @staticmethod
    def _merged(flat: np.ndarray, joint: np.ndarray, extra: list[dict[int, float]], log_w: np.ndarray, k: int,
                banned: Optional[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Rank (N, C) candidates ``flat`` by ``joint`` (an item's best entry) plus, per row, the parent route's
        ``extra`` shares weighted by ``log_w`` (N,) = log(α / Z(x)); banned items dropped; top ``k`` per row."""
        N = flat.shape[0]
        out = np.full((N, k), -1, np.int64)
        out_s = np.full((N, k), -np.inf)
        for r in range(N):
            score: dict[int, float] = {}
            ok = np.isfinite(joint[r]) & (flat[r] >= 0)
            for it, v in zip(flat[r][ok].tolist(), joint[r][ok].tolist()):
                score[it] = max(score.get(it, -np.inf), v)
            shifted = {it: v + float(log_w[r]) for it, v in extra[r].items()}
            cand, val = merge_and_rank(score, shifted, banned[r] if banned is not None else None, k)
            out[r, : cand.size], out_s[r, : cand.size] = cand, val
        return out, out_s

    def resolve(self, reps: np.ndarray, history: np.ndarray, banned: Optional[np.ndarray] = None,
                users: Optional[np.ndarray] = None) -> np.ndarray:
        """(N, G) generated codes' representatives → (N, G) the item each stands for: its bucket's first unbanned
        item in scorer order (-1 stays -1; a bucket whose items are all banned gives -1)."""
        items, valid, _ = self._ordered(reps, history, users=users)
        if banned is not None:   # per row, against the row's banned items (no (N, G, S, M) comparison)
            valid = valid & ~np.stack([np.isin(items[r], banned[r][banned[r] >= 0]) for r in range(len(items))])
        first = valid.argmax(2)
        out = np.take_along_axis(items, first[..., None], 2)[..., 0]
        return np.where(valid.any(2) & (reps >= 0), out, -1).astype(np.int64)

    # ------------------------------------------------------------------ io
    def save_scorer(self, path: str | Path) -> None:
        """Write the scorer's name and inputs (plain NPZ)."""
        s = self.scorer
        if s is None or s.attach_only:
            return
        arrays = {"name": np.array(s.registry_name), "popularity": s.popularity,
                  "temperature": np.array(s.temperature)}
        if "vectors" in s.needs:
            arrays["vectors"] = s.vectors.astype(np.float16)
        write_npz(path, **arrays)

    @staticmethod
    def load_scorer(path: str | Path) -> Optional[BucketScorer]:
        path = Path(path)
        if not path.exists():
            return None
        z = load_npz(path)
        cls = BUCKET_SCORERS.get(str(z["name"]))
        vec = z["vectors"].astype(np.float32) if "vectors" in z else None
        return cls(z["popularity"], vec, float(z["temperature"]) if "temperature" in z else 0.1)


def _log_softmax(logit: np.ndarray) -> np.ndarray:
    """Log-softmax over the last axis; -inf entries stay -inf, an all -inf row stays -inf."""
    m = logit.max(-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        lse = np.log(np.exp(logit - m).sum(-1, keepdims=True))
    return logit - m - np.where(np.isfinite(lse), lse, 0.0)


def _segment_log_softmax(logit: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """(N, C) logits whose columns form segments beginning at (G,) ``starts`` → the log-softmax inside each segment
    (as :func:`_log_softmax` over a segment; an all -inf segment stays -inf)."""
    seg = np.repeat(np.arange(starts.size), np.diff(np.append(starts, logit.shape[1])))    # (C,) segment of each
    m = np.maximum.reduceat(logit, starts, axis=1)
    m = np.where(np.isfinite(m), m, 0.0)[:, seg]
    with np.errstate(divide="ignore"):
        lse = np.log(np.add.reduceat(np.exp(logit - m), starts, axis=1))
    return logit - m - np.where(np.isfinite(lse), lse, 0.0)[:, seg]


def rebuild_scorer(saved: BucketScorer, name: str, temperature: Optional[float] = None) -> BucketScorer:
    """The saved-kind scorer ``name`` on a loaded catalog scorer's inputs, at ``temperature`` (None: the saved one).
    Vectors are taken as saved (already L2-normalised), so ``name`` at the saved temperature ranks exactly as
    ``saved``; normalising the float16 copy again would move near-ties."""
    cls = BUCKET_SCORERS.get(name)
    if cls.attach_only:
        raise ValueError(f"{name!r} is built around a model trained after the sids stage, not from saved inputs")
    if temperature is not None and not cls.uses_temperature:
        raise ValueError(f"the {name!r} scorer has no temperature")
    if "vectors" in cls.needs and saved.vectors is None:
        raise ValueError(f"{name!r} needs item vectors; the saved {saved.registry_name!r} scorer has none")
    return cls(saved.popularity, saved.vectors if "vectors" in cls.needs else None,
               saved.temperature if temperature is None else temperature)


def build_scorer(name: str, popularity: np.ndarray, vectors: Optional[np.ndarray] = None,
                 temperature: float = 0.1) -> BucketScorer:
    """The registered scorer ``name`` on these inputs (vectors are L2-normalised here)."""
    cls = BUCKET_SCORERS.get(name)
    if cls.attach_only:
        raise ValueError(f"sid.bucket_scorer: {name!r} is built around a model trained after the sids stage; "
                         f"attach it at evaluation (rl-align eval RUN --bucket-scorer {name}:NAME)")
    if "vectors" in cls.needs:
        if vectors is None:
            raise ValueError(f"sid.bucket_scorer: {name!r} needs item vectors")
        vectors = np.asarray(vectors, np.float32)
        vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    else:
        vectors = None
    return cls(popularity, vectors, temperature)
