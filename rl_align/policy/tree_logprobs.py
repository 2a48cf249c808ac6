"""Log-probs of many token sequences per prompt in one forward: the sequences' shared prefixes form a tree, and each
tree node is one input token that attends to the prompt and to its own ancestors (tree attention).

:func:`rl_align.policy.logprobs.sequence_logprobs` teacher-forces K sequences per prompt by repeating the prompt's
KV cache K times, so it costs K · T token positions and K copies of the cache. When the K sequences are the same for
every prompt and share prefixes (the cold-start mixture's routes: every SID parent or bucket code that holds a new
item, ``eval.cold_routes: all``), the distinct prefixes are far fewer: the M internal nodes of their prefix tree. One
forward of those M tokens on top of the prompt's cache, with a custom (N, 1, M, P + M) mask, gives every node's
next-token distribution, and a sequence's log-prob is the sum of its tokens' log-probs along its path. Positions are
those of :func:`rl_align.policy.logprobs.grouped_continuation_logprobs` (a node at depth d sits at the prompt's
length + d), so both give the same values to float rounding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from rl_align.policy.data import build_prompts
from rl_align.policy.logprobs import _cache_kwarg, _real_tokens
from rl_align.policy.model import attention_mask_for
from rl_align.sid.catalog import SidCatalog


@dataclass(frozen=True)
class PrefixTree:
    """The distinct prefixes of K token sequences, one node each, parents before children.

    Attributes:
        token: (M,) int64 the node's last token. parent: (M,) int64 its parent node (-1: the prompt).
        depth: (M,) int64 0 for a first token. end: (K,) int64 the node that ends sequence k (-1: an empty sequence,
            log-prob 0). feed: (F,) int64 the internal nodes (those with children), fed to the model in this order.
        slot: (M,) int64 the position in ``feed`` of node m's parent (-1: the prompt).
    """

    token: np.ndarray
    parent: np.ndarray
    depth: np.ndarray
    end: np.ndarray
    feed: np.ndarray
    slot: np.ndarray

    @classmethod
    def build(cls, seqs: np.ndarray) -> "PrefixTree":
        """Tree of (K, T) token sequences: real tokens through the first ``<eos>``, ``<pad>`` after."""
        real = _real_tokens(torch.from_numpy(np.asarray(seqs, np.int64))).numpy()
        node_of: dict[tuple[int, ...], int] = {}
        token, parent, depth, end = [], [], [], np.full(len(seqs), -1, np.int64)
        for k, row in enumerate(np.asarray(seqs, np.int64).tolist()):
            up = -1
            for d in range(int(real[k].sum())):
                key = tuple(row[: d + 1])
                if key not in node_of:
                    node_of[key] = len(token)
                    token.append(row[d]), parent.append(up), depth.append(d)
                up = node_of[key]
            end[k] = up
        parent_a = np.array(parent, np.int64)
        feed = np.unique(parent_a[parent_a >= 0])
        pos = np.full(len(token), -1, np.int64)
        pos[feed] = np.arange(feed.size)
        slot = np.where(parent_a >= 0, pos[np.maximum(parent_a, 0)], -1)
        return cls(np.array(token, np.int64), parent_a, np.array(depth, np.int64), end, feed, slot)

    def ancestors(self) -> np.ndarray:
        """(F, F) bool: fed node i may attend fed node j (j is i or one of its ancestors)."""
        F_ = self.feed.size
        pos = np.full(self.token.size, -1, np.int64)
        pos[self.feed] = np.arange(F_)
        allowed = np.eye(F_, dtype=bool)
        up = self.parent[self.feed]
        while (up >= 0).any():
            rows = np.flatnonzero(up >= 0)
            allowed[rows, pos[up[rows]]] = True
            up = np.where(up >= 0, self.parent[np.maximum(up, 0)], -1)
        return allowed


@torch.no_grad()
def tree_logprobs(model, catalog: SidCatalog, history: np.ndarray, users: np.ndarray, tree: PrefixTree,
                  max_cells: int = 1 << 24) -> np.ndarray:
    """Raw log π(sequence_k | prompt) of the same K sequences for every prompt, one tree forward per prompt batch.

    Args:
        history: (N, H) prompt histories (-1 padded). users: (N,) user indices. tree: :meth:`PrefixTree.build` of
            the (K, T) sequences. max_cells: mask cells (prompts × F × (P + F)) per forward, the memory bound.
    Returns:
        (N, K) float64, the sum of each sequence's token log-probs through its first ``<eos>`` (0 for an empty one).
    """
    N = history.shape[0]
    out = np.empty((N, tree.end.size))
    device = next(model.parameters()).device
    allowed = torch.from_numpy(tree.ancestors()).to(device)
    inp = torch.from_numpy(tree.token[tree.feed]).to(device)
    depth = torch.from_numpy(tree.depth[tree.feed]).to(device)
    ids, mask = build_prompts(history, catalog, users)                                   # (N, P)
    rows = max(1, max_cells // max(1, tree.feed.size * (ids.shape[1] + tree.feed.size)))
    for s in range(0, N, rows):
        out[s: s + rows] = _tree_batch(model, ids[s: s + rows].to(device), mask[s: s + rows].to(device), tree,
                                       allowed, inp, depth)
    return out


def _tree_batch(model, ids: torch.Tensor, mask: torch.Tensor, tree: PrefixTree, allowed: torch.Tensor,
                inp: torch.Tensor, depth: torch.Tensor) -> np.ndarray:
    """(B, P) prompts → (B, K) sequence log-probs: the prompt forward (its cache), then the F fed nodes in one
    forward under the tree mask; node m's token log-prob is read from its parent's (or the prompt's) distribution."""
    B, P = ids.shape
    res = model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(1) - 1).clamp(min=0), use_cache=True)
    dists = [F.log_softmax(res.logits[:, -1].float(), -1)[:, None]]                     # (B, 1, V): the prompt's
    if tree.feed.size:
        cache = res.cache if getattr(res, "cache", None) is not None else res.past_key_values
        full = torch.cat([mask.bool()[:, None, None, :].expand(B, 1, tree.feed.size, P),
                          allowed[None, None].expand(B, 1, -1, -1)], 3)                  # (B, 1, F, P + F)
        pos = mask.sum(1, keepdim=True) + depth[None]                                    # (B, F)
        nodes = model(input_ids=inp[None].expand(B, -1), attention_mask=attention_mask_for(model, full),
                      position_ids=pos, use_cache=False, **{_cache_kwarg(model): cache})
        dists.append(F.log_softmax(nodes.logits.float(), -1))                            # (B, F, V)
    dist = torch.cat(dists, 1)                                                           # (B, 1 + F, V)
    at = torch.from_numpy(tree.slot + 1).to(ids.device)                                  # (M,) 0 = the prompt
    edge = dist[:, at, torch.from_numpy(tree.token).to(ids.device)].double().cpu().numpy()   # (B, M), no (B, M, V) copy
    cum = np.zeros_like(edge)
    for d in range(int(tree.depth.max()) + 1 if tree.depth.size else 0):                # parents before children
        m = np.flatnonzero(tree.depth == d)
        up = tree.parent[m]
        cum[:, m] = edge[:, m] + np.where(up >= 0, cum[:, np.maximum(up, 0)], 0.0)
    return np.where(tree.end >= 0, cum[:, np.maximum(tree.end, 0)], 0.0)
