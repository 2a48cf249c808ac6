"""Rank with the SID policy and its item head together (``policy.item_head``): generative ∪ dense candidates.

For each prompt the candidates are the constrained beam's items and the item head's ``union`` best unseen items;
every candidate is scored by ``log π(SID) + β · log softmax_head(item)``, with ``log π`` the raw sequence log-prob
of the item's SID + ``<eos>`` teacher-forced (the beam's own definition) and the head read at the prompt's last
position. β is chosen on valid (:func:`choose_beta`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from rl_align.eval.evaluate import EvalSet, metrics, top_unseen
from rl_align.policy.data import build_prompts
from rl_align.policy.item_head import ItemHead
from rl_align.policy.logprobs import item_logprobs
from rl_align.sid.catalog import SidCatalog


@torch.no_grad()
def head_logprobs(model, head: ItemHead, catalog: SidCatalog, history: np.ndarray, users: np.ndarray
                  ) -> torch.Tensor:
    """(N, n_items) float32 log softmax of the item head at each prompt's last position, on the CPU. history: (N, H)
    -1 padded; users: (N,). The state is ``model``'s, or the head's own trunk's when it carries one."""
    ids, mask = build_prompts(history, catalog, users)
    pos = (mask.cumsum(1) - 1).clamp(min=0)
    trunk = head.trunk if head.trunk is not None else model
    device = next(trunk.parameters()).device
    h = trunk.model(input_ids=ids.to(device), attention_mask=mask.to(device),
                    position_ids=pos.to(device)).last_hidden_state[:, -1]
    return torch.log_softmax(head(h).float(), -1).cpu()


@torch.no_grad()
def fused_candidates(model, head: ItemHead, catalog: SidCatalog, history: np.ndarray, users: np.ndarray,
                     seen: np.ndarray | None, beam: np.ndarray, beam_scores: np.ndarray, union: int, top_k: int,
                     batch_size: int = 128) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The candidates of one batch of prompts and their two scores, before any β.

    Args:
        history: (b, H) -1 padded; users: (b,); seen: (b, S) items to mask in the head's ranking (None = none).
        beam: (b, B) the constrained beam's distinct items (-1 = empty); beam_scores: (b, B) their raw log π.
        union: the head's best unseen items that join the beam's (only those the beam did not reach).
        top_k: how many of the head's own best unseen items to return.
    Returns:
        cand (b, B + union) items (-1 = none), log π (b, B + union) (-inf = none; the head's items teacher-forced, the
        beam's own definition), log softmax_head (b, B + union) at each candidate (0 where none), and the head's top
        (b, top_k).
    """
    d = head_logprobs(model, head, catalog, history, users)                             # (b, n_items)
    top = top_unseen(d.clone(), seen, max(union, top_k))[0].numpy()
    extra = top[:, :union]
    extra = np.where((extra[:, :, None] == beam[:, None, :]).any(-1), -1, extra)       # not reached by the beam
    cand = np.concatenate([beam, extra], 1)
    forced = (item_logprobs(model, catalog, history, users, extra, batch_size) if union
              else np.empty(extra.shape))
    lp = np.concatenate([np.where(beam >= 0, beam_scores, -np.inf), forced], 1)
    dc = np.where(cand >= 0, np.take_along_axis(d.numpy(), np.maximum(cand, 0), 1), 0.0)
    return cand, lp, dc, top[:, :top_k]


def hybrid_rankings(model, head: ItemHead, catalog: SidCatalog, es: EvalSet, beam_ranked: np.ndarray,
                    beam_scores: np.ndarray, union: int, betas: Sequence[float], exclude_history: bool = True,
                    batch_size: int = 128) -> tuple[dict[float, np.ndarray], np.ndarray]:
    """Fused rankings for every β, and the item head's own ranking.

    The beam's items keep the log π the beam computed; only the head's items the beam did not reach are
    teacher-forced (:func:`fused_candidates`).

    Args:
        beam_ranked: (N, B) the constrained beam's distinct items (-1 = empty), best first; beam_scores: (N, B) their
            raw sequence log-probs.
        union: how many of the head's best unseen items join the beam's as candidates (0 = re-score the beam only).
    Returns:
        ({β: (N, B) items best first, -1 = empty}, (N, B) the head's own top items).
    """
    n, B = beam_ranked.shape
    fused = {b: np.full((n, B), -1, np.int64) for b in betas}
    dense = np.full((n, B), -1, np.int64)
    was_training = model.training
    model.eval()
    for s in range(0, n, batch_size):
        sl = slice(s, s + batch_size)
        cand, lp, dc, top = fused_candidates(model, head, catalog, es.history[sl], es.users[sl],
                                             es.seen[sl] if exclude_history else None, beam_ranked[sl],
                                             beam_scores[sl], union, B, batch_size)
        dense[sl, :top.shape[1]] = top
        for b in betas:
            score = np.where(cand >= 0, lp + b * dc, -np.inf)
            order = np.argsort(-score, 1, kind="stable")[:, :B]
            fused[b][sl, :order.shape[1]] = np.where(np.isfinite(np.take_along_axis(score, order, 1)),
                                                     np.take_along_axis(cand, order, 1), -1)
    model.train(was_training)
    return fused, dense


def best_beta(ndcg: dict[float, float]) -> float:
    """The β of the best valid NDCG@10 (ties: the smaller β), from ``{β: NDCG@10}``."""
    return max(sorted(ndcg), key=lambda b: (ndcg[b], -b))


def valid_record(beam: tuple[float, float], fused: dict[float, tuple[float, float]]) -> dict:
    """A validation record of a policy with an item head (SFT and alignment): the fused list's HR@10 / NDCG@10 at
    the β of :func:`best_beta`, that β, and the beam's own figures. beam, fused[β]: (HR@10, NDCG@10)."""
    beta = best_beta({b: v[1] for b, v in fused.items()})
    return {"valid_hr@10": fused[beta][0], "valid_ndcg@10": fused[beta][1], "item_head_beta": float(beta),
            "valid_beam_hr@10": beam[0], "valid_beam_ndcg@10": beam[1]}


@dataclass
class BetaChoice:
    """β chosen on valid: the fused ranking with the best valid NDCG@10 (ties: the smaller β)."""

    beta: float
    valid: dict[str, dict[str, float]]  # "β" -> valid HR@10 / NDCG@10 of that β
    at_edge: bool = False  # the largest β of a grid of several won: a larger one may do better (widen the grid)


def choose_beta(rankings: dict[float, np.ndarray], targets: np.ndarray) -> BetaChoice:
    """Pick β by valid NDCG@10 from :func:`hybrid_rankings`' fused lists of the valid set (targets: (N,))."""
    table = {b: metrics(r, targets, [10]) for b, r in sorted(rankings.items())}
    best = best_beta({b: m["ndcg@10"] for b, m in table.items()})
    return BetaChoice(beta=best, valid={f"{b:g}": m for b, m in table.items()},
                      at_edge=len(table) > 1 and best == max(table))
