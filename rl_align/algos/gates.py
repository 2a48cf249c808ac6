"""AdaGRPO's per-sample gate ``c(x) = difficulty(x) ∧ discriminability(x)``, computed from rollouts with no gradient.

*Difficulty* — the policy is uncertain on x:
  ``gt_rank``: rank of the ground truth y* among {y*} ∪ rollouts by policy log-prob (1 = the policy prefers y*
  to every rollout); difficult when rank > ``k_d``. y* outranked by at least k_d rollouts means the policy's
  mass is elsewhere.
  ``entropy``: normalised entropy of the rollout group's item distribution (0 = all G rollouts the same item,
  1 = all distinct); difficult when > ``h_d``. With beam rollouts every item is distinct and this is always 1.
  ``policy_entropy``: normalised entropy of the policy's own distribution over the group's distinct valid items,
  ``softmax`` of their sequence log-probs, divided by log G (0 = one item holds all the mass, 1 = uniform over G);
  difficult when > ``h_d``. It needs no y* and reads the log-probs, so it also separates confident from uncertain
  beam groups and gates serving prompts.
*Discriminability* — the ranker separates y* from the rollouts that are not y*:
  ``frac_below``: share of those negatives scored below y* ≥ ``a``;
  ``margin``: score(y*) − max negative score ≥ ``m``.
A sample with no valid negative (every rollout is y* or invalid) is not discriminable: GRPO has nothing to learn.
Nor is one whose reward scores every negative exactly as it scores y* (a reward without signal there, e.g. a model
that lost the user's features): ties count half in ``frac_below``, so without this rule ``a`` ≤ 0.5 would admit it.
*Sanity* (``sanity_negatives`` K > 0; off by default) — the reward knows y* from K random catalog items: the share
  of them scored below y* ≥ ``sanity_a``. The rollout negatives are items the policy likes, which a good reward
  likes too, so y* sits near the middle of them under a true reward and under an inverted one alike; against random
  items a true reward puts y* near the top and an inverted one near the bottom (a reward broken for some users).
A prompt without y* (``targets == -1``, a serving prompt) passes every test that needs y* (gt_rank, frac_below,
margin, sanity): the reward is the only signal it has; the entropy tests need no y* and still apply.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from rl_align.algos.diagnostics import discriminability


@dataclass
class GateConfigLike:
    """The fields the gate reads (``rl_align.config.AdaGrpoConfig`` provides them)."""

    difficulty: str = "gt_rank"
    k_d: int = 1
    h_d: float = 0.5
    discriminability: str = "frac_below"
    a: float = 0.5
    m: float = 0.0
    sanity_negatives: int = 0
    sanity_a: float = 0.5


def gt_rank(gt_logp: torch.Tensor, rollout_logp: torch.Tensor, rollout_items: torch.Tensor,
            targets: torch.Tensor) -> torch.Tensor:
    """(B,) 1 + number of rollouts that are not y* with a higher policy log-prob than y*.

    Args:
        gt_logp: (B,) log π(y*|x). rollout_logp: (B, G) log π(o|x). rollout_items: (B, G). targets: (B,).
    """
    other = rollout_items != targets[:, None]
    return 1 + ((rollout_logp > gt_logp[:, None]) & other).sum(1)


def _sorted_runs(rollout_items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each group's items sorted (B, G), the sort order (B, G), and (B, G) bool: the first copy of each item."""
    srt, order = rollout_items.sort(1)
    first = torch.ones_like(srt, dtype=torch.bool)
    first[:, 1:] = srt[:, 1:] != srt[:, :-1]
    return srt, order, first


def _normalised_entropy(p: torch.Tensor, G: int) -> torch.Tensor:
    """(B,) entropy of each row of the (B, G) distributions ``p`` (float64, zeros allowed), divided by log G."""
    h = -(p * torch.where(p > 0, p.log(), torch.zeros_like(p))).sum(1)
    return (h / torch.log(torch.tensor(float(G), dtype=torch.float64))).float()


