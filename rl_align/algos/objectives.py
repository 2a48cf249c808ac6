"""The alignment objectives, behind a registry: ``nll``, ``grpo``, ``mixture``, ``adagrpo`` (pure torch).

Every objective maps one :class:`LossInputs` (a micro-batch of prompts with
their ground truth and G rollouts) to a scalar loss and a dict of metrics:

* ``nll``      — ``NLL(y*|x)`` (continued SFT);
* ``grpo``     — ``L_GRPO`` (group-normalised advantages, clipped ratio, optional k3 KL with weight β);
* ``mixture``  — ``NLL + λ · L_GRPO`` for every sample;
* ``adagrpo``  — ``NLL + λ · c(x) · L_GRPO`` with the gate ``c`` of :mod:`rl_align.algos.gates`.

With ``rl.reward_tilt: α > 0`` the GRPO term's rewards are each group's rank of ``log π_ref(y) + α · logit r(y)``
(:func:`tilted_rewards`) instead of the reward functions' values: the reward ceiling's re-ranked order, which keeps
the starting policy's own knowledge in the reward instead of asking the policy to climb to the ranker's order alone.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Optional

import torch

from rl_align.algos.diagnostics import group_rank_normalize, tilted_scores
from rl_align.algos.gates import adagrpo_gate
from rl_align.algos.losses import aggregate, group_advantages, group_sequence_logp, grpo_terms, sequence_nll
from rl_align.algos.preference import PreferenceInputs
from rl_align.utils.registry import Registry

OBJECTIVES: Registry = Registry("alignment objective")


@dataclass
class LossInputs:
    """One micro-batch. B prompts, G rollouts each, T rollout tokens, Tg ground-truth tokens.

    Attributes:
        gt_logp: (B, Tg) log π(y*_t | x, y*_<t) with grad. gt_mask: (B, Tg).
        roll_logp: (B*G, T) log π of rollout tokens with grad. roll_old_logp: (B*G, T) behaviour log-probs
            (the rollout engine's, no grad). roll_mask: (B*G, T).
        roll_ref_logp: (B*G, T) reference-policy log-probs, or None (β = 0).
        rewards: (B, G). rollout_items: (B, G) (-1 invalid). targets: (B,).
        target_scores: (B,) ranker score of y*. rollout_scores: (B, G) ranker scores (NaN where invalid).
        sanity_scores: (B, K) ranker scores of K random catalog items (AdaGRPO's sanity test), or None.
        pref: the candidates of preference objectives (:class:`~rl_align.algos.preference.PreferenceInputs`).
    """

    gt_logp: torch.Tensor
    gt_mask: torch.Tensor
    roll_logp: Optional[torch.Tensor] = None
    roll_old_logp: Optional[torch.Tensor] = None
    roll_mask: Optional[torch.Tensor] = None
    roll_ref_logp: Optional[torch.Tensor] = None
    rewards: Optional[torch.Tensor] = None
    rollout_items: Optional[torch.Tensor] = None
    targets: Optional[torch.Tensor] = None
    target_scores: Optional[torch.Tensor] = None
    rollout_scores: Optional[torch.Tensor] = None
    sanity_scores: Optional[torch.Tensor] = None
    pref: Optional[PreferenceInputs] = None


class Objective(ABC):
    """A loss over :class:`LossInputs`.

    Class attributes tell the controller what a step needs: ``uses_rollouts`` (generate and score G rollouts per
    prompt at all), ``needs_ranker`` (the ranker's scores of y* and of the rollouts, e.g. for a gate),
    ``uses_preferences`` (positive/negative candidates from the run's preference pairs instead of rollouts) and
    ``needs_reference`` (the learner keeps a frozen copy of the starting policy for reference log-probs) and
    ``needs_hidden`` (end-of-SID hidden states of the candidates, e.g. for RAD-DPO's RDRW weights), ``uses_grpo``
    (its loss has the GRPO term :meth:`grpo`, whose rewards ``rl.reward_tilt`` may re-rank) and
    ``target_free`` (it learns from prompts without a ground truth, ``targets == -1``: ``rl.serving_prompts``).
    """

    uses_rollouts = True
    uses_grpo = False
    target_free = False
    needs_ranker = False
    uses_preferences = False
    needs_reference = False
    needs_hidden = False

    def __init__(self, cfg) -> None:
        self.cfg = cfg
        if self.uses_grpo and cfg.reward_tilt > 0:
            self.needs_reference = True  # the tilted rewards rank by log π_ref

    @classmethod
    def config_errors(cls, cfg) -> list[tuple[str, str]]:
        """(rl field, what was expected) for settings this objective cannot train with; checked at load time."""
        errs = []
        if cls.uses_rollouts and cfg.group_size < 2:
            errs.append(("group_size", f"must be ≥ 2 for group-normalised advantages, got {cfg.group_size}"))
        if cfg.serving_prompts > 0 and not cls.target_free:
            errs.append(("serving_prompts", f"{cfg.algo} learns only from y*; serving prompts have none (use grpo, "
                                            "mixture, adagrpo or tilted, or set it to 0)"))
        if cfg.reward_tilt > 0 and not cls.uses_grpo:
            errs.append(("reward_tilt", f"re-ranks GRPO rewards; {cfg.algo} has no GRPO term (use grpo, mixture or "
                                        "adagrpo, or set it to 0)"))
        return errs

    @abstractmethod
    def __call__(self, x: LossInputs) -> tuple[torch.Tensor, dict]:
        """(scalar loss, metrics of python floats)."""

    def state_dict(self) -> dict:
        """State the objective carries between steps (kept in learner checkpoints); none by default."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    # shared pieces -----------------------------------------------------------
    def nll(self, x: LossInputs) -> torch.Tensor:
        """Mean NLL(y*|x) over the prompts that have a y* (serving prompts, ``targets == -1``, have none)."""
        per = sequence_nll(x.gt_logp, x.gt_mask)
        if x.targets is None:
            return per.mean()
        known = (x.targets >= 0).to(per.dtype)
        return (per * known).sum() / known.sum().clamp(min=1)

    def grpo(self, x: LossInputs, weights: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, dict]:
        rewards = tilted_rewards(x, self.cfg.reward_tilt) if self.cfg.reward_tilt > 0 else x.rewards.float()
        adv, zero = group_advantages(rewards, scale=self.cfg.scale_advantages)
        if self.cfg.negative_advantage_scale != 1.0:  # damp the push-down of below-mean rollouts
            adv = torch.where(adv < 0, adv * self.cfg.negative_advantage_scale, adv)
        B, G = x.rewards.shape
        t = grpo_terms(x.roll_logp, x.roll_old_logp, adv.reshape(-1), x.roll_mask, self.cfg.clip_eps,
                       x.roll_ref_logp, self.cfg.clip_eps_high)
        w = torch.ones(B, device=adv.device) if weights is None else weights
        w_seq = w.repeat_interleave(G).to(t.pg.dtype)
        pg = aggregate(t.pg, t.n_tokens, w_seq, self.cfg.aggregation)
        kl = aggregate(t.kl, t.n_tokens, w_seq, self.cfg.aggregation)
        loss = pg + self.cfg.beta * kl
        m = {"grpo_pg": float(pg.detach()), "kl": float(kl.detach()), "clip_frac": float(t.clip_frac.mean()),
             "ratio_abs_dev": float(t.ratio_dev.sum() / t.n_tokens.sum().clamp(min=1)),
             "zero_adv_groups": float(zero.sum()), "zero_adv_share": float(zero.float().mean()),
             "adv_abs_mean": float(adv.abs().mean()), "reward_mean": float(rewards.mean()),
             "reward_std": float(rewards.std(unbiased=False))}
        return loss, m


@torch.no_grad()
def tilted_rewards(x: LossInputs, alpha: float) -> torch.Tensor:
    """(B, G) float: each valid rollout's rank in its group (0..1, best 1) by ``log π_ref(y) + α · logit r(y)``
    (:func:`~rl_align.algos.diagnostics.tilted_scores`); invalid rollouts get 0. Needs ``roll_ref_logp``
    (B*G, T) and ``rollout_scores`` (B, G)."""
    if x.roll_ref_logp is None or x.rollout_scores is None:
        raise ValueError("rl.reward_tilt needs the reference log-probs and the ranker's rollout scores")
    ref_lp = group_sequence_logp(x.roll_ref_logp, x.roll_mask, x.rewards.shape[1])
    valid = (x.rollout_items >= 0) & torch.isfinite(x.rollout_scores)
    return group_rank_normalize(tilted_scores(ref_lp, x.rollout_scores, valid, alpha), valid).float()


@OBJECTIVES.register("nll")
class NllObjective(Objective):
    uses_rollouts = False

    def __call__(self, x):
        loss = self.nll(x)
        return loss, {"nll": float(loss.detach())}


@OBJECTIVES.register("grpo")
class GrpoObjective(Objective):
    uses_grpo = True
    target_free = True
    def __call__(self, x):
        loss, m = self.grpo(x)
        with torch.no_grad():
            m["nll"] = float(self.nll(x))
        return loss, m


@OBJECTIVES.register("mixture")
class MixtureObjective(Objective):
    uses_grpo = True
    target_free = True
    def __call__(self, x):
        nll = self.nll(x)
        g, m = self.grpo(x)
        m["nll"] = float(nll.detach())
        return nll + self.cfg.lam * g, m


@OBJECTIVES.register("adagrpo")
class AdaGrpoObjective(Objective):
    uses_grpo = True
    target_free = True
    needs_ranker = True

    def __call__(self, x):
        nll = self.nll(x)
        G = x.rewards.shape[1]
        with torch.no_grad():
            gt_lp = (x.gt_logp * x.gt_mask).sum(1)
            roll_lp = group_sequence_logp(x.roll_old_logp, x.roll_mask, G)
            gate = adagrpo_gate(self.cfg.adagrpo, gt_lp, roll_lp, x.rollout_items, x.targets, x.target_scores,
                                x.rollout_scores, x.sanity_scores)
        g, m = self.grpo(x, gate.gate)
        m.update({"nll": float(nll.detach()), "admission_rate": float(gate.gate.mean()),
                  "fail_difficulty": float((~gate.difficult).float().mean()),
                  "fail_discriminability": float((~gate.discriminable).float().mean()),
                  "fail_sanity": float((~gate.sane).float().mean()),
                  "difficulty_values": gate.difficulty_value.tolist(),
                  "disc_values": gate.disc_value.tolist()})
        return nll + self.cfg.lam * g, m


def build_objective(cfg) -> Objective:
    """The objective named ``cfg.algo`` (see the module doc)."""
    return OBJECTIVES.get(cfg.algo)(cfg)
