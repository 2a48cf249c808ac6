"""Distillation from an item-ID teacher into the SID policy (``sft.distill_from``): pure torch/numpy.

The teacher (a trained SASRec/GRU4Rec of the run) gives, for every training event, a distribution over the
catalog's next item from the history before it (that history's items masked, as at evaluation). Its top-K is
stored once per run (:func:`teacher_targets`). During SFT, each target SID token gets a soft target: the
teacher's mass on the items whose code agrees with the true item's code up to that level, spread over their
next token (:func:`soft_token_targets`), i.e. the teacher's item distribution factorised along the true code
path — the per-level conditional the policy's next-token softmax models. The SFT loss is
``NLL + distill_weight · CE(q, softmax(logits))`` (:func:`distill_loss`). With ``sft.distill_into: item_head``
the teacher's item distribution is the soft target of the item head's full softmax instead
(:func:`head_soft_targets`, :func:`head_distill_loss`); ``both`` adds both terms. A teacher may be a bag of
models (``sft.distill_bag``): its distribution is the softmax of their mean next-item log-probabilities.

Only training events get a target (a user's first event has no history and gets none); valid and test events
are neither targets nor teacher inputs, and the teacher itself is trained on the training split only.
"""

from __future__ import annotations

import numpy as np
import torch

from rl_align.policy.data import events_to_items, left_aligned
from rl_align.policy.item_head import target_items
from rl_align.sid.catalog import SidCatalog


@torch.no_grad()
def teacher_targets(model: torch.nn.Module | list[torch.nn.Module], split: dict, k: int, temperature: float = 1.0,
                    max_rows: int = 4096) -> dict[str, np.ndarray]:
    """The teacher's top-``k`` next items for every training event of the split.

    ``model``: an item-ID recommender with ``score_last`` and ``hparams`` (:class:`rl_align.baselines.base.
    SequenceRecommender`; duck-typed so this layer does not import the baselines package), or a list of them (a
    bag, e.g. seeds of one model): the bag's logits are the mean of its members' next-item log-probabilities.

    Event e = position t ≥ 1 of user u's training part (all but the last two events): each teacher reads the
    ``max_len`` items before it; every item of the user's history before e is masked; probabilities are the
    softmax of logits / ``temperature`` over the unmasked catalog.

    Returns:
        ``items`` (E, k) int32 and ``prob`` (E, k) float32, E = len(split["seq_items"]); rows of events without a
        target (first events, valid/test events) have prob 0.
    """
    models = model if isinstance(model, list) else [model]
    seq, off = np.asarray(split["seq_items"], np.int64), np.asarray(split["seq_offsets"], np.int64)
    E, n_items = seq.size, models[0].hparams["n_items"]
    k = min(k, n_items)
    items, prob = np.zeros((E, k), np.int32), np.zeros((E, k), np.float32)
    for m in models:
        m.eval()
    for u in range(off.size - 1):
        s, n = int(off[u]), int(off[u + 1] - off[u]) - 2  # training part of user u
        for a in range(1, n, max_rows):
            ev = np.arange(a, min(n, a + max_rows))  # positions within the user, each ≥ 1
            logits = _bag_logits(models, seq[s: s + n], ev) / temperature  # (R, n_items)
            r, c = np.nonzero(np.arange(int(ev[-1]))[None, :] < ev[:, None])  # every earlier item of the user
            logits[torch.from_numpy(r), torch.from_numpy(seq[s + c])] = float("-inf")
            p, i = torch.softmax(logits, -1).topk(k, dim=1)
            items[s + ev], prob[s + ev] = i.numpy().astype(np.int32), p.numpy()
    return {"items": items, "prob": prob}


def _bag_logits(models: list[torch.nn.Module], user_items: np.ndarray, ev: np.ndarray) -> torch.Tensor:
    """(R, n_items) next-item logits at positions ``ev`` (R,) of one user's items (n,): one model's own logits, or
    a bag's mean log-probabilities. Each model reads its own ``max_len`` items before each position."""
    out = []
    for m in models:
        L = m.hparams["max_len"]
        pos = ev[:, None] - L + np.arange(L)[None, :]  # (R, L) the L positions before each event
        logits = m.score_last(torch.from_numpy(np.where(pos >= 0, user_items[np.maximum(pos, 0)] + 1, 0)))
        out.append(logits if len(models) == 1 else torch.log_softmax(logits.float(), -1))
    return out[0] if len(out) == 1 else torch.stack(out).mean(0)


