"""Preference losses over SID candidates (pure torch): DPO, S-DPO, SimPO-style scores and RAD-DPO.

One prompt carries K candidates: P positive slots (y* first, then the user's next items for multi-label prompts)
and N negatives; padding slots have ``valid = False``. Shapes: ``B`` prompts, ``K`` candidates, ``T`` SID tokens
(+ ``<eos>``), ``d`` hidden size.

* sequence score s = Σ_t log π (``dpo``, ``sdpo``: implicit reward r = β·(s − s_ref)) or the length-normalised,
  reference-free β·s/|y| (``simpo``, ``rad_dpo``);
* ``dpo``:   mean over (positive w, negative l) of −log σ(r_w − r_l);
* ``sdpo``:  per positive, −log σ(−log Σ_l exp(r_l − r_w))  (softmax DPO over all negatives);
* ``simpo``: mean over pairs of −log σ(r_w − r_l − γ);
* ``rad_dpo``: listwise like S-DPO on reference-free scores, with
  **TLGD** (a negative's tokens on the prefix it shares with the positive count with their value but no gradient),
  **RDRW** (negative l is weighted by w_l ∈ [w_min, 1] from the quantile of cos(h_l, h_w) among recent pairs — the
  most similar get w_min; no gradient), **MLGC** (every positive against all negatives, else y* only) and a
  global SFT term on all positives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F


@dataclass
class PreferenceInputs:
    """One micro-batch of candidates.

    Attributes:
        logp: (B, K, T) log π of each candidate token, with grad (0 at padding). mask: (B, K, T) real tokens.
        tokens: (B, K, T) candidate tokens (for TLGD's shared prefixes).
        positive: (B, K) bool. valid: (B, K) bool (False = padding slot).
        ref_logp: (B, K, T) reference log-probs (no grad) or None. hidden: (B, K, d) end-of-SID hidden states or None.
    """

    logp: torch.Tensor
    mask: torch.Tensor
    tokens: torch.Tensor
    positive: torch.Tensor
    valid: torch.Tensor
    ref_logp: Optional[torch.Tensor] = None
    hidden: Optional[torch.Tensor] = None


def sequence_scores(logp: torch.Tensor, mask: torch.Tensor, normalize: bool) -> torch.Tensor:
    """(…, T) token log-probs → (…,) their sum, or their mean over real tokens when ``normalize``."""
    s = (logp * mask).sum(-1)
    return s / mask.sum(-1).clamp(min=1) if normalize else s


def shared_prefix(tokens: torch.Tensor) -> torch.Tensor:
    """(B, K, K, T) bool: ``out[b, w, l, t]`` = candidates w and l agree on tokens 0..t (their shared prefix)."""
    eq = tokens[:, :, None, :] == tokens[:, None, :, :]
    return eq.long().cumprod(-1).bool()


def tlgd_scores(x: PreferenceInputs, normalize: bool) -> torch.Tensor:
    """(B, K, K) ``out[b, w, l]``: candidate l's score as seen against candidate w — equal in value to l's own
    score, but its tokens on the prefix shared with w are detached (Token-Level Gradient Detachment)."""
    shared = shared_prefix(x.tokens)                                           # (B, K, K, T)
    lp = x.logp[:, None, :, :].expand_as(shared)
    lp = torch.where(shared, lp.detach(), lp)
    return sequence_scores(lp, x.mask[:, None, :, :], normalize)


def pair_mask(x: PreferenceInputs, all_positives: bool) -> torch.Tensor:
    """(B, K, K) bool: (w, l) is a (positive, negative) pair to contrast; w = slot 0 (y*) only unless
    ``all_positives``."""
    pos = x.positive & x.valid
    if not all_positives:
        first = torch.zeros_like(pos)
        first[:, 0] = pos[:, 0]
        pos = first
    neg = ~x.positive & x.valid
    return pos[:, :, None] & neg[:, None, :]


def positives_nll(x: PreferenceInputs) -> torch.Tensor:
    """Mean over positive candidates of −Σ_t log π (the SFT term)."""
    pos = (x.positive & x.valid).float()
    nll = -(x.logp * x.mask).sum(-1)
    return (nll * pos).sum() / pos.sum().clamp(min=1)


def pairwise_loss(margin: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """Mean of −log σ(margin) over ``pairs``. margin, pairs: (B, K, K)."""
    per = F.softplus(-margin)
    return (per * pairs).sum() / pairs.sum().clamp(min=1)


def listwise_loss(r_w: torch.Tensor, r_l: torch.Tensor, pairs: torch.Tensor,
                  log_w: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean over positives w with ≥ 1 negative of −log σ(−log Σ_l w_l·exp(r_l − r_w)) (S-DPO's form).

    Args:
        r_w: (B, K) positive scores. r_l: (B, K, K) negative l's score against w (or (B, 1, K) broadcast).
        pairs: (B, K, K) bool. log_w: (B, K, K) log-weights of the negatives (RDRW) or None.
    """
    z = r_l - r_w[:, :, None]
    if log_w is not None:
        z = z + log_w
    z = z.masked_fill(~pairs, float("-inf"))
    has = pairs.any(-1)                                                        # (B, K)
    lse = torch.logsumexp(z, -1).masked_fill(~has, 0.0)
    per = F.softplus(lse)
    return (per * has).sum() / has.sum().clamp(min=1)


class RdrwWeights:
    """Rank-based weights from hidden-state similarity, over a ring buffer of recent pair similarities.

    A pair (w, l) with cosine c gets weight 1 − (1 − w_min)·q, q = the share of the buffer's similarities ≤ c;
    the batch's own similarities enter the buffer first, so the first batch is ranked against itself.
    """

    def __init__(self, size: int, min_weight: float) -> None:
        self.size, self.min_weight = size, min_weight
        self.buffer = torch.empty(0)

    @torch.no_grad()
    def __call__(self, hidden: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
        """hidden: (B, K, d); pairs: (B, K, K) bool → (B, K, K) weights (1 outside pairs), no gradient."""
        h = F.normalize(hidden.detach().float(), dim=-1)
        cos = h @ h.transpose(1, 2)                                            # (B, K, K)
        new = cos[pairs].cpu()
        self.buffer = torch.cat([self.buffer, new])[-self.size:]
        ref, _ = torch.sort(self.buffer)
        q = torch.searchsorted(ref, cos.cpu().contiguous(), right=True).float() / max(1, ref.numel())
        w = 1.0 - (1.0 - self.min_weight) * q
        return torch.where(pairs.cpu(), w, torch.ones_like(w)).to(hidden.device)

    def state_dict(self) -> dict:
        return {"buffer": self.buffer.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.buffer = state["buffer"].clone().float()
