"""Log-probs of continuations under a causal LM, with the same positions the rollout engines use."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from rl_align.policy.data import build_prompts
from rl_align.sid.catalog import EOS, PAD, SidCatalog


def continuation_logprobs(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor,
                          cont: torch.Tensor, return_hidden: bool = False):
    """log π(cont_t | prompt, cont_<t) for every continuation token.

    Args:
        model: a HF causal LM (or a wrapper whose ``forward`` takes ``input_ids/attention_mask/position_ids``).
        prompt_ids: (N, P) left-padded prompts. prompt_mask: (N, P).
        cont: (N, T) continuation tokens (SID + ``<eos>``), right-padded with ``<pad>``.
        return_hidden: also return (N, d) the last layer's hidden state at each continuation's last SID token (the
            position that predicts ``<eos>``: RAD-DPO's end-of-SID representation).
    Returns:
        logp (N, T) float32 (0 at padding) and mask (N, T) float32 (1 for real tokens, through the first ``<eos>``)
        [, hidden (N, d)].
    """
    N, P = prompt_ids.shape
    T = cont.shape[1]
    # real continuation tokens: everything up to and including the first <eos>
    cmask = _real_tokens(cont).long()
    ids = torch.cat([prompt_ids, torch.where(cmask.bool(), cont, torch.full_like(cont, PAD))], 1)
    mask = torch.cat([prompt_mask, cmask], 1)
    pos = (mask.cumsum(1) - 1).clamp(min=0)
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, output_hidden_states=return_hidden)
    logits = out.logits[:, P - 1: P + T - 1].float()
    logp = F.log_softmax(logits, -1).gather(2, cont.clamp(min=0)[..., None]).squeeze(-1)
    m = cmask.float()
    if not return_hidden:
        return logp * m, m
    at = P + (cmask.sum(1) - 2).clamp(min=0)                               # (N,) input position of the last SID token
    hidden = out.hidden_states[-1][torch.arange(N, device=at.device), at]
    return logp * m, m, hidden


def _cache_kwarg(model) -> str:
    """The KV-cache argument of ``model.forward``: ``cache`` (transformers ≥ 5.24) or ``past_key_values``."""
    import inspect

    fwd = getattr(model, "module", model).forward
    return "cache" if "cache" in inspect.signature(fwd).parameters else "past_key_values"


def _real_tokens(cont: torch.Tensor) -> torch.Tensor:
    """(..., T) mask of real continuation tokens: everything through the first ``<eos>``, no ``<pad>``."""
    is_eos = cont == EOS
    after = (is_eos.cumsum(-1) - is_eos.long()) > 0
    return (cont != PAD) & ~after


def grouped_continuation_logprobs(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor,
                                  conts: torch.Tensor, return_hidden: bool = False):
    """log π of K continuations per prompt, running each prompt through the model once (shared KV cache).

    The prompt (≈ history × SID length tokens) dominates a sequence; the K continuations (G rollouts and y*)
    are a few tokens each. Encoding the prompt once and repeating its KV cache K times — gradients flow back
    through the repeat into the prompt — costs ~P + K·T token-forwards instead of K·(P + T). Positions and
    masks are those of :func:`continuation_logprobs`, so both give the same values (to float rounding).

    Args:
        prompt_ids: (N, P) left-padded prompts. prompt_mask: (N, P).
        conts: (N, K, T) continuations (SID + ``<eos>``), right-padded with ``<pad>``; T ≥ 2.
        return_hidden: also return (N, K, d) hidden states at each continuation's last SID token (see
            :func:`continuation_logprobs`).
    Returns:
        logp (N, K, T) float32 (0 at padding) and mask (N, K, T) float32 [, hidden (N, K, d)].
    """
    N, P = prompt_ids.shape
    K, T = conts.shape[1], conts.shape[2]
    real = _real_tokens(conts)                                              # (N, K, T)
    ppos = (prompt_mask.cumsum(1) - 1).clamp(min=0)
    out = model(input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=ppos, use_cache=True)
    first = F.log_softmax(out.logits[:, -1].float(), -1)                    # (N, V): predicts token 0
    lp0 = first.gather(1, conts[:, :, 0].clamp(min=0)).unsqueeze(-1)       # (N, K, 1)
    if T == 1:
        logp = lp0
    else:
        cache = out.cache if getattr(out, "cache", None) is not None else out.past_key_values
        cache.batch_repeat_interleave(K)
        flat = conts.reshape(N * K, T)
        fmask = real.reshape(N * K, T)
        inp = torch.where(fmask, flat, torch.full_like(flat, PAD))[:, : T - 1]
        n_real = prompt_mask.sum(1).repeat_interleave(K)                    # (N·K,)
        pos = n_real[:, None] + torch.arange(T - 1, device=flat.device)[None, :]
        att = torch.cat([prompt_mask.repeat_interleave(K, 0), fmask[:, : T - 1].long()], 1)
        res = model(input_ids=inp, attention_mask=att, position_ids=pos, use_cache=False,
                    output_hidden_states=return_hidden, **{_cache_kwarg(model): cache})
        logits = res.logits.float()                                         # (N·K, T-1, V)
        rest = F.log_softmax(logits, -1).gather(2, flat[:, 1:].clamp(min=0)[..., None]).squeeze(-1)
        logp = torch.cat([lp0, rest.reshape(N, K, T - 1)], -1)
    m = real.float()
    if not return_hidden:
        return logp * m, m
    if T == 1:
        raise ValueError("grouped_continuation_logprobs: return_hidden needs continuations of ≥ 2 tokens")
    at = (fmask.sum(1) - 2).clamp(min=0)                                    # (N·K,) input index of the last SID token
    hidden = res.hidden_states[-1][torch.arange(N * K, device=at.device), at]
    return logp * m, m, hidden.reshape(N, K, -1)


@torch.no_grad()
def sequence_logprobs(model, catalog: SidCatalog, history: np.ndarray, users: np.ndarray, conts: np.ndarray,
                      batch: int = 128) -> np.ndarray:
    """Raw log π(cont | prompt) of K token sequences per prompt, teacher-forced (one prompt forward per row,
    :func:`grouped_continuation_logprobs`): the sum of each sequence's token log-probs through its first ``<eos>``.

    Args:
        history: (N, H) prompt histories (-1 padded). users: (N,) user indices. conts: (N, K, T) token sequences
            (a whole SID with ``<eos>``, or a prefix without), ``<pad>``-padded; an all-pad row sums to 0.
        batch: prompts per forward.
    Returns:
        (N, K) float64.
    """
    out = np.empty(conts.shape[:2])
    device = next(model.parameters()).device  # prompts are built on the CPU; the model may sit on a GPU
    for s in range(0, conts.shape[0], batch):
        ids, mask = build_prompts(history[s:s + batch], catalog, users[s:s + batch])
        lp, m = grouped_continuation_logprobs(model, ids.to(device), mask.to(device),
                                              torch.from_numpy(np.ascontiguousarray(conts[s:s + batch])).to(device))
        out[s:s + batch] = (lp * m).sum(-1).double().cpu().numpy()
    return out


def item_logprobs(model, catalog: SidCatalog, history: np.ndarray, users: np.ndarray, items: np.ndarray,
                  batch: int = 128) -> np.ndarray:
    """Raw sequence log π(item | prompt) of given items: SID + ``<eos>`` teacher-forced, the definition the beams
    and rollouts carry (:func:`sequence_logprobs`).

    Args:
        history: (N, H) prompt histories (-1 padded). users: (N,) user indices. items: (N, K) items per prompt, -1 =
            none.
    Returns:
        (N, K) float64 log-probs, -inf where ``items`` is -1. In a bucket catalog this is the log-prob of the item's
        code (its bucket's), without the within-bucket share an evaluation ranking adds.
    """
    conts = np.full(items.shape + (catalog.tokens.shape[1],), PAD, np.int64)
    ok = items >= 0
    conts[ok] = catalog.tokens[items[ok]]
    return np.where(ok, sequence_logprobs(model, catalog, history, users, conts, batch), -np.inf)