def soft_token_targets(events: np.ndarray, n_target: np.ndarray, seq_items: np.ndarray, catalog: SidCatalog,
                       teacher: dict[str, np.ndarray]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Soft targets for the target tokens of a batch cut from ``events`` (M, W) windows (-1 = padding).

    For the target item y of an event with teacher top-K (items i_k, mass p_k), the target of y's code token at
    level l is q_l(v) ∝ Σ_k p_k · [code(i_k)[:l] = code(y)[:l]] · [code(i_k)[l] = v] (the ``<eos>`` level too).

    Returns:
        rows (N,), cols (N,): label positions in the (M, P) batch of ``windows_to_batch`` (the same windows as
        items), only those whose q has mass; q (N, V) float32, rows summing to 1.
    """
    ev = left_aligned(events)  # slot order of windows_to_batch's packed sequence
    W = ev.shape[1]
    first = (ev >= 0).sum(1) - n_target  # first target slot per window
    toks = catalog.tokens  # (n_items, T)
    item = events_to_items(ev, seq_items)
    tl = np.where(ev >= 0, catalog.token_lengths[np.maximum(item, 0)], 0)  # (M, W) tokens per slot
    start = 1 + catalog.n_prefix + np.cumsum(tl, axis=1) - tl  # each slot's first column (after <bos>, user tokens)
    r, j = np.nonzero((ev >= 0) & (np.arange(W)[None, :] >= first[:, None]))  # target slots
    e = ev[r, j]
    keep = teacher["prob"][e].sum(1) > 0
    r, j, e = r[keep], j[keep], e[keep]
    y = toks[item[r, j]]  # (S, T) the true codes
    ti = teacher["items"][e].astype(np.int64)  # (S, K)
    tp = teacher["prob"][e]  # (S, K)
    on_path = np.ones(ti.shape, bool)  # teacher items whose code agrees with y's so far
    rows, cols, qs = [], [], []
    for lev in range(toks.shape[1]):
        at = np.nonzero(lev < tl[r, j])[0]  # target slots with a token at this level
        v = toks[ti[at], lev]  # (S', K) each teacher item's token at this level
        q = torch.zeros(at.size, catalog.vocab_size).scatter_add_(
            1, torch.from_numpy(v), torch.from_numpy(tp[at] * on_path[at]))
        rows.append(r[at]), cols.append(start[r[at], j[at]] + lev), qs.append(q)
        on_path[at] &= v == y[at, lev][:, None]
    rows, cols, q = np.concatenate(rows), np.concatenate(cols), torch.cat(qs)
    mass = q.sum(1)
    ok = (mass > 0).numpy()
    order = np.lexsort((cols[ok], rows[ok]))  # row-major, as the labels
    return (torch.from_numpy(rows[ok][order]), torch.from_numpy(cols[ok][order]),
            (q[ok] / mass[ok, None])[torch.from_numpy(order)])


def distill_loss(logits: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Mean soft cross-entropy −Σ_v q(v) log softmax(logits)(v) at the label positions (rows, cols).

    logits: (M, P, V) of the batch (position t predicts the token at t + 1, as :func:`next_token_loss`);
    rows, cols (N,) label positions; q (N, V). Returns a scalar (0 when N = 0).
    """
    if rows.numel() == 0:
        return logits.sum() * 0.0
    lp = torch.log_softmax(logits[rows.to(logits.device), cols.to(logits.device) - 1].float(), -1)
    return -(q.to(lp.device) * lp).sum(-1).mean()


def head_soft_targets(events: np.ndarray, n_target: np.ndarray, teacher: dict[str, np.ndarray]
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """The teacher's top items and mass for each target of a batch's windows, in the item head's row order
    (:func:`rl_align.policy.item_head.target_items`), for ``sft.distill_into: item_head``.

    events: (M, W) event indices (-1 = none); n_target: (M,). Returns items (T, K) int64 and prob (T, K) float32,
    each row summing to 1, or to 0 for a target the teacher has no distribution for (a user's first event)."""
    ev = target_items(events, n_target).numpy()  # the targets' event indices, in the head's row order
    p = teacher["prob"][ev].astype(np.float32)
    mass = p.sum(1, keepdims=True)
    return torch.from_numpy(teacher["items"][ev].astype(np.int64)), torch.from_numpy(p / np.maximum(mass, 1e-12))


def head_distill_loss(logp: torch.Tensor, items: torch.Tensor, prob: torch.Tensor) -> torch.Tensor:
    """Mean soft cross-entropy −Σ_k prob_k · logp[items_k] of the item head over the targets the teacher covers.

    logp: (T, n_items) the head's log-softmax at the targets' first-code positions; items (T, K) int64, prob (T, K)
    (:func:`head_soft_targets`). Returns a scalar (0 when no row has mass)."""
    prob = prob.to(logp.device)
    covered = prob.sum(1) > 0
    if not bool(covered.any()):
        return logp.sum() * 0.0
    ce = -(prob * logp.gather(1, items.to(logp.device))).sum(1)
    return ce[covered].mean()
