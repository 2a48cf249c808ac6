"""Reward discriminability diagnostics (pure torch, no Ray).

Given the reward model's scores for a group — the ground-truth item y* and the
negatives (rollouts that are not y*, or sampled items) — these say whether the
ranker separates y* from the rest. AdaGRPO gates its GRPO term on them; the
ranker evaluation reports them by item-popularity bucket.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Discriminability:
    """Per-sample statistics, each a (B,) tensor.

    Attributes:
        frac_below: share of valid negatives scored strictly below y* (ties count half); NaN without negatives.
        margin: score(y*) − max over valid negatives; NaN without negatives.
        mean_margin: score(y*) − mean over valid negatives; NaN without negatives.
        rank: 1 + number of negatives scored above y* (ties count half), 1 = y* is best.
        n_neg: number of valid negatives.
    """

    frac_below: torch.Tensor
    margin: torch.Tensor
    mean_margin: torch.Tensor
    rank: torch.Tensor
    n_neg: torch.Tensor


def discriminability(gt_scores: torch.Tensor, neg_scores: torch.Tensor,
                     neg_mask: torch.Tensor | None = None) -> Discriminability:
    """How well the scores separate the ground truth from the negatives.

    Args:
        gt_scores: (B,) score of y* per sample.
        neg_scores: (B, N) scores of the negatives.
        neg_mask: (B, N) bool, True for negatives that count (e.g. valid SIDs that are not y*); default all.
    Returns:
        :class:`Discriminability` of (B,) tensors.
    Raises:
        ValueError: shapes disagree, or a counted score is NaN/inf (the caller must floor or drop it first).
    """
    if gt_scores.dim() != 1 or neg_scores.dim() != 2 or neg_scores.shape[0] != gt_scores.shape[0]:
        raise ValueError(f"discriminability: expected gt_scores (B,) and neg_scores (B, N), got "
                         f"{tuple(gt_scores.shape)} and {tuple(neg_scores.shape)}")
    if neg_mask is None:
        neg_mask = torch.ones_like(neg_scores, dtype=torch.bool)
    if neg_mask.shape != neg_scores.shape:
        raise ValueError(f"discriminability: neg_mask shape {tuple(neg_mask.shape)} != {tuple(neg_scores.shape)}")
    neg_mask = neg_mask.bool()
    if not torch.isfinite(gt_scores).all() or not torch.isfinite(neg_scores[neg_mask]).all():
        raise ValueError("discriminability: scores contain NaN/inf; floor or drop them before diagnosing")
    g = gt_scores.double()[:, None]
    s = neg_scores.double()
    m = neg_mask.double()
    n = m.sum(1)
    below = ((s < g).double() + 0.5 * (s == g).double()) * m
    above = ((s > g).double() + 0.5 * (s == g).double()) * m
    nan = torch.full_like(n, float("nan"))
    has = n > 0
    frac = torch.where(has, below.sum(1) / n.clamp(min=1), nan)
    mx = torch.where(neg_mask, s, torch.full_like(s, -float("inf"))).max(1).values
    margin = torch.where(has, g[:, 0] - mx, nan)
    mean_margin = torch.where(has, g[:, 0] - (s * m).sum(1) / n.clamp(min=1), nan)
    return Discriminability(frac.to(gt_scores.dtype), margin.to(gt_scores.dtype),
                            mean_margin.to(gt_scores.dtype), 1 + above.sum(1), n.long())


def group_rank_normalize(scores: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Rank of each valid member within its group scaled to [0, 1] (best = 1, ties averaged); invalid → 0.

    Args:
        scores: (B, G) float.
        valid: (B, G) bool.
    Returns:
        (B, G) float; a group with a single valid member gives it 1.
    """
    s = scores.double()
    v = valid.bool()
    vd = v.double()
    lt = ((s[:, None, :] < s[:, :, None]).double() * vd[:, None, :]).sum(-1)     # valid members strictly below
    eq = ((s[:, None, :] == s[:, :, None]).double() * vd[:, None, :]).sum(-1) - 1  # ties, excluding itself
    n = vd.sum(1, keepdim=True)
    r = (lt + 0.5 * eq) / (n - 1).clamp(min=1)
    r = torch.where(n > 1, r, torch.ones_like(r))
    return torch.where(v, r, torch.zeros_like(r)).to(scores.dtype)


def tilted_scores(ref_lp: torch.Tensor, scores: torch.Tensor, valid: torch.Tensor, alpha: float) -> torch.Tensor:
    """(B, G) float64 ``log π_ref(y) + α · logit r(y)`` per rollout, -inf where invalid: the order the reward ceiling
    re-ranks a group by (the log of the KL-regularised optimum π_ref · exp(α · logit r), up to a constant).

    Args:
        ref_lp: (B, G) sequence log-probs under the reference policy. scores: (B, G) probabilities in (0, 1) (NaN
            where invalid). valid: (B, G) bool.
    """
    p = scores.double().clamp(1e-6, 1 - 1e-6)  # NaN (invalid) members are masked below
    return (ref_lp.double() + alpha * (torch.log(p) - torch.log1p(-p))).masked_fill(~valid.bool(), float("-inf"))


def group_topk_indicator(scores: torch.Tensor, valid: torch.Tensor, k: int) -> torch.Tensor:
    """1 for the ``k`` valid members of each group with the highest score, 0 for the rest (HR@k's cut).

    Args:
        scores: (B, G) float.
        valid: (B, G) bool.
        k: places that count; a group with ≤ k valid members gives every one of them 1.
    Returns:
        (B, G) float; ties at the k-th place are broken by position (the rollout order); invalid → 0.
    """
    v = valid.bool()
    k = min(int(k), scores.shape[1])
    key = scores.double().masked_fill(~v, float("-inf"))
    order = torch.sort(key, dim=1, descending=True, stable=True).indices[:, :k]   # stable: ties keep position
    top = torch.zeros_like(v).scatter_(1, order, True) & v
    return top.to(scores.dtype)


def group_zscore(scores: torch.Tensor, valid: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """(scores − mean) / (std + eps) over each group's valid members; invalid → 0. Shapes (B, G)."""
    v = valid.double()
    s = scores.double() * v
    n = v.sum(1, keepdim=True).clamp(min=1)
    mean = s.sum(1, keepdim=True) / n
    var = (((scores.double() - mean) ** 2) * v).sum(1, keepdim=True) / n
    z = (scores.double() - mean) / (var.sqrt() + eps)
    return torch.where(valid.bool(), z, torch.zeros_like(z)).to(scores.dtype)
