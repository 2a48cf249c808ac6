"""The two towers of SCI. Both read the same input space — a (B, L) bag/sequence of items — so either tower can
encode either side (the symmetric input swap of SCI needs ``f_i(Q)`` and ``f_q(I)``, with no new parameters):

- an *item* is the 1-item sequence ``[i]``;
- a *query* is the user's recent history ``[i_1 … i_L]`` (oldest first).

Item features are an item-ID embedding plus a linear map of fixed content vectors (text + collaborative,
``embed/item_emb.npy``). The query tower encodes the sequence with self-attention over learned
positions (causal: one query per position of a training window); the item tower mean-pools the item features. Outputs are L2-normalised (cosine).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ItemFeatures(nn.Module):
    """(B, L) item tokens (item + 1, 0 = padding) → (B, L, hidden) features: ID embedding + projected content."""

    def __init__(self, n_items: int, hidden: int, content: torch.Tensor | None) -> None:
        super().__init__()
        self.id_emb = nn.Embedding(n_items + 1, hidden, padding_idx=0)
        nn.init.normal_(self.id_emb.weight, std=hidden ** -0.5)
        if content is not None:
            pad = torch.zeros(1, content.shape[1], dtype=torch.float32)
            self.register_buffer("content", torch.cat([pad, content.float()]), persistent=False)
            self.proj = nn.Linear(content.shape[1], hidden)
        else:
            self.content, self.proj = None, None

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.id_emb(tokens)
        if self.proj is not None:  # project the (n_items + 1) content rows once, then gather: ~L·B/n cheaper
            x = x + self.proj(self.content)[tokens]
        return x * (tokens > 0)[..., None]


def _prefix_mean(x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Mean over the non-padding positions up to each position: (B, L, h) → (B, L, h)."""
    valid = (tokens > 0).float()[..., None]
    return (x * valid).cumsum(1) / valid.cumsum(1).clamp_min(1.0)


class ItemTower(nn.Module):
    """f_i: mean of item features → MLP → unit vector. ``prefixes`` gives one vector per position (B, L, dim)."""

    def __init__(self, n_items: int, hidden: int, dim: int, content: torch.Tensor | None, dropout: float) -> None:
        super().__init__()
        self.features = ItemFeatures(n_items, hidden, content)
        self.mlp = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def prefixes(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.mlp(_prefix_mean(self.features(tokens), tokens)), dim=-1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, L) → (B, dim): the whole sequence (its last prefix)."""
        return self.prefixes(tokens)[:, -1]


class QueryTower(nn.Module):
    """f_q: item features + positions → one causal self-attention block → MLP → unit vector per position.

    Sequences are right-aligned (padding first); position t's vector reads items ≤ t, so one pass over a
    training window gives a query for every next item in it (SASRec-style training).
    """

    def __init__(self, n_items: int, max_len: int, hidden: int, dim: int, content: torch.Tensor | None,
                 dropout: float, heads: int = 2) -> None:
        super().__init__()
        self.heads = heads
        self.features = ItemFeatures(n_items, hidden, content)
        self.pos = nn.Embedding(max_len, hidden)
        self.block = nn.TransformerEncoderLayer(hidden, heads, 2 * hidden, dropout, batch_first=True, norm_first=True)
        self.mlp = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def prefixes(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, L) → (B, L, dim)."""
        B, L = tokens.shape
        valid = tokens > 0
        pos = self.pos(torch.arange(self.pos.num_embeddings - L, self.pos.num_embeddings, device=tokens.device))
        x = self.features(tokens) + pos[None] * valid[..., None]
        # causal, no attention to padding keys; a position may always see itself (no all-masked row → no NaN)
        blocked = torch.triu(torch.ones(L, L, dtype=torch.bool, device=tokens.device), 1)[None] | ~valid[:, None, :]
        blocked = blocked & ~torch.eye(L, dtype=torch.bool, device=tokens.device)[None]
        x = self.block(x, src_mask=blocked.repeat_interleave(self.heads, 0))
        return F.normalize(self.mlp(x), dim=-1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, L) → (B, dim) at the last position."""
        return self.prefixes(tokens)[:, -1]


class DualTower(nn.Module):
    """The pair (f_q, f_i). ``tied=True`` uses one item tower for both sides (then the swap term equals the base
    term: a test); ``query``/``item`` encode (B, L) item-token sequences into (B, dim) unit vectors, and
    ``query_prefixes``/``item_prefixes`` into one vector per position (B, L, dim)."""

    def __init__(self, n_items: int, max_len: int, hidden: int = 128, dim: int = 64,
                 content: torch.Tensor | None = None, dropout: float = 0.1, tied: bool = False) -> None:
        super().__init__()
        self.hparams = dict(n_items=n_items, max_len=max_len, hidden=hidden, dim=dim, dropout=dropout, tied=tied)
        self.item_tower = ItemTower(n_items, hidden, dim, content, dropout)
        self.query_tower = self.item_tower if tied else QueryTower(n_items, max_len, hidden, dim, content, dropout)

    def query(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.query_tower(tokens)

    def item(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.item_tower(tokens)

    def query_prefixes(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.query_tower.prefixes(tokens)

    def item_prefixes(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.item_tower.prefixes(tokens)

    @torch.no_grad()
    def item_views(self, batch: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
        """Both views of every catalog item: (f_q([i]), f_i([i])), each (n_items, dim) in item-index order."""
        was = self.training
        self.eval()
        ids = torch.arange(1, self.hparams["n_items"] + 1)[:, None]
        qv = torch.cat([self.query(ids[s: s + batch]) for s in range(0, ids.shape[0], batch)])
        iv = torch.cat([self.item(ids[s: s + batch]) for s in range(0, ids.shape[0], batch)])
        self.train(was)
        return qv, iv