def group_entropy(rollout_items: torch.Tensor) -> torch.Tensor:
    """(B,) entropy of each group's empirical item distribution, divided by log G (invalid SIDs count as one item)."""
    B, G = rollout_items.shape
    _, _, first = _sorted_runs(rollout_items)
    run_id = first.cumsum(1) - 1                                  # (B, G) index of each distinct item
    counts = torch.zeros(B, G, dtype=torch.float64, device=rollout_items.device)
    counts.scatter_add_(1, run_id, torch.ones_like(counts))
    return _normalised_entropy(counts / G, G)


def policy_entropy(rollout_logp: torch.Tensor, rollout_items: torch.Tensor) -> torch.Tensor:
    """(B,) entropy of ``softmax`` over each group's distinct valid items' log-probs, divided by log G.

    Args:
        rollout_logp: (B, G) policy sequence log-prob of each rollout. rollout_items: (B, G), -1 invalid.
    Returns 0 for a group with at most one distinct valid item.
    """
    srt, order, first = _sorted_runs(rollout_items)
    keep = first & (srt >= 0)                                     # one copy of each valid item
    lp = rollout_logp.gather(1, order).double().masked_fill(~keep, -float("inf"))
    p = torch.softmax(lp.masked_fill(~keep.any(1, keepdim=True), 0.0), 1) * keep
    return _normalised_entropy(p, rollout_items.shape[1])


@dataclass
class GateResult:
    """Per-sample gate and its two diagnostics, each (B,).

    Attributes:
        gate: float 0/1, c(x). difficult / discriminable / sane: bool. difficulty_value / disc_value /
        sanity_value: the statistic each test thresholded (NaN for discriminability without negatives, for sanity
        when it is off or the prompt has no y*).
    """

    gate: torch.Tensor
    difficult: torch.Tensor
    discriminable: torch.Tensor
    difficulty_value: torch.Tensor
    disc_value: torch.Tensor
    sane: Optional[torch.Tensor] = None
    sanity_value: Optional[torch.Tensor] = None


def random_negatives(targets: np.ndarray, n_items: int, k: int, seed: int,
                     weights: Optional[np.ndarray] = None) -> np.ndarray:
    """(B, k) int64 catalog items drawn per prompt, never the prompt's y* (``targets`` (B,), -1 = none).

    Uniform over the catalog, or with ``weights`` (n_items,) ≥ 0 (e.g. training popularity) in proportion to them:
    an item of weight 0 is never drawn, and a draw that hit y* is drawn again (at most 64 rounds, then uniform)."""
    rng = np.random.default_rng(seed)
    if weights is not None:
        return _weighted_negatives(targets, np.asarray(weights, np.float64), n_items, k, rng)
    y = np.where(targets >= 0, targets, 0)[:, None]
    off = rng.integers(1, n_items, size=(len(targets), k)) if n_items > 1 else np.zeros((len(targets), k), int)
    draw = np.where(targets[:, None] >= 0, (y + off) % n_items, rng.integers(0, n_items, size=(len(targets), k)))
    return draw.astype(np.int64)


def _weighted_negatives(targets: np.ndarray, w: np.ndarray, n: int, k: int,
                        rng: np.random.Generator) -> np.ndarray:
    """(B, k) draws in proportion to ``w`` (n,), resampled where they equal the row's y*."""
    if w.shape != (n,) or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"sanity weights: expected ({n},) finite, ≥ 0 and not all 0, got shape {w.shape}")
    cdf = np.cumsum(w)
    cdf /= cdf[-1]   # exactly 1 at the last item of weight > 0, so trailing 0-weight items are never drawn
    draw = np.minimum(np.searchsorted(cdf, rng.random((len(targets), k)), side="right"), n - 1)
    for _ in range(64):
        hit = draw == targets[:, None]
        if not hit.any():
            break
        draw[hit] = np.minimum(np.searchsorted(cdf, rng.random(int(hit.sum())), side="right"), n - 1)
    hit = draw == targets[:, None]   # y* holds (nearly) all the weight: fall back to uniform for those draws
    if hit.any() and n > 1:
        draw[hit] = (draw[hit] + rng.integers(1, n, size=int(hit.sum()))) % n
    return draw.astype(np.int64)


