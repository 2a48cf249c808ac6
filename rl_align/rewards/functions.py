"""Reward functions over groups of generated items, behind a registry, composable with weights (pure torch).

A request is a batch of B groups (one prompt each) of G generated items, in
generation order (beam rank or sample order). Item -1 marks an invalid SID (no
catalog item): it always gets the configured floor reward and is counted, as is
any non-finite value a function produces — nothing NaN leaves
:meth:`CompositeReward.__call__`.

Registered functions (all return (B, G) rewards for the valid members):

* ``ranker`` — the ranker's click probability; ``rank``-normalised within the
  group ([0, 1], best = 1), ``zscore``d, ``raw``, or ``topk`` (1 for the group's k
  best-scored members, 0 for the rest: the cut HR@k counts);
* ``exact_match`` — 1 if the item is the ground truth, else 0;
* ``ranking`` — MiniOneRec's rank-aware reward: +1 for the ground truth; when the
  group contains it, each wrong item at generation rank k gets −1/log2(k+2),
  normalised so the penalties of a full group sum to −1; groups without the
  ground truth get 0;
* ``semantic`` — cosine similarity of the item's and the ground truth's embeddings;
* ``future_match`` — γ^j when the item is the user's j-th next training event after
  the prompt (j = 0 is the ground truth), else 0: a set-valued target for logs
  whose within-session order is noisy (the request's ``future``; γ =
  ``reward.future_discount``, window ``reward.future_window``).
"""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Optional

import torch

from rl_align.algos.diagnostics import group_rank_normalize, group_topk_indicator, group_zscore
from rl_align.utils.registry import Registry

log = logging.getLogger("rl_align")


class RewardInputError(ValueError):
    """A reward request is malformed (the message names the field)."""


@dataclass
class RewardInputs:
    """One scoring request.

    Attributes:
        users: (B,) int64 user indices.
        history: (B, H) int64 item indices of each prompt's history, -1 padded.
        items: (B, G) int64 generated items in generation order, -1 = invalid SID.
        targets: (B,) int64 ground-truth next item (-1 = unknown; exact_match/ranking/semantic then give 0).
        ranker_scores: (B, G) float click probabilities, filled by the RewardActor when a ``ranker`` term is used.
        future: (B, F) int64 the user's next F events after the prompt, the ground truth first, -1 padded
            (None: only the ground truth is known; ``future_match`` then equals ``exact_match``).
        seen: (B, S) int64 items the user interacted with before the prompt, -1 padded (``reward.seen_reward``;
            None: not known, every valid item is scored).
        sanity_items: (B, K) int64 catalog items the ranker scores beside the rollouts and no reward function reads
            (AdaGRPO's sanity test; None: none asked).
    """

    users: torch.Tensor
    history: torch.Tensor
    items: torch.Tensor
    targets: torch.Tensor
    ranker_scores: Optional[torch.Tensor] = None
    future: Optional[torch.Tensor] = None
    seen: Optional[torch.Tensor] = None
    sanity_items: Optional[torch.Tensor] = None

    def validate(self, n_items: int, n_users: Optional[int] = None) -> None:
        """Raise :class:`RewardInputError` on bad shapes or out-of-range ids."""
        if self.items.dim() != 2 or self.items.shape[0] == 0 or self.items.shape[1] == 0:
            raise RewardInputError(f"items: expected a non-empty (B, G) tensor, got shape {tuple(self.items.shape)}")
        B = self.items.shape[0]
        for name, t, dims in (("users", self.users, 1), ("targets", self.targets, 1), ("history", self.history, 2)):
            if t.dim() != dims or t.shape[0] != B:
                raise RewardInputError(f"{name}: expected leading dimension B={B} and {dims} dims, "
                                       f"got shape {tuple(t.shape)}")
        if self.future is not None:
            if self.future.dim() != 2 or self.future.shape[0] != B or self.future.shape[1] == 0:
                raise RewardInputError(f"future: expected a (B={B}, F ≥ 1) tensor, "
                                       f"got shape {tuple(self.future.shape)}")
            known = self.targets >= 0
            if (self.future[known, 0] != self.targets[known]).any():
                raise RewardInputError("future: the first column must be the ground truth (targets)")
        if self.seen is not None and (self.seen.dim() != 2 or self.seen.shape[0] != B):
            raise RewardInputError(f"seen: expected a (B={B}, S) tensor, got shape {tuple(self.seen.shape)}")
        if self.sanity_items is not None and (self.sanity_items.dim() != 2 or self.sanity_items.shape[0] != B
                                              or self.sanity_items.shape[1] == 0 or (self.sanity_items < 0).any()):
            raise RewardInputError(f"sanity_items: expected a (B={B}, K ≥ 1) tensor of catalog items (≥ 0), got "
                                   f"shape {tuple(self.sanity_items.shape)}")
        extra = tuple((n, t) for n, t in (("future", self.future), ("seen", self.seen),
                                          ("sanity_items", self.sanity_items)) if t is not None)
        for name, t in (("items", self.items), ("history", self.history), ("targets", self.targets)) + extra:
            bad = (t < -1) | (t >= n_items)
            if bad.any():
                v = int(t[bad][0])
                raise RewardInputError(f"{name}: unknown item index {v} (catalog has {n_items} items; -1 = none)")
        if n_users is not None and ((self.users < 0) | (self.users >= n_users)).any():
            v = int(self.users[(self.users < 0) | (self.users >= n_users)][0])
            raise RewardInputError(f"users: unknown user index {v} (dataset has {n_users} users)")


