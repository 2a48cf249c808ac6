"""Retrieval losses of SCI over in-batch candidates, and the symmetric (input-swap) objective.

A loss takes query vectors q (B, d), the positive items' vectors p (B, d), unit-norm, and the positives' item
indices (B,) (a row's in-batch "negative" that is the same item as its positive is not a negative), plus the
log sampling probability of each positive (B,) for the logQ correction. Losses register by name in
``RETRIEVAL_LOSSES`` (one function + one ``@RETRIEVAL_LOSSES.register``).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from rl_align.utils.registry import Registry

RetrievalLoss = Callable[..., torch.Tensor]
RETRIEVAL_LOSSES: Registry[RetrievalLoss] = Registry("retrieval loss")


def _same_item(items: torch.Tensor) -> torch.Tensor:
    """(B,) → (B, B) bool: column j holds row i's own positive item (diagonal included)."""
    return items[:, None] == items[None, :]


@RETRIEVAL_LOSSES.register("hinge")
def hinge_loss(q: torch.Tensor, p: torch.Tensor, items: torch.Tensor, log_q: torch.Tensor, margin: float = 0.2,
               temperature: float = 0.05) -> torch.Tensor:
    """SCI's base loss: mean over in-batch negatives j of max(0, δ − S(q, p⁺) + S(q, p_j)), S = cosine."""
    s = q @ p.T  # (B, B)
    pos = s.diagonal()[:, None]
    neg = ~_same_item(items)
    viol = F.relu(margin - pos + s) * neg
    return viol.sum() / neg.sum().clamp_min(1)


@RETRIEVAL_LOSSES.register("softmax")
def softmax_loss(q: torch.Tensor, p: torch.Tensor, items: torch.Tensor, log_q: torch.Tensor, margin: float = 0.2,
                 temperature: float = 0.05) -> torch.Tensor:
    """In-batch sampled softmax with the logQ correction (Yi et al. 2019): logits S/τ − log Q(item); duplicates of
    a row's positive are removed from its denominator."""
    logits = (q @ p.T) / temperature - log_q[None, :]
    dup = _same_item(items) & ~torch.eye(items.shape[0], dtype=torch.bool, device=items.device)
    logits = logits.masked_fill(dup, float("-inf"))
    return F.cross_entropy(logits, torch.arange(items.shape[0], device=items.device))


def symmetric_loss(model, inputs: torch.Tensor, targets: torch.Tensor, log_q: torch.Tensor, loss: str,
                   swap_weight: float, margin: float, temperature: float) -> tuple[torch.Tensor, dict]:
    """L(f_q(Q), f_i(I)) + λ · L(f_i(Q), f_q(I)): the same loss with the inputs swapped through the towers.

    Every position of a window is a query (the items up to it) whose positive is the next item; all positives of
    the batch are the in-batch candidates.

    Args:
        model: a :class:`rl_align.retrieval.towers.DualTower`.
        inputs: (B, L) windows (item + 1, 0 = pad, right-aligned). targets: (B, L) next item index, -1 = none.
        log_q: (n_items,) log sampling probability of each item (logQ correction).
    Returns:
        the total loss and its two terms (floats) for logging.
    """
    fn = RETRIEVAL_LOSSES.get(loss)
    keep = targets >= 0
    items = targets[keep]  # (P,)
    pos_tok = (items + 1)[:, None]  # (P, 1) each positive as a 1-item sequence
    kw = dict(margin=margin, temperature=temperature)
    base = fn(model.query_prefixes(inputs)[keep], model.item(pos_tok), items, log_q[items], **kw)
    if swap_weight == 0:
        return base, {"base": float(base.detach()), "swap": 0.0}
    swap = fn(model.item_prefixes(inputs)[keep], model.query(pos_tok), items, log_q[items], **kw)
    return base + swap_weight * swap, {"base": float(base.detach()), "swap": float(swap.detach())}
