"""The SFT objective of one batch, pure torch: what the Ray Train worker optimises and what
``benchmarks/bench_device.py`` compares across devices.

``sft_loss`` = NLL of the batch's target tokens (label-smoothed if asked) [+ ``extra(logits)``, e.g. distillation]
[+ ``head_weight`` × the item head's cross-entropy at each target's first-code position]
[+ ``head_extra(head log-probs)``, e.g. distillation into the item head].
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

from rl_align.policy.item_head import ItemHead, item_head_logp, item_head_nll
from rl_align.policy.model import next_token_loss, token_loss
from rl_align.sid.catalog import SidCatalog


def sft_loss(model, batch: dict[str, torch.Tensor], catalog: SidCatalog, head: Optional[ItemHead] = None,
             head_targets: Optional[torch.Tensor] = None, head_weight: float = 1.0, label_smoothing: float = 0.0,
             extra: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
             head_extra: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
             head_seen: Optional[tuple[torch.Tensor, torch.Tensor]] = None) -> torch.Tensor:
    """One batch's SFT loss (a scalar).

    Args:
        model: the causal LM (or its DeepSpeed / DDP engine). batch: ``input_ids`` and ``attention_mask`` (M, P) and
            ``labels`` (M, P) (-100 = ignored), on the model's device; or the packed ``sid.history: items`` batch
            (:func:`rl_align.policy.data.item_history_batch`): ``targets`` (M, P) unshifted instead of ``labels``,
            ``position_ids`` (M, P) and the (M, 1, P, P) additive attention mask
            (:func:`rl_align.policy.model.attention_mask_for`); the head then reads the shared history columns.
        head: the item head, or None. head_targets: (T,) or (T, k) its targets (:func:`item_head_loss`).
        extra: a further term of the (M, P, V) logits, added after the NLL (distillation).
        head_extra: a further term of the head's (T, n_items) log-softmax at the targets' first-code positions
            (:func:`item_head_logp`), added last (distillation into the item head); needs ``head``.
        head_seen: (rows, cols) of the head's rows left out of its softmax (``sft.item_head_seen_mask``,
            :func:`rl_align.policy.item_head.seen_before`); None = the full catalog.
    """
    shifted = "targets" not in batch
    labels = batch["labels" if shifted else "targets"]
    inputs = {k: v for k, v in batch.items() if k not in ("labels", "targets")}
    out = model(**inputs, output_hidden_states=head is not None)
    loss = (next_token_loss if shifted else token_loss)(out.logits, labels, label_smoothing)
    if extra is not None:
        loss = loss + extra(out.logits)
    if head is not None:  # hidden_states[-1]: the last layer after the final norm (what lm_head reads)
        logp = item_head_logp(head, out.hidden_states[-1], labels, catalog, shifted, head_seen)
        loss = loss + head_weight * item_head_nll(logp, head_targets)
        if head_extra is not None:
            loss = loss + head_extra(logp)
    elif head_extra is not None:
        raise ValueError("sft_loss: head_extra needs an item head")
    return loss
