"""Log-probs of continuations under a causal LM, with the same positions the rollout engines use."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rl_align.sid.catalog import EOS, PAD


def continuation_logprobs(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor,
                          cont: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log π(cont_t | prompt, cont_<t) for every continuation token.

    Args:
        model: a HF causal LM (or a wrapper whose ``forward`` takes ``input_ids/attention_mask/position_ids``).
        prompt_ids: (N, P) left-padded prompts. prompt_mask: (N, P).
        cont: (N, T) continuation tokens (SID + ``<eos>``), right-padded with ``<pad>``.
    Returns:
        logp (N, T) float32 (0 at padding) and mask (N, T) float32 (1 for real tokens, through the first ``<eos>``).
    """
    N, P = prompt_ids.shape
    T = cont.shape[1]
    # real continuation tokens: everything up to and including the first <eos>
    is_eos = cont == EOS
    after = (is_eos.cumsum(1) - is_eos.long()) > 0
    cmask = ((cont != PAD) & ~after).long()
    ids = torch.cat([prompt_ids, torch.where(cmask.bool(), cont, torch.full_like(cont, PAD))], 1)
    mask = torch.cat([prompt_mask, cmask], 1)
    pos = (mask.cumsum(1) - 1).clamp(min=0)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits[:, P - 1: P + T - 1].float()
    logp = F.log_softmax(logits, -1).gather(2, cont.clamp(min=0)[..., None]).squeeze(-1)
    m = cmask.float()
    return logp * m, m