@dataclass
class RewardContext:
    """What reward functions may need beyond the request: normalisation mode and item embeddings.

    Attributes:
        ranker_normalize: raw | rank | zscore | topk.
        item_embeddings: (n_items, d) L2-normalised float tensor for ``semantic`` (None if not loaded).
        future_discount: γ of ``future_match`` (the reward of the j-th next event is γ^j).
        ranker_topk: k of ``ranker_normalize: topk`` (the group's k best-scored valid members get 1).
    """

    ranker_normalize: str = "rank"
    item_embeddings: Optional[torch.Tensor] = None
    future_discount: float = 0.5
    ranker_topk: int = 10


class RewardFunction(ABC):
    """One reward term. ``needs_ranker`` tells the actor to run the ranker first; ``needs_target`` that it reads
    the ground truth (a term that does not can reward prompts without one: ``rl.serving_prompts``);
    ``needs_item_embeddings`` that it reads :attr:`RewardContext.item_embeddings` (the run's ``embed`` vectors)."""

    needs_ranker: bool = False
    needs_target: bool = True
    needs_item_embeddings: bool = False

    @abstractmethod
    def __call__(self, inp: RewardInputs, valid: torch.Tensor, ctx: RewardContext) -> torch.Tensor:
        """(B, G) float rewards; entries where ``valid`` is False are ignored (floored by the caller)."""


REWARDS: Registry = Registry("reward function")


@REWARDS.register("ranker")
class RankerReward(RewardFunction):
    needs_ranker = True
    needs_target = False

    def __call__(self, inp, valid, ctx):
        if inp.ranker_scores is None:
            raise RewardInputError("ranker_scores: the 'ranker' reward needs the ranker's scores (run it in a RewardActor)")
        s = inp.ranker_scores
        ok = valid & torch.isfinite(s)
        if ctx.ranker_normalize == "raw":
            return s
        if ctx.ranker_normalize == "rank":
            return torch.where(ok, group_rank_normalize(torch.where(ok, s, torch.zeros_like(s)), ok), s)
        if ctx.ranker_normalize == "zscore":
            return torch.where(ok, group_zscore(torch.where(ok, s, torch.zeros_like(s)), ok), s)
        if ctx.ranker_normalize == "topk":
            return torch.where(ok, group_topk_indicator(s, ok, ctx.ranker_topk), s)
        raise RewardInputError(f"reward.ranker_normalize: {ctx.ranker_normalize!r} is not raw, rank, zscore or topk")


@REWARDS.register("exact_match")
class ExactMatchReward(RewardFunction):
    def __call__(self, inp, valid, ctx):
        return ((inp.items == inp.targets[:, None]) & (inp.targets[:, None] >= 0)).float()


def rank_penalties(g: int) -> torch.Tensor:
    """(G,) MiniOneRec's penalties for wrong items by generation rank: −1/log2(k+2), normalised to sum −1."""
    raw = torch.tensor([1.0 / math.log2(k + 2) for k in range(g)])
    return -raw / raw.sum()


@REWARDS.register("ranking")
class RankingReward(RewardFunction):
    def __call__(self, inp, valid, ctx):
        hit = (inp.items == inp.targets[:, None]) & (inp.targets[:, None] >= 0)
        has = hit.any(1, keepdim=True)
        pen = rank_penalties(inp.items.shape[1]).to(inp.items.device)[None, :].expand_as(hit)
        return torch.where(hit, torch.ones_like(pen), torch.where(has, pen, torch.zeros_like(pen)))


