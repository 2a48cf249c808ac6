"""Preference objectives, registered beside the RL ones: ``dpo``, ``sdpo``, ``simpo``, ``rad_dpo``.

Each reads ``LossInputs.pref`` (a prompt's positives and negatives, :mod:`rl_align.algos.preference`) and
``rl.preference`` (β, γ, RAD-DPO's switches). Pairs come from ``rl-align dpo build-pairs``
(:mod:`rl_align.preferences`); the controller puts them in the step's batch instead of rollouts.
"""

from __future__ import annotations

import torch

from rl_align.algos.objectives import OBJECTIVES, LossInputs, Objective
from rl_align.algos.preference import (
    RdrwWeights,
    listwise_loss,
    pair_mask,
    pairwise_loss,
    positives_nll,
    sequence_scores,
    tlgd_scores,
)


class PreferenceObjective(Objective):
    """Common parts: no rollouts; the candidates' implicit rewards; the optional SFT term on positives."""

    uses_rollouts = False
    uses_preferences = True
    normalize = False          # length-normalised scores (SimPO-style)
    default_sft_weight = 0.0   # rl.preference.sft_weight when None

    def rewards(self, x: LossInputs) -> torch.Tensor:
        """(B, K) β·(s − s_ref) with a reference, else β·s (s normalised by length when ``normalize``)."""
        p, beta = x.pref, self.cfg.preference.beta
        s = sequence_scores(p.logp, p.mask, self.normalize)
        if self.needs_reference:
            s = s - sequence_scores(p.ref_logp, p.mask, self.normalize)
        return beta * s

    def finish(self, x: LossInputs, pref_loss: torch.Tensor, m: dict) -> tuple[torch.Tensor, dict]:
        """``pref_loss`` + sft_weight · NLL of the positives, with the shared metrics."""
        nll = positives_nll(x.pref)
        w = self.cfg.preference.sft_weight
        w = self.default_sft_weight if w is None else w
        loss = pref_loss + w * nll if w > 0 else pref_loss
        with torch.no_grad():
            r = self.rewards(x)
            pairs = pair_mask(x.pref, True)
            acc = ((r[:, :, None] > r[:, None, :]) & pairs).sum() / pairs.sum().clamp(min=1)
        m.update({"pref_loss": float(pref_loss.detach()), "nll": float(nll.detach()), "pref_accuracy": float(acc),
                  "n_pairs": float(pairs.sum())})
        return loss, m


@OBJECTIVES.register("dpo")
class DpoObjective(PreferenceObjective):
    """−log σ(r_w − r_l − margin) for y* against each negative, r = β·(log π − log π_ref), margin 0."""

    needs_reference = True

    def margin(self) -> float:
        return 0.0

    def __call__(self, x):
        r = self.rewards(x)
        pairs = pair_mask(x.pref, False)
        return self.finish(x, pairwise_loss(r[:, :, None] - r[:, None, :] - self.margin(), pairs), {})


@OBJECTIVES.register("sdpo")
class SdpoObjective(PreferenceObjective):
    """S-DPO: −log σ(−log Σ_l exp(r_l − r_w)) for y* against all its negatives, r = β·(log π − log π_ref)."""

    needs_reference = True

    def __call__(self, x):
        r = self.rewards(x)
        return self.finish(x, listwise_loss(r, r[:, None, :], pair_mask(x.pref, False)), {})


@OBJECTIVES.register("simpo")
class SimpoObjective(DpoObjective):
    """SimPO: DPO's pairwise loss on r = β·log π / |y| (no reference model) with the target margin γ."""

    needs_reference = False
    normalize = True

    def margin(self) -> float:
        return self.cfg.preference.gamma


@OBJECTIVES.register("rad_dpo")
class RadDpoObjective(PreferenceObjective):
    """RAD-DPO: listwise, reference-free, length-normalised scores with TLGD, RDRW, MLGC and the global SFT term,
    each switchable in ``rl.preference`` (see :mod:`rl_align.algos.preference`)."""

    normalize = True
    default_sft_weight = 1.0

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        pc = cfg.preference
        self.rdrw = RdrwWeights(pc.rdrw_buffer, pc.rdrw_min_weight) if pc.rdrw else None
        self.needs_hidden = pc.rdrw

    def __call__(self, x):
        pc, p = self.cfg.preference, x.pref
        r_w = pc.beta * sequence_scores(p.logp, p.mask, True)                  # (B, K)
        if pc.tlgd:
            r_l = pc.beta * tlgd_scores(p, True)                               # (B, K, K): l against w
        else:
            r_l = r_w[:, None, :]
        pairs = pair_mask(p, pc.mlgc)
        m = {}
        log_w = None
        if self.rdrw is not None:
            w = self.rdrw(p.hidden, pairs)
            log_w = w.log()
            m["rdrw_weight_mean"] = float(w[pairs].mean()) if pairs.any() else 1.0
        return self.finish(x, listwise_loss(r_w + pc.gamma, r_l, pairs, log_w), m)

    def state_dict(self) -> dict:
        return self.rdrw.state_dict() if self.rdrw is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.rdrw is not None and state:
            self.rdrw.load_state_dict(state)