def sanity_test(cfg, gt_score: torch.Tensor, sanity_scores: Optional[torch.Tensor],
                known: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,) sane, (B,) share of the random items scored below y* (ties half): every prompt passes when the test is
    off (``sanity_negatives`` 0 or no scores) and a prompt without y* passes (its value NaN).

    Args:
        gt_score: (B,) reward score of y*. sanity_scores: (B, K) scores of K random items. known: (B,) y* given.
    """
    nan = torch.full_like(gt_score, float("nan"), dtype=torch.float64)
    if not getattr(cfg, "sanity_negatives", 0) or sanity_scores is None or sanity_scores.shape[1] == 0:
        return torch.ones_like(known), nan
    v = discriminability(gt_score.double(), sanity_scores.double()).frac_below
    return (v >= cfg.sanity_a) | ~known, torch.where(known, v, nan)


@torch.no_grad()
def adagrpo_gate(cfg, gt_logp: torch.Tensor, rollout_logp: torch.Tensor, rollout_items: torch.Tensor,
                 targets: torch.Tensor, gt_score: torch.Tensor, rollout_scores: torch.Tensor,
                 sanity_scores: Optional[torch.Tensor] = None) -> GateResult:
    """c(x) for B samples.

    Args:
        cfg: difficulty / k_d / h_d / discriminability / a / m / sanity_* (see the module doc).
        gt_logp: (B,) policy log-prob of y*. rollout_logp: (B, G) policy log-prob of each rollout.
        rollout_items: (B, G) item of each rollout (-1 invalid). targets: (B,) y*.
        gt_score: (B,) ranker score of y*. rollout_scores: (B, G) ranker scores (ignored where invalid or = y*).
        sanity_scores: (B, K) ranker scores of K random items (:func:`random_negatives`), for the sanity test.
    """
    if cfg.difficulty == "gt_rank":
        dv = gt_rank(gt_logp, rollout_logp, rollout_items, targets).float()
        difficult = dv > cfg.k_d
    elif cfg.difficulty == "entropy":
        dv = group_entropy(rollout_items)
        difficult = dv > cfg.h_d
    elif cfg.difficulty == "policy_entropy":
        dv = policy_entropy(rollout_logp, rollout_items)
        difficult = dv > cfg.h_d
    elif cfg.difficulty == "none":
        dv = torch.zeros_like(gt_logp)
        difficult = torch.ones_like(gt_logp, dtype=torch.bool)
    else:
        raise ValueError(f"adagrpo.difficulty: {cfg.difficulty!r} is not gt_rank, entropy, policy_entropy or none")
    neg = (rollout_items >= 0) & (rollout_items != targets[:, None])
    scores = torch.where(neg, rollout_scores, torch.zeros_like(rollout_scores))
    d = discriminability(gt_score.double(), scores.double(), neg)
    has = (d.n_neg > 0) & (neg & (scores != gt_score[:, None].to(scores.dtype))).any(1)   # a negative, not all tied
    if cfg.discriminability == "frac_below":
        vv = d.frac_below
        disc = has & (torch.nan_to_num(vv, nan=-1.0) >= cfg.a)
    elif cfg.discriminability == "margin":
        vv = d.margin
        disc = has & (torch.nan_to_num(vv, nan=-float("inf")) >= cfg.m)
    elif cfg.discriminability == "none":
        vv = torch.ones_like(gt_logp, dtype=torch.float64)
        disc = torch.ones_like(has)
    else:
        raise ValueError(f"adagrpo.discriminability: {cfg.discriminability!r} is not frac_below, margin or none")
    known = targets >= 0   # a prompt without y* (rl.serving_prompts): a test that needs y* passes, its statistic NaN
    if cfg.difficulty == "gt_rank":
        difficult, dv = difficult | ~known, torch.where(known, dv, torch.full_like(dv, float("nan")))
    if cfg.discriminability != "none":
        disc, vv = disc | ~known, torch.where(known, vv, torch.full_like(vv, float("nan")))
    sane, sv = sanity_test(cfg, gt_score, sanity_scores, known)
    gate = (difficult & disc & sane).float()
    return GateResult(gate, difficult, disc, dv.float(), vv.float(), sane, sv.float())