@REWARDS.register("semantic")
class SemanticReward(RewardFunction):
    needs_item_embeddings = True

    def __call__(self, inp, valid, ctx):
        if ctx.item_embeddings is None:
            raise RewardInputError("semantic reward needs item embeddings (RewardActor item_embeddings_path)")
        e = ctx.item_embeddings
        it = e[inp.items.clamp(min=0)]                                   # (B, G, d)
        tg = e[inp.targets.clamp(min=0)][:, None]                        # (B, 1, d)
        cos = (it * tg).sum(-1)
        return torch.where(inp.targets[:, None] >= 0, cos, torch.zeros_like(cos))


@REWARDS.register("future_match")
class FutureMatchReward(RewardFunction):
    def __call__(self, inp, valid, ctx):
        fut = inp.future if inp.future is not None else inp.targets[:, None]
        hit = (inp.items[:, :, None] == fut[:, None, :]) & (fut[:, None, :] >= 0)      # (B, G, F)
        w = ctx.future_discount ** torch.arange(fut.shape[1], dtype=torch.float32, device=inp.items.device)
        return (hit.float() * w).amax(-1)   # weights fall with j: the earliest matching event counts


@dataclass
class RewardOutput:
    """Rewards of one request.

    Attributes:
        rewards: (B, G) float, finite everywhere.
        ranker_scores: (B, G) float ranker probabilities (NaN where invalid / not computed).
        terms: name → (B, G) unweighted term values (for logging).
        n_invalid: invalid SIDs floored. n_nonfinite: non-finite values floored.
        n_seen: valid items the user had already seen, given ``seen_reward``.
    """

    rewards: torch.Tensor
    ranker_scores: Optional[torch.Tensor]
    terms: dict = field(default_factory=dict)
    n_invalid: int = 0
    n_nonfinite: int = 0
    n_seen: int = 0


def seen_mask(items: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
    """(B, G) bool: ``items`` (B, G) that appear in their row of ``seen`` (B, S), -1 padding never matching."""
    return ((items[:, :, None] == seen[:, None, :]) & (seen[:, None, :] >= 0)).any(-1)


class CompositeReward:
    """Σ_k w_k · f_k over the registered functions named in ``weights``; invalid / non-finite → ``floor``; with
    ``seen_reward``, an item the user has already seen gets that reward and stays out of every term (serving bans
    it, so it must not take a rank among the items serving can show)."""

    def __init__(self, weights: dict[str, float], floor: float = -1.0, ctx: Optional[RewardContext] = None,
                 seen_reward: Optional[float] = None) -> None:
        if not weights:
            raise ValueError("reward.functions: at least one reward function is needed")
        for name, w in weights.items():
            if name not in REWARDS:
                raise ValueError(f"reward.functions: unknown reward {name!r}; registered: {REWARDS.names()}")
            if not isinstance(w, (int, float)) or not math.isfinite(w):
                raise ValueError(f"reward.functions.{name}: weight must be a finite number, got {w!r}")
        if not math.isfinite(floor):
            raise ValueError(f"reward.floor must be finite, got {floor}")
        if seen_reward is not None and not math.isfinite(seen_reward):
            raise ValueError(f"reward.seen_reward must be finite or None, got {seen_reward}")
        self.seen_reward = seen_reward
        self.weights = dict(weights)
        self.fns = {n: REWARDS.get(n)() for n in weights}
        self.floor = float(floor)
        self.ctx = ctx or RewardContext()

    @property
    def needs_ranker(self) -> bool:
        return any(f.needs_ranker for f in self.fns.values())

    @property
    def needs_item_embeddings(self) -> bool:
        return any(f.needs_item_embeddings for f in self.fns.values())

    def __call__(self, inp: RewardInputs) -> RewardOutput:
        valid = inp.items >= 0
        seen = (valid & seen_mask(inp.items, inp.seen) if self.seen_reward is not None and inp.seen is not None
                else torch.zeros_like(valid))
        valid = valid & ~seen
        total = torch.zeros(inp.items.shape, dtype=torch.float32, device=inp.items.device)
        terms = {}
        for name, fn in self.fns.items():
            t = fn(inp, valid, self.ctx).float()
            terms[name] = t
            total = total + self.weights[name] * t
        nonfinite = valid & ~torch.isfinite(total)
        n_nf = int(nonfinite.sum())
        if n_nf:
            log.warning("reward: %d non-finite reward(s) replaced by the floor %.3g", n_nf, self.floor)
        rewards = torch.where(valid & torch.isfinite(total), total, torch.full_like(total, self.floor))
        if seen.any():
            rewards = torch.where(seen, torch.full_like(rewards, self.seen_reward), rewards)
        return RewardOutput(rewards, inp.ranker_scores, terms, int((~valid & ~seen).sum()), n_nf, int(seen.sum()))
