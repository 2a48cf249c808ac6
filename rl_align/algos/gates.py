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
A prompt without y* (``targets == -1``, a serving prompt) passes every test that needs y* (gt_rank, frac_below,
margin): the reward is the only signal it has; the entropy tests need no y* and still apply.
"""

from __future__ import annotations

from dataclasses import dataclass

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
        gate: float 0/1, c(x). difficult / discriminable: bool. difficulty_value / disc_value: the statistic
        each test thresholded (NaN for discriminability without negatives).
    """

    gate: torch.Tensor
    difficult: torch.Tensor
    discriminable: torch.Tensor
    difficulty_value: torch.Tensor
    disc_value: torch.Tensor


@torch.no_grad()
def adagrpo_gate(cfg, gt_logp: torch.Tensor, rollout_logp: torch.Tensor, rollout_items: torch.Tensor,
                 targets: torch.Tensor, gt_score: torch.Tensor, rollout_scores: torch.Tensor) -> GateResult:
    """c(x) for B samples.

    Args:
        cfg: difficulty / k_d / h_d / discriminability / a / m (see the module doc).
        gt_logp: (B,) policy log-prob of y*. rollout_logp: (B, G) policy log-prob of each rollout.
        rollout_items: (B, G) item of each rollout (-1 invalid). targets: (B,) y*.
        gt_score: (B,) ranker score of y*. rollout_scores: (B, G) ranker scores (ignored where invalid or = y*).
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
    gate = (difficult & disc).float()
    return GateResult(gate, difficult, disc, dv.float(), vv.float())
