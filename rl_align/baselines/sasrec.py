"""SASRec (Kang & McAuley, 2018): causal self-attention over the item sequence, pre-LN blocks."""

from __future__ import annotations

import torch
from torch import nn

from rl_align.baselines.base import BASELINES, SequenceRecommender


@BASELINES.register("sasrec")
class SASRec(SequenceRecommender):
    """Item + learned position embeddings, ``layers`` causal pre-LN transformer blocks (FFN width = hidden)."""

    def __init__(self, n_items: int, max_len: int, hidden: int = 64, layers: int = 2, heads: int = 1,
                 dropout: float = 0.2) -> None:
        super().__init__(n_items, max_len, hidden, layers, heads, dropout)
        self.pos_emb = nn.Embedding(max_len, hidden)
        self.drop = nn.Dropout(dropout)
        block = nn.TransformerEncoderLayer(hidden, heads, dim_feedforward=hidden, dropout=dropout,
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(hidden)

    def encode(self, seq: torch.Tensor) -> torch.Tensor:
        B, L = seq.shape
        valid = seq > 0
        pos = torch.arange(L, device=seq.device)
        x = self.item_emb(seq) * self.hparams["hidden"] ** 0.5 + self.pos_emb(pos)[None]
        x = self.drop(x) * valid[..., None]
        # causal, and no attention to padding keys; every position may see itself (no all-masked row → no NaN)
        blocked = torch.triu(torch.ones(L, L, dtype=torch.bool, device=seq.device), 1)[None] | ~valid[:, None, :]
        blocked = blocked & ~torch.eye(L, dtype=torch.bool, device=seq.device)[None]
        mask = blocked.repeat_interleave(self.hparams["heads"], 0)  # (B * heads, L, L)
        return self.norm(self.blocks(x, mask=mask)) * valid[..., None]
