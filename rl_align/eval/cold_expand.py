"""Cold-item expansion: rank items the policy never saw as targets by their SID parent's probability.

A generative retriever trained with NLL puts (almost) no mass on an item it has never been trained to emit, so
items with no training interactions — new items, the cold-start protocol's held-out items — are never
retrieved, whatever their SID. Their SIDs are built from content, though, so the *parent* of a cold item's SID
(its code without the last level) is a prefix warm items share, and the policy's probability of that prefix is
meaningful. The expansion scores every item as a two-component mixture:

    P(i | x) = (1 - α) · P_policy(i | x)                                 (warm and cold items alike)
             + α · P_policy(parent(i) | x) / (n_cold(parent(i)) · Z(x))  (cold items only)

where α (``eval.cold_prior``) is the share of interactions that go to items unseen in training,
``n_cold(p)`` the number of cold items under parent ``p`` (a parent's mass is spread evenly over its cold
children) and ``Z(x) = Σ_p P_policy(p | x)`` over the parents that hold cold items, so the cold component is a
distribution over cold items: "the next item is new with probability α, and it sits where the policy's
prefix mass is". Ties among siblings are broken by the cosine similarity of the item's content vector
to the mean vector of the user's history (content-based cold start). With ``eval.cold_routes: beams`` (the
default) prefix probabilities come from the constrained beam search's own per-token log-probs: every proper prefix
of every returned beam is a candidate parent, so no extra forward pass is needed, but parents outside the beams are
not expanded and Z is summed over the reached ones only, which concentrates α on them (on ML-100K cold HR@10 is
about three times the exact mixture's, at a cost of about 6% to the warm lists). With ``all`` every route is
teacher-forced (:class:`ColdRoutes`, one tree-attention forward over the routes' shared prefixes): Z(x) is then the
sum over all parents that hold cold items, as the formula says, and a cold item whose parent no beam reached is
ranked too.

Shapes: beams per prompt ``n``; ``sequences`` (N, n, T) and ``token_logprobs`` (N, n, T) as in
:class:`rl_align.rollouts.base.RolloutBatch`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from rl_align.eval.evaluate import EvalSet
from rl_align.policy.data import build_prompts
from rl_align.policy.tree_logprobs import PrefixTree, tree_logprobs
from rl_align.rollouts.base import GenerationRequest, RolloutEngine
from rl_align.sid.catalog import EOS, PAD, SidCatalog
from rl_align.utils.ranking import merge_and_rank


@dataclass
class ColdIndex:
    """Cold items grouped by the token sequence of their SID parent.

    Attributes:
        children: parent token tuple → (m,) int64 cold item indices under it.
        is_cold: (n_items,) bool.
    """

    children: dict[tuple[int, ...], np.ndarray]
    is_cold: np.ndarray

    @classmethod
    def build(cls, catalog: SidCatalog, cold_items: np.ndarray) -> "ColdIndex":
        """Index ``cold_items`` (dense indices) by parent = their SID tokens minus the last code and <eos>."""
        cold_items = np.asarray(cold_items, np.int64)
        is_cold = np.zeros(catalog.n_items, bool)
        is_cold[cold_items] = True
        groups: dict[tuple[int, ...], list[int]] = {}
        for i in cold_items.tolist():
            n_codes = int(catalog.token_lengths[i]) - 1       # without <eos>
            if n_codes < 1:
                continue
            groups.setdefault(tuple(catalog.tokens[i, : n_codes - 1].tolist()), []).append(i)
        return cls({k: np.array(v, np.int64) for k, v in groups.items()}, is_cold)


@dataclass
class ColdRoutes:
    """Every route to a new item, teacher-forced for each prompt (``eval.cold_routes: all``).

    A route is what the cold mixture weighs a new item by: its SID parent in a catalog of unique codes (a prefix,
    no ``<eos>``), or its own code in a bucket catalog (with ``<eos>``: the log-prob a beam ending in it carries).
    Scoring all of them costs one prompt forward and one forward of the routes' distinct prefixes (tree attention)
    per prompt batch, and replaces "the routes some beam reached" by all of them, so Z(x) is exact and no new item
    is missed because no beam passed its way.

    Attributes:
        tokens: (R, T) int64 route tokens, ``<pad>``-padded.
        parents: the R parent token tuples (unique codes: the keys of :class:`ColdIndex`), or None.
        reps: (R,) int64 one member of each route's bucket (bucket catalog), or None.
        tree: the routes' :class:`~rl_align.policy.tree_logprobs.PrefixTree` (built from ``tokens``).
    """

    tokens: np.ndarray
    parents: Optional[list[tuple[int, ...]]] = None
    reps: Optional[np.ndarray] = None

    @classmethod
    def build(cls, catalog: SidCatalog, index: ColdIndex) -> "ColdRoutes":
        """The parents of ``index`` (unique codes), or every bucket code holding a new item (bucket catalog)."""
        if catalog.has_buckets:   # without a scorer nothing knows the new items: no cold mixture, no routes
            reps = (catalog.buckets.new_item_codes() if catalog.buckets.scorer is not None
                    else np.zeros(0, np.int64))
            return cls(catalog.tokens[reps].astype(np.int64), reps=reps)
        parents = list(index.children)
        tokens = np.full((len(parents), catalog.tokens.shape[1]), PAD, np.int64)
        for j, p in enumerate(parents):
            tokens[j, : len(p)] = p
        return cls(tokens, parents=parents)

    @property
    def n(self) -> int:
        return int(self.tokens.shape[0])

    def __post_init__(self) -> None:
        self.tree = PrefixTree.build(self.tokens)   # the routes share their first tokens: one tree forward a prompt

    def logprobs(self, model, catalog: SidCatalog, history: np.ndarray, users: np.ndarray,
                 max_cells: int = 1 << 24) -> np.ndarray:
        """(N, R) float64 raw log π(route | prompt) for prompts (N, H) ``history`` of ``users`` (N,): the sum of the
        route's token log-probs (0 for the empty root prefix), by tree attention over the routes' shared prefixes
        (:func:`rl_align.policy.tree_logprobs.tree_logprobs`; ``max_cells`` bounds a forward's mask)."""
        if self.n == 0:
            return np.zeros((history.shape[0], 0))
        return tree_logprobs(model, catalog, history, users, self.tree, max_cells)


def cold_route_items(catalog: SidCatalog, popularity: np.ndarray, bucket_parents: bool = False) -> np.ndarray:
    """Items the parent route scores: every item without training interactions in a catalog of unique codes; in
    a bucket catalog none (buckets hold their own cold mixture), or with ``bucket_parents`` the items of buckets
    in which no item has training interactions (codes the policy was never trained to emit)."""
    new = popularity <= 0
    if not catalog.has_buckets:
        return np.flatnonzero(new)
    if not bucket_parents:
        return np.zeros(0, np.int64)
    b = catalog.buckets.bucket_of
    warm_buckets = np.bincount(b[~new], minlength=catalog.buckets.n_buckets) > 0
    return np.flatnonzero(~warm_buckets[b]).astype(np.int64)


def measured_cold_prior(split: dict[str, np.ndarray]) -> float:
    """α from a run's split: the share of all interactions that went to held-out cold items (0 without the
    cold-start protocol); the cold-valid part's cases count too."""
    n_cold = sum(int(split[f"{p}_targets"].size) for p in ("cold", "cold_valid") if f"{p}_targets" in split)
    n_all = int(split["seq_items"].size) + n_cold
    return n_cold / n_all if n_all else 0.0


def expand_with_cold(sequences: np.ndarray, token_logprobs: np.ndarray, seq_logprob: np.ndarray,
                     items: np.ndarray, index: ColdIndex, prior: float, k: int,
                     banned: Optional[np.ndarray] = None, query: Optional[np.ndarray] = None,
                     item_vecs: Optional[np.ndarray] = None,
                     route_logp: Optional[tuple[list, np.ndarray]] = None) -> tuple[np.ndarray, np.ndarray]:
    """Merge beam-search results with cold items scored through their parents' prefix log-probs.

    Args:
        sequences: (N, n, T) generated tokens. token_logprobs: (N, n, T). seq_logprob: (N, n) (-inf = no beam).
        items: (N, n) item of each beam (-1 = none). index: the cold items. prior: α in [0, 1).
        k: ranking length. banned: optional (N, S) items excluded from the ranking (-1 padded).
        query: optional (N, d) user content vectors; item_vecs: (n_items, d) L2-normalised item vectors — the
            within-parent tie-break (None: by item index).
        route_logp: optional (parents, (N, R) log P(parent | x)) of every parent (:class:`ColdRoutes`): used
            instead of the parents the beams reach, so Z(x) sums all of them.

    Returns:
        ranked (N, k) int64 items best first (-1 = empty), scores (N, k) float64 mixture log-probabilities.
    """
    if not 0.0 <= prior < 1.0:
        raise ValueError(f"eval.cold_prior must be in [0, 1), got {prior}")
    N, n, _ = sequences.shape
    log_w, log_a = math.log1p(-prior), (math.log(prior) if prior > 0 else -math.inf)
    out = np.full((N, k), -1, np.int64)
    out_s = np.full((N, k), -np.inf)
    cum = np.cumsum(token_logprobs, axis=2)
    dense = _DenseShares(index, route_logp[0]) if route_logp is not None and prior > 0 else None
    for r in range(N):
        score: dict[int, float] = {}
        for b in range(n):
            it = int(items[r, b])
            if it >= 0 and np.isfinite(seq_logprob[r, b]):
                score[it] = max(score.get(it, -math.inf), float(seq_logprob[r, b]) + log_w)
        cold_score: dict[int, float] = {}
        if dense is not None:
            n_banned = int((banned[r] >= 0).sum()) if banned is not None else 0
            cold_score = dense.top(route_logp[1][r], log_a, k + n_banned + len(score), score)
        elif prior > 0:
            parents = reached_parents(sequences[r], cum[r], seq_logprob[r], items[r], index)
            if parents:
                log_z = parents_log_mass(parents)
                cold_score = parent_shares(parents, index, log_z, log_a)
        tie = ((lambda cand, q=query[r]: item_vecs[cand] @ q) if (query is not None and item_vecs is not None)
               else None)
        cand, val = merge_and_rank(score, cold_score, banned[r] if banned is not None else None, k, tie)
        out[r, : cand.size], out_s[r, : cand.size] = cand, val
    return out, out_s


class _DenseShares:
    """:func:`parent_shares` over every route at once, for ``eval.cold_routes: all``, where the cold items number
    tens of thousands (77k on the synthetic catalog) and a per-item dict per prompt would dominate the evaluation.

    Attributes: items (C,) the cold items in route order, then child order; route (C,) each one's route index;
    log_n (R,) log of each route's number of children; at (n_items,) an item's position in ``items`` (-1: none).
    """

    def __init__(self, index: ColdIndex, parents: list[tuple[int, ...]]) -> None:
        kids = [index.children[p] for p in parents]
        self.items = np.concatenate(kids) if kids else np.zeros(0, np.int64)
        self.route = np.repeat(np.arange(len(kids)), [k.size for k in kids])
        self.log_n = np.array([math.log(k.size) for k in kids], np.float64)
        self.at = np.full(index.is_cold.size, -1, np.int64)
        self.at[self.items] = np.arange(self.items.size)

    def top(self, lp: np.ndarray, log_a: float, m: int, warm: dict[int, float]) -> dict[int, float]:
        """Cold item → log(α · P(parent | x) / (Z · n)) for (R,) route log-probs ``lp``, as :func:`parent_shares`
        gives it, but only for the items that can reach a top-k list: every item scoring at least the m-th best
        (m = k + the row's banned items + its warm items, so ties at the cut stay in), and the warm items' own
        cold parts (they merge). Insertion order is :func:`parent_shares`' (the tie-break's stable order)."""
        log_z = float(np.logaddexp.reduce(lp)) if lp.size else -math.inf
        if not np.isfinite(log_z):   # no route has mass: no cold part (not NaN shares)
            return {}
        cs = ((lp[self.route] - log_z) + log_a) - self.log_n[self.route]
        keep = np.ones(cs.size, bool)
        if cs.size > m:
            keep = cs >= np.partition(cs, cs.size - m)[cs.size - m]
        at = self.at[np.fromiter(warm.keys(), np.int64, len(warm))] if warm else np.zeros(0, np.int64)
        keep[at[at >= 0]] = True
        idx = np.flatnonzero(keep)
        return dict(zip(self.items[idx].tolist(), cs[idx].tolist()))


def reached_parents(sequences: np.ndarray, cum_logprobs: np.ndarray, seq_logprob: np.ndarray, items: np.ndarray,
                    index: ColdIndex) -> dict[tuple[int, ...], float]:
    """The cold parents one prompt's beams reach, with their log-prob under the policy.

    Args: sequences (n, T) generated tokens; cum_logprobs (n, T) cumulative per-token log-probs; seq_logprob (n,)
    (-inf = no beam); items (n,) item of each beam (-1 = none). Every proper prefix of every beam's code (the root
    included) that holds cold children in ``index`` is a parent; a prefix reached by several beams has one value.
    """
    parents: dict[tuple[int, ...], float] = {}
    for b in range(sequences.shape[0]):
        if items[b] < 0 or not np.isfinite(seq_logprob[b]):
            continue
        toks = sequences[b].tolist()
        for depth in range(len(_codes_of(toks))):   # depth 0 (the root) .. n_codes - 1
            key = tuple(toks[:depth])
            if key not in index.children:
                continue
            lp = float(cum_logprobs[b, depth - 1]) if depth else 0.0
            if lp > parents.get(key, -math.inf):
                parents[key] = lp
    return parents


def parents_log_mass(parents: dict[tuple[int, ...], float]) -> float:
    """log Σ P(parent | x) over reached parents (their log-probs as values); -inf when there are none."""
    return float(np.logaddexp.reduce(np.fromiter(parents.values(), np.float64, len(parents)))) if parents else -math.inf


def parent_shares(parents: dict[tuple[int, ...], float], index: ColdIndex, log_z: float,
                  log_a: float) -> dict[int, float]:
    """Cold item → log(α · P(parent | x) / (Z · n_cold(parent))): each reached parent's mass, normalised by the
    given log Z(x) and weighted by log α, spread evenly over its cold children."""
    out: dict[int, float] = {}
    for key, lp in parents.items():
        kids = index.children[key]
        cs = lp - log_z + log_a - math.log(kids.size)
        for c in kids.tolist():
            out[c] = cs
    return out


def _codes_of(tokens: list[int]) -> list[int]:
    """The code tokens of a generated sequence: everything before the first <eos> (or pad)."""
    out = []
    for t in tokens:
        if t in (EOS, PAD):
            break
        out.append(t)
    return out


def user_queries(history: np.ndarray, item_vecs: np.ndarray) -> np.ndarray:
    """(N, d) mean of the L2-normalised vectors of each prompt's history items (-1 padded rows of ``history``)."""
    valid = history >= 0
    v = item_vecs[np.where(valid, history, 0)] * valid[..., None]
    q = v.sum(1)
    return q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)


