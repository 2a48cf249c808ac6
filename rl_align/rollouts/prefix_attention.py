"""Shared-prefix ("cascade") attention for decoding many continuations of one prompt.

Beam search and group sampling decode ``B`` continuations of each prompt. The
usual way (HF ``generate``, and our engine before this file) copies the
prompt's KV cache into every one of the ``B`` rows, and every decode step then
reads ``B`` identical copies of it. Here the prompt KV is kept once per prompt
and each decode step splits attention in two:

* prompt part: the ``B`` queries of a prompt attend to its one prompt KV as a
  batched ``(B·g) × P`` matmul per prompt (``g`` = query heads per KV head);
* generated part: each row attends to its own few generated positions.

Both parts share one softmax (scores are concatenated before normalising), so
the result equals ordinary attention over the replicated cache up to float
rounding. Beam reordering only permutes the generated part.

The attention function is registered with transformers' ``AttentionInterface``
under :data:`ATTN_NAME`; when a forward call carries no ``prefix_cache`` it is
plain SDPA, so a model switched to it trains and scores exactly as before.
"""

from __future__ import annotations

import torch
from transformers import AttentionInterface, DynamicCache
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

ATTN_NAME = "rl_align_shared_prefix"


class SharedPrefixCache(DynamicCache):
    """KV cache of ``N`` prompts decoded ``reps`` times each.

    The inherited layers hold the generated positions only, ``(N·reps, Hkv, t, d)``
    (row ``n·reps + b`` is continuation ``b`` of prompt ``n``); the prompt KV is
    held once per prompt.

    Args:
        prompt_cache: the prefill cache; layer keys/values ``(N, Hkv, P, d)``.
        prompt_mask: ``(N, P)`` 1 for real prompt tokens, 0 for left padding.
        reps: continuations per prompt.
        config: the model config (sizes the inherited layers).
    """

    def __init__(self, prompt_cache: DynamicCache, prompt_mask: torch.Tensor, reps: int, config) -> None:
        super().__init__(config=config)
        self.prefix_keys = [layer.keys for layer in prompt_cache.layers]
        self.prefix_values = [layer.values for layer in prompt_cache.layers]
        self.reps = int(reps)
        # additive mask (N, 1, 1, P): 0 on prompt tokens, -inf on left padding
        neg = torch.finfo(self.prefix_keys[0].dtype).min
        self.prefix_bias = torch.zeros(prompt_mask.shape, dtype=self.prefix_keys[0].dtype,
                                       device=prompt_mask.device).masked_fill(prompt_mask == 0, neg)[:, None, None, :]

    def reorder(self, rows: torch.Tensor) -> None:
        """Keep generated rows ``rows`` (a beam permutation; rows stay within their prompt's block)."""
        for layer in self.layers:
            if getattr(layer, "is_initialized", False) and layer.keys.numel():
                layer.keys = layer.keys[rows]
                layer.values = layer.values[rows]


def shared_prefix_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                            attention_mask, dropout: float = 0.0, scaling: float | None = None, **kwargs):
    """Attention over prompt KV (once per prompt) + generated KV (per row); SDPA without a ``prefix_cache``.

    Args:
        query: ``(R, H, 1, d)``, R = N·reps. key, value: the generated part ``(R, Hkv, t, d)``.
        kwargs["prefix_cache"]: the :class:`SharedPrefixCache` of this forward call.

    Returns:
        ``(R, 1, H, d)`` attention output (the layout HF attention functions return) and ``None``.
    """
    cache = kwargs.get("prefix_cache")
    if cache is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    if query.shape[2] != 1:
        raise ValueError(f"shared-prefix attention decodes one token per step, got {query.shape[2]}")
    i = module.layer_idx
    kp, vp = cache.prefix_keys[i], cache.prefix_values[i]  # (N, Hkv, P, d)
    N, Hkv, P, d = kp.shape
    R, H = query.shape[0], query.shape[1]
    B, g, t = cache.reps, H // Hkv, key.shape[2]
    scale = scaling if scaling is not None else d ** -0.5
    q = query.view(N, B, Hkv, g, d).transpose(1, 2)                                # (N, Hkv, B, g, d)
    s_pre = (q.reshape(N, Hkv, B * g, d) @ kp.transpose(-1, -2)) * scale           # (N, Hkv, B·g, P)
    s_pre = s_pre + cache.prefix_bias
    kg = key.view(N, B, Hkv, t, d).transpose(1, 2)                                 # (N, Hkv, B, t, d)
    s_gen = (q @ kg.transpose(-1, -2)) * scale                                      # (N, Hkv, B, g, t)
    s = torch.cat([s_pre, s_gen.reshape(N, Hkv, B * g, t)], -1)
    w = torch.softmax(s.float(), -1).to(q.dtype)                                   # (N, Hkv, B·g, P + t)
    out = w[..., :P] @ vp                                                           # (N, Hkv, B·g, d)
    vg = value.view(N, B, Hkv, t, d).transpose(1, 2)                               # (N, Hkv, B, t, d)
    out = out.view(N, Hkv, B, g, d) + w[..., P:].reshape(N, Hkv, B, g, t) @ vg    # (N, Hkv, B, g, d)
    return out.permute(0, 2, 1, 3, 4).reshape(R, 1, H, d), None


AttentionInterface.register(ATTN_NAME, shared_prefix_attention)
AttentionMaskInterface.register(ATTN_NAME, sdpa_mask)


def enable(model) -> bool:
    """Switch an SDPA model to shared-prefix decoding (same results elsewhere); False if it uses another kernel."""
    impl = getattr(model.config, "_attn_implementation", None)
    if impl == ATTN_NAME:
        return True
    if impl != "sdpa" or not all(hasattr(m, "layer_idx") for m in model.modules() if m.__class__.__name__.endswith(
            "Attention")):
        return False
    model.set_attn_implementation(ATTN_NAME)
    return True
