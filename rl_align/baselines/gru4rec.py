"""GRU4Rec (Hidasi et al., 2016) with full cross-entropy: a GRU over item embeddings."""

from __future__ import annotations

import torch
from torch import nn

from rl_align.baselines.base import BASELINES, SequenceRecommender


@BASELINES.register("gru4rec")
class GRU4Rec(SequenceRecommender):
    """Item embeddings → dropout → ``layers``-layer GRU → linear projection back to the embedding space."""

    def __init__(self, n_items: int, max_len: int, hidden: int = 64, layers: int = 1, heads: int = 1,
                 dropout: float = 0.2) -> None:
        super().__init__(n_items, max_len, hidden, layers, heads, dropout)
        self.drop = nn.Dropout(dropout)
        self.gru = nn.GRU(hidden, hidden, num_layers=layers, batch_first=True,
                          dropout=dropout if layers > 1 else 0.0)
        self.proj = nn.Linear(hidden, hidden)

    def encode(self, seq: torch.Tensor) -> torch.Tensor:
        x = self.drop(self.item_emb(seq))
        out, _ = self.gru(x)  # left padding: pads come first and carry zero inputs
        return self.proj(self.drop(out))