def _bucket_parent_route(res, index: ColdIndex) -> tuple[list[dict[int, float]], np.ndarray]:
    """Per prompt of a :class:`RolloutBatch`: {item in an all-new bucket: log P(parent | x) - log n(parent)} over
    the parents its beams reach, and (N,) log Σ P(parent | x) (-inf: none reached), for ``Buckets.expand``."""
    seqs, cum = res.sequences.numpy(), np.cumsum(res.token_logprobs.numpy(), axis=2)
    slp, items = res.seq_logprob.numpy(), res.items.numpy()
    shares, log_mass = [], np.full(seqs.shape[0], -np.inf)
    for r in range(seqs.shape[0]):
        parents = reached_parents(seqs[r], cum[r], slp[r], items[r], index)
        shares.append(parent_shares(parents, index, 0.0, 0.0))
        log_mass[r] = parents_log_mass(parents)
    return shares, log_mass


def rank_with_cold_expansion(engine: RolloutEngine, catalog: SidCatalog, es: "EvalSet", beams: int,
                             exclude_history: bool, batch_size: int, index: ColdIndex, prior: float,
                             item_vecs: Optional[np.ndarray] = None, routes: Optional[ColdRoutes] = None
                             ) -> tuple[np.ndarray, np.ndarray]:
    """Constrained beam search, then :func:`expand_with_cold` (in a bucket catalog: the buckets' own cold-start
    mixture, :meth:`rl_align.sid.buckets.Buckets.expand`); with ``routes`` every route to a new item is
    teacher-forced instead of read off the beams. Returns items (N, beams) and scores (N, beams)."""
    out_items, out_scores = [], []
    for s in range(0, es.targets.size, batch_size):
        hist = es.history[s: s + batch_size]
        ids, mask = build_prompts(hist, catalog, es.users[s: s + batch_size])
        seen = es.seen[s: s + batch_size]
        res = engine.generate(GenerationRequest(ids, mask, n=beams, mode="beam", constrained=True,
                                                banned_items=torch.from_numpy(seen) if exclude_history else None))
        q = user_queries(hist, item_vecs) if item_vecs is not None else None
        lp = (routes.logprobs(engine.model, catalog, hist, es.users[s: s + batch_size])
              if routes is not None and prior > 0 else None)
        if catalog.has_buckets:
            # cold items sit inside buckets: the cold-start mixture is the bucket's own (Buckets.expand)
            ranked, scores = catalog.buckets.expand(res.items.numpy(), res.seq_logprob.numpy(), hist, beams,
                                                    seen if exclude_history else None, cold_prior=prior,
                                                    users=es.users[s: s + batch_size],
                                                    parent_cold=_bucket_parent_route(res, index) if index.children
                                                    and prior > 0 and lp is None else None,
                                                    cold_codes=None if lp is None else (routes.reps, lp))
        else:
            ranked, scores = expand_with_cold(res.sequences.numpy(), res.token_logprobs.numpy(),
                                              res.seq_logprob.numpy(), res.items.numpy(), index, prior, beams,
                                              seen if exclude_history else None, q, item_vecs,
                                              None if lp is None else (routes.parents, lp))
        out_items.append(ranked)
        out_scores.append(scores)
    return np.concatenate(out_items), np.concatenate(out_scores)
