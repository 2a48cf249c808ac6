"""Policy-gradient and likelihood losses over SID sequences (pure torch, no Ray, no model code).

Shapes: ``B`` prompts, ``G`` rollouts per prompt, ``T`` generated tokens per
sequence (SID tokens + ``<eos>``, right-padded). Rollout tensors are flattened
to ``(B*G, T)`` in prompt-major order (rows ``b*G … b*G+G-1`` belong to prompt b).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim=None) -> torch.Tensor:
    """Mean of ``x`` over ``mask`` (same shape); 0 where nothing is masked in."""
    m = mask.to(x.dtype)
    if dim is None:
        return (x * m).sum() / m.sum().clamp(min=1)
    return (x * m).sum(dim) / m.sum(dim).clamp(min=1)


def group_advantages(rewards: torch.Tensor, eps: float = 1e-6, scale: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """GRPO advantages ``(r − mean_g) / (std_g + eps)`` within each group.

    Args:
        rewards: (B, G) float.
        scale: divide by the group std (Dr. GRPO-style ``False`` keeps only the centring).
    Returns:
        (advantages (B, G), zero_groups (B,) bool — every member got the same reward, so no signal).
    """
    if rewards.dim() != 2 or rewards.shape[1] < 2:
        raise ValueError(f"group_advantages: expected (B, G ≥ 2) rewards, got {tuple(rewards.shape)}")
    mean = rewards.mean(1, keepdim=True)
    std = rewards.std(1, keepdim=True, unbiased=False)
    adv = rewards - mean
    if scale:
        adv = adv / (std + eps)
    zero = (rewards.max(1).values - rewards.min(1).values).abs() <= 1e-12
    return torch.where(zero[:, None], torch.zeros_like(adv), adv), zero


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimator of KL(π‖π_ref): ``exp(ref − logp) − (ref − logp) − 1`` (≥ 0, unbiased)."""
    d = (ref_logp - logp).clamp(-20, 20)
    return torch.exp(d) - d - 1


def group_sequence_logp(token_logp: torch.Tensor, mask: torch.Tensor, group_size: int) -> torch.Tensor:
    """(B, G) sequence log-probs of each prompt's G rollouts from (B*G, T) per-token log-probs and their mask."""
    return (token_logp * mask).sum(1).view(-1, group_size)


def sequence_nll(logp: torch.Tensor, mask: torch.Tensor, per: str = "sequence") -> torch.Tensor:
    """Negative log-likelihood of target sequences.

    Args:
        logp: (N, T) log-prob of each target token. mask: (N, T) 1 for real tokens.
        per: "sequence" → (N,) mean NLL per token of each sequence; "sum" → (N,) summed.
    """
    if per == "sum":
        return -(logp * mask).sum(1)
    return -masked_mean(logp, mask, dim=1)


@dataclass
class GrpoTerms:
    """Per-sequence pieces of the GRPO objective, each (B*G,) unless noted.

    Attributes:
        pg: clipped policy-gradient loss per sequence (aggregated over its tokens).
        kl: k3 KL per sequence (0 when no reference).
        clip_frac: share of tokens where the ratio was clipped.
        n_tokens: real tokens per sequence.
        ratio_dev: Σ over the sequence's tokens of |ratio − 1| (0 on policy: behaviour log-probs = current ones,
            as in the first update pass of a step when both engines return the policy's raw log-probs).
    """

    pg: torch.Tensor
    kl: torch.Tensor
    clip_frac: torch.Tensor
    n_tokens: torch.Tensor
    ratio_dev: torch.Tensor


def grpo_terms(logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, mask: torch.Tensor,
               clip_eps: float = 0.2, ref_logp: torch.Tensor | None = None,
               clip_eps_high: float | None = None) -> GrpoTerms:
    """PPO-clip terms per sequence with a sequence-level advantage broadcast over its tokens.

    Args:
        logp: (N, T) current log-probs of the rollout tokens (with grad). old_logp: (N, T) behaviour log-probs.
        adv: (N,) advantage of each sequence. mask: (N, T).
        clip_eps / clip_eps_high: ratio clipped to [1 − clip_eps, 1 + clip_eps_high (default clip_eps)].
        ref_logp: (N, T) reference-model log-probs for the KL term, or None.
    Returns:
        :class:`GrpoTerms` with per-sequence *sums* over tokens (aggregation happens in :func:`aggregate`).
    """
    hi = clip_eps if clip_eps_high is None else clip_eps_high
    m = mask.to(logp.dtype)
    ratio = torch.exp((logp - old_logp).clamp(-20, 20))
    a = adv[:, None]
    surr = torch.minimum(ratio * a, ratio.clamp(1 - clip_eps, 1 + hi) * a)
    pg = -(surr * m).sum(1)
    clipped = ((ratio < 1 - clip_eps) | (ratio > 1 + hi)).to(logp.dtype) * m
    kl = (k3_kl(logp, ref_logp) * m).sum(1) if ref_logp is not None else torch.zeros_like(pg)
    n = m.sum(1)
    dev = ((ratio.detach() - 1).abs() * m).sum(1)
    return GrpoTerms(pg, kl, clipped.sum(1) / n.clamp(min=1), n, dev)


def aggregate(per_seq_sum: torch.Tensor, n_tokens: torch.Tensor, weights: torch.Tensor, level: str) -> torch.Tensor:
    """Turn per-sequence token sums into one scalar.

    Args:
        per_seq_sum: (N,) summed over each sequence's tokens. n_tokens: (N,). weights: (N,) per-sequence
            weights (e.g. the AdaGRPO gate; 0 drops a sequence).
        level: "token" — Σ w·sum / Σ n_tokens (every token counts the same, DAPO-style);
               "sequence" — mean over sequences of w·sum/n_tokens (GRPO's original 1/|o| per sequence).
            In both, a sequence with weight 0 adds nothing to the numerator but stays in the denominator, so
            gating scales each sample's contribution exactly as ``c(x) · L(x)`` does.
    """
    if level == "token":
        return (weights * per_seq_sum).sum() / n_tokens.sum().clamp(min=1)
    if level == "sequence":
        return (weights * per_seq_sum / n_tokens.clamp(min=1)).sum() / max(per_seq_sum.shape[0], 1)
    raise ValueError(f"aggregation level must be 'token' or 'sequence', got {level!r}")
