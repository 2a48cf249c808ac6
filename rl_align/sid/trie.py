"""A compact, array-based prefix trie over SID token sequences, queried in batches.

Layout (CSR, nodes numbered breadth-first, children in token order):

- ``edge_start``: (n_nodes + 1,) int32 — node v's children are edges
  ``edge_start[v] .. edge_start[v+1]-1``;
- ``edge_token``: (n_edges,) int32 — token on each edge, sorted within a node;
- the child reached by edge e is node ``e + 1`` (every non-root node has exactly
  one incoming edge, and BFS numbering makes the two orders agree), so no child
  array is stored;
- ``term_node`` / ``term_item``: (n_items,) int32, sorted by node (then item) — the node
  reached after an item's end token, and that item. In a bucket trie several items may end at
  one leaf (a bucket SID): ``item_of`` then answers the bucket's lowest item index (its
  representative) and ``dead_nodes`` counts items, so a bucket is excluded only when all of its
  items are banned.

That is ~8 bytes per edge + 8 per item. All queries are batched tensor ops:
``step`` (advance N states by one token each; a fixed number of vectorised
binary-search rounds), ``allowed_mask`` / ``mask_logits`` (the constrained-decoding
hot path) and ``walk`` (states of N prefixes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch

from rl_align.utils.io import load_npz, write_npz

INVALID = -1


def _sorted_contains(table: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """(K,) bool: whether each key occurs in the sorted 1-D ``table``."""
    if table.numel() == 0:
        return torch.zeros_like(keys, dtype=torch.bool)
    pos = torch.searchsorted(table, keys).clamp(max=table.numel() - 1)
    return table[pos] == keys


def _level_edges(seqs: np.ndarray, lengths: np.ndarray, V: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """The trie's edges, built depth by depth: nodes are numbered in order of (depth, parent, token).

    Args:
        seqs: (n, T) int64 token ids. lengths: (n,) valid tokens per row. V: vocabulary size.
    Returns:
        edge_parent (E,), edge_token (E,) sorted by parent then token, the terminal node of each item (n,), and
        the number of nodes (root included).
    """
    n, T = seqs.shape
    node = np.zeros(n, np.int64)  # current node of each item (root = 0)
    next_id = 1
    edge_parent_parts, edge_token_parts = [], []
    term_node = np.full(n, -1, np.int64)
    for depth in range(T):
        alive = np.flatnonzero(lengths > depth)
        if alive.size == 0:
            break
        tok = seqs[alive, depth]
        if (tok < 0).any() or (tok >= V).any():
            raise ValueError(f"token id outside [0, {V}) at depth {depth}")
        key = node[alive] * V + tok
        uniq, inv = np.unique(key, return_inverse=True)
        edge_parent_parts.append(uniq // V)
        edge_token_parts.append(uniq % V)
        node[alive] = next_id + inv.ravel()
        next_id += uniq.size
        ends = alive[lengths[alive] == depth + 1]
        term_node[ends] = node[ends]
    return np.concatenate(edge_parent_parts), np.concatenate(edge_token_parts), term_node, next_id


class SidTrie:
    """Prefix trie over token sequences that each end with the end token."""

    def __init__(self, edge_start: torch.Tensor, edge_token: torch.Tensor, term_node: torch.Tensor,
                 term_item: torch.Tensor, vocab_size: int) -> None:
        self.edge_start = edge_start
        self.edge_token = edge_token
        self.term_node = term_node
        self.term_item = term_item
        self.vocab_size = int(vocab_size)
        deg = (edge_start[1:] - edge_start[:-1]) if edge_start.numel() > 1 else edge_start.new_zeros(1)
        self.max_degree = int(deg.max()) if deg.numel() else 0
        self._rounds = max(1, int(np.ceil(np.log2(self.max_degree + 1))))
        self._topology: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    # ------------------------------------------------------------------ build
    @classmethod
    def build(cls, sequences: np.ndarray, lengths: np.ndarray, vocab_size: int,
              shared_leaves: bool = False) -> "SidTrie":
        """Build from token sequences.

        Args:
            sequences: (n_items, T) int token ids, each row's first ``lengths[i]`` tokens
                being the item's SID tokens *including* its final end token; the rest is ignored.
            lengths: (n_items,) int number of valid tokens per row (≥ 1).
            vocab_size: size of the token vocabulary (masks are (N, vocab_size)).
            shared_leaves: allow several items with the same sequence (bucket SIDs).

        Raises:
            ValueError: if two items have the same sequence (unless ``shared_leaves``), or a sequence is a
                strict prefix of another (it would then not end with a leaf).
        """
        seqs = np.asarray(sequences, np.int64)
        lengths = np.asarray(lengths, np.int64)
        n, T = seqs.shape
        if n == 0:
            raise ValueError("cannot build a trie over zero items")
        if (lengths < 1).any() or (lengths > T).any():
            raise ValueError(f"sequence lengths must lie in [1, {T}]")
        V = int(vocab_size)
        edge_parent, edge_token, term_node, n_nodes = _level_edges(seqs, lengths, V)
        # terminal nodes must be leaves and unique per item
        order = np.argsort(term_node, kind="stable")
        tn = term_node[order]
        dup = np.flatnonzero(tn[1:] == tn[:-1])
        if dup.size and not shared_leaves:
            a, b = order[dup[0]], order[dup[0] + 1]
            raise ValueError(f"items {a} and {b} have the same SID token sequence ({dup.size} duplicates): "
                             "resolve collisions before building the trie")
        counts = np.bincount(edge_parent, minlength=n_nodes)
        if (counts[tn] > 0).any():
            bad = order[np.flatnonzero(counts[tn] > 0)[0]]
            raise ValueError(f"item {bad}'s sequence is a strict prefix of another's: "
                             "end every SID with the end token")
        edge_start = np.concatenate([[0], np.cumsum(counts)])
        if edge_start[-1] >= np.iinfo(np.int32).max:
            raise ValueError("trie too large for int32 indices")
        return cls(
            torch.from_numpy(edge_start.astype(np.int32)),
            torch.from_numpy(edge_token.astype(np.int32)),
            torch.from_numpy(tn.astype(np.int32)),
            torch.from_numpy(order.astype(np.int32)),
            V,
        )

    # ------------------------------------------------------------------ queries
    @property
    def n_nodes(self) -> int:
        return int(self.edge_start.numel() - 1)

    @property
    def n_edges(self) -> int:
        return int(self.edge_token.numel())

    @property
    def n_items(self) -> int:
        return int(self.term_item.numel())

    def nbytes(self) -> int:
        """Bytes held by the trie's arrays."""
        parts = (self.edge_start, self.edge_token, self.term_node, self.term_item)
        return sum(t.numel() * t.element_size() for t in parts)

    def to(self, device: torch.device | str) -> "SidTrie":
        """A copy on ``device`` (the arrays are small; decoding on GPU keeps them there)."""
        return SidTrie(self.edge_start.to(device), self.edge_token.to(device), self.term_node.to(device),
                       self.term_item.to(device), self.vocab_size)

    def root(self, n: int) -> torch.Tensor:
        """(n,) int64 root states."""
        return torch.zeros(n, dtype=torch.long, device=self.edge_start.device)

    def step(self, nodes: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Advance states by one token.

        Args:
            nodes: (N,) int64 current states (-1 = already invalid).
            tokens: (N,) int64 tokens.

        Returns:
            (N,) int64 next states; -1 where the token is not a child (or the state was invalid).
        """
        valid = nodes >= 0
        v = nodes.clamp(min=0)
        lo = self.edge_start[v].long()
        end = self.edge_start[v + 1].long()
        hi = end.clone()
        tok = tokens.to(self.edge_token.dtype)
        last = max(self.n_edges - 1, 0)
        for _ in range(self._rounds):  # lower_bound over each node's sorted children
            active = lo < hi
            mid = (lo + hi) // 2
            right = self.edge_token[mid.clamp(max=last)] < tok
            lo = torch.where(active & right, mid + 1, lo)
            hi = torch.where(active & ~right, mid, hi)
        found = valid & (lo < end) & (self.edge_token[lo.clamp(max=last)] == tok)
        return torch.where(found, lo + 1, torch.full_like(lo, INVALID))

    def walk(self, prefixes: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """States after reading each prefix.

        Args:
            prefixes: (N, t) int64 token prefixes.
            lengths: optional (N,) int64 valid length of each prefix (default: all t).

        Returns:
            (N,) int64 states, -1 for prefixes that leave the trie.
        """
        nodes = self.root(prefixes.shape[0])
        for j in range(prefixes.shape[1]):
            nxt = self.step(nodes, prefixes[:, j])
            nodes = nxt if lengths is None else torch.where(lengths > j, nxt, nodes)
        return nodes

    def _edges_of(self, nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(row index, edge index) of every child edge of every state (invalid states have none)."""
        v = nodes.clamp(min=0)
        start = self.edge_start[v].long()
        cnt = (self.edge_start[v + 1].long() - start) * (nodes >= 0)
        rows = torch.repeat_interleave(torch.arange(nodes.numel(), device=nodes.device), cnt)
        base = torch.repeat_interleave(start - (torch.cumsum(cnt, 0) - cnt), cnt)
        edges = base + torch.arange(rows.numel(), device=nodes.device)
        return rows, edges

    def allowed_mask(self, nodes: torch.Tensor) -> torch.Tensor:
        """(N,) states → (N, vocab_size) bool mask of allowed next tokens."""
        rows, edges = self._edges_of(nodes)
        mask = torch.zeros(nodes.numel(), self.vocab_size, dtype=torch.bool, device=nodes.device)
        mask[rows, self.edge_token[edges].long()] = True
        return mask

    def allowed_next(self, prefixes: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """(N, t) token prefixes → (N, vocab_size) bool mask of allowed next tokens."""
        return self.allowed_mask(self.walk(prefixes, lengths))

    def mask_logits(self, logits: torch.Tensor, nodes: torch.Tensor, fill: float = float("-inf"),
                    dead: Optional[torch.Tensor] = None, group: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Logits with every token not allowed after ``nodes`` set to ``fill``.

        Args:
            logits: (N, V) scores. nodes: (N,) states.
            dead: optional sorted (D,) int64 keys ``g * n_nodes + node`` from :meth:`dead_nodes`: a child
                whose key (with its row's group) is listed leads only to banned items and is masked too.
            group: (N,) int64 group (request) of each row, required with ``dead``.

        Returns:
            (N, V) new tensor; only the allowed entries are copied (O(allowed), not O(V) per row of work).
        """
        rows, edges = self._edges_of(nodes)
        if dead is not None and dead.numel():
            if group is None:
                raise ValueError("mask_logits: `dead` needs the `group` of every row")
            keep = ~_sorted_contains(dead, group[rows] * self.n_nodes + edges + 1)
            rows, edges = rows[keep], edges[keep]
        cols = self.edge_token[edges].long()
        out = torch.full_like(logits, fill)
        out[rows, cols] = logits[rows, cols]
        return out

    # ------------------------------------------------------------------ exclusion (banned items)
    def topology(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(parent, leaves, item_node), computed once.

        Returns:
            parent: (n_nodes,) int64 parent of each node (-1 for the root);
            leaves: (n_nodes,) int64 number of items whose path passes through each node (a bucket leaf counts
                each of its items);
            item_node: (n_items,) int64 terminal node of each item.
        """
        if self._topology is None:
            dev = self.edge_start.device
            counts = (self.edge_start[1:] - self.edge_start[:-1]).long()
            parent = torch.cat([torch.full((1,), INVALID, dtype=torch.long, device=dev),
                                torch.repeat_interleave(torch.arange(self.n_nodes, device=dev), counts)])
            item_node = torch.empty(self.n_items, dtype=torch.long, device=dev)
            item_node[self.term_item.long()] = self.term_node.long()
            leaves = torch.zeros(self.n_nodes, dtype=torch.long, device=dev)
            leaves.index_add_(0, self.term_node.long(), torch.ones_like(self.term_node, dtype=torch.long))
            # BFS numbering: each depth is a contiguous node range [b_d, b_{d+1}) with b_{d+1} = edge_start[b_d] + 1
            bounds = [0, 1]
            while bounds[-1] < self.n_nodes:
                bounds.append(int(self.edge_start[bounds[-1]]) + 1)
            for lo, hi in zip(reversed(bounds[1:-1]), reversed(bounds[2:])):  # deepest level first
                leaves.index_add_(0, parent[lo:hi], leaves[lo:hi].clone())
            self._topology = (parent, leaves, item_node)
        return self._topology

    def dead_nodes(self, banned: torch.Tensor) -> torch.Tensor:
        """Nodes under which every item is banned, per request: prefix-level exclusion.

        A beam or sample that enters such a node can only end in a banned item (or nowhere), so
        :meth:`mask_logits` masks it before it is entered — not only at the ``<eos>`` that would complete a
        banned item. Banned items' ancestors are counted per request (one scatter per trie level) and a
        node is dead when its count equals the number of items below it.

        Args:
            banned: (N, M) int64 item indices per request, -1 padded (duplicates allowed).

        Returns:
            sorted (D,) int64 keys ``r * n_nodes + node`` (r = request row), for :meth:`mask_logits`.
        """
        parent, leaves, item_node = self.topology()
        banned = banned.to(self.edge_start.device).long()
        r, c = (banned >= 0).nonzero(as_tuple=True)
        items = banned[r, c]
        if (items >= self.n_items).any():
            raise ValueError(f"banned item index outside [0, {self.n_items})")
        pairs = torch.unique(r * self.n_items + items)  # one count per (request, item)
        r, node = pairs // self.n_items, item_node[pairs % self.n_items]
        keys = []
        while node.numel():
            keys.append(r * self.n_nodes + node)
            up = parent[node]
            r, node = r[up >= 0], up[up >= 0]
        if not keys:
            return torch.zeros(0, dtype=torch.long, device=banned.device)
        uniq, counts = torch.unique(torch.cat(keys), return_counts=True)  # sorted
        return uniq[counts == leaves[uniq % self.n_nodes]]

    def item_of(self, nodes: torch.Tensor) -> torch.Tensor:
        """(N,) states → (N,) int64 item index for states just past an end token (a bucket's representative: its
        lowest item index), else -1."""
        pos = torch.searchsorted(self.term_node, nodes.to(self.term_node.dtype).contiguous())
        pos = pos.clamp(max=max(self.n_items - 1, 0))
        hit = (self.term_node[pos] == nodes) & (nodes >= 0)
        return torch.where(hit, self.term_item[pos].long(), torch.full_like(nodes, INVALID))

    def lookup(self, sequences: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """(N, t) full token sequences (with end token) → (N,) item index or -1 (hallucinated)."""
        return self.item_of(self.walk(sequences, lengths))

    # ------------------------------------------------------------------ io
    def save(self, path: str | Path) -> None:
        """Write the arrays to one ``.npz`` (atomic, no pickle)."""
        write_npz(path, edge_start=self.edge_start.numpy(), edge_token=self.edge_token.numpy(),
                  term_node=self.term_node.numpy(), term_item=self.term_item.numpy(),
                  vocab_size=np.array(self.vocab_size))

    @classmethod
    def load(cls, path: str | Path) -> "SidTrie":
        z = load_npz(path)
        return cls(torch.from_numpy(z["edge_start"]), torch.from_numpy(z["edge_token"]),
                   torch.from_numpy(z["term_node"]), torch.from_numpy(z["term_item"]), int(z["vocab_size"]))
