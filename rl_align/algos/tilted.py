"""``tilted``: distil the reward-tilted policy over each rollout group (pure torch).

The KL-regularised RL optimum is ``π*(y|x) ∝ π_ref(y|x) · exp(α · logit r(x, y))`` (α = 1/β). Restricted to a
prompt's G rollouts it is a distribution the learner can match directly instead of climbing towards it by policy
gradient: the reward ceiling (``rl-align ranker eval``) measures exactly this re-ranking of the policy's beam, so
with beam rollouts this objective trains the policy towards its ceiling. Loss per prompt:

    NLL(y*|x) + λ · c(x) · CE(q, softmax_g log π_θ(y_g|x)),   q = softmax_g (log π_ref(y_g|x) + α · logit r_g)

with invalid rollouts out of both softmaxes and ``c(x)`` the AdaGRPO gate when ``rl.tilt_gate`` is on (1 otherwise).
With ``rl.tilt_topk: k`` the target is uniform over the k members q ranks highest: the re-ranked top-k list, in
which the member at place k weighs as much as the head (the soft q puts almost all its mass on the first few).
``r`` is the reward model's calibrated click probability of each rollout (``rollout_scores``), not the shaped GRPO
reward. The target is fixed (it uses the frozen starting policy), so repeated steps do not compound the tilt.
"""

from __future__ import annotations

import torch

from rl_align.algos.diagnostics import tilted_scores
from rl_align.algos.gates import adagrpo_gate
from rl_align.algos.losses import group_sequence_logp
from rl_align.algos.objectives import OBJECTIVES, LossInputs, Objective


def tilted_targets(ref_lp: torch.Tensor, scores: torch.Tensor, valid: torch.Tensor, alpha: float) -> torch.Tensor:
    """q over each group: (B, G) ``softmax(ref_lp + α · logit scores)`` over valid members (0 elsewhere).

    Args:
        ref_lp: (B, G) sequence log-probs under the reference policy. scores: (B, G) probabilities in (0, 1).
        valid: (B, G) bool. Rows without a valid member come back all zero.
    """
    q = torch.softmax(tilted_scores(ref_lp, scores, valid, alpha), dim=1)
    return torch.nan_to_num(q, nan=0.0).to(ref_lp.dtype)


def topk_targets(q: torch.Tensor, k: int) -> torch.Tensor:
    """(B, G) uniform over the ``k`` members of each group with the largest ``q`` (fewer when fewer have q > 0);
    all-zero rows stay zero. Ties are broken by position (the rollout order)."""
    k = min(k, q.shape[1])
    top = torch.topk(q, k, dim=1).indices
    mask = torch.zeros_like(q, dtype=torch.bool).scatter_(1, top, True) & (q > 0)
    m = mask.to(q.dtype)
    return m / m.sum(1, keepdim=True).clamp(min=1)


def group_cross_entropy(seq_lp: torch.Tensor, q: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(B,) ``−Σ_g q_g · log softmax_g(seq_lp)`` over the valid members of each group.

    Args:
        seq_lp: (B, G) policy sequence log-probs (with grad). q: (B, G) target (rows sum to 1 or are all zero).
    """
    logz = torch.logsumexp(seq_lp.masked_fill(~valid, float("-inf")), dim=1, keepdim=True)
    log_pi = (seq_lp - logz).masked_fill(~valid, 0.0)
    return -(q * log_pi).sum(1)


@OBJECTIVES.register("tilted")
class TiltedObjective(Objective):
    """NLL anchor + λ · (gated) cross-entropy to the reward-tilted reference over each rollout group."""

    needs_ranker = True
    needs_reference = True
    target_free = True

    def __call__(self, x: LossInputs) -> tuple[torch.Tensor, dict]:
        nll = self.nll(x)
        G = x.rewards.shape[1]
        seq_lp = group_sequence_logp(x.roll_logp, x.roll_mask, G)
        with torch.no_grad():
            ref_lp = group_sequence_logp(x.roll_ref_logp, x.roll_mask, G)
            valid = x.rollout_items >= 0
            q = tilted_targets(ref_lp, x.rollout_scores, valid, self.cfg.tilt_alpha)
            if self.cfg.tilt_topk:
                q = topk_targets(q, self.cfg.tilt_topk)
            usable = valid.sum(1) >= 2
            w = usable.to(seq_lp.dtype)
            m = {}
            if self.cfg.tilt_gate:
                gt_lp = (x.gt_logp * x.gt_mask).sum(1)
                old_lp = group_sequence_logp(x.roll_old_logp, x.roll_mask, G)
                gate = adagrpo_gate(self.cfg.adagrpo, gt_lp, old_lp, x.rollout_items, x.targets, x.target_scores,
                                    x.rollout_scores, x.sanity_scores)
                w = w * gate.gate.to(w.dtype)
                m["admission_rate"] = float(gate.gate.mean())
        ce = group_cross_entropy(seq_lp, q, valid)
        tilt = (ce * w).sum() / usable.sum().clamp(min=1)
        with torch.no_grad():
            ent = -(q * torch.log(q.clamp(min=1e-30))).sum(1)
            top_agree = (seq_lp.masked_fill(~valid, float("-inf")).argmax(1) == q.argmax(1)).float()
            m.update({"nll": float(nll.detach()), "tilt_ce": float(tilt.detach()),
                      "tilt_kl": float(((ce - ent) * usable).sum() / usable.sum().clamp(min=1)),
                      "tilt_top1_agree": float(top_agree[usable].mean()) if usable.any() else 0.0,
                      "reward_mean": float(x.rewards.mean())})
        return nll + self.cfg.lam * tilt, m
