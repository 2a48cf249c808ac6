"""The contract of item-ID sequential recommenders (SASRec, GRU4Rec): the baselines a SID policy must beat.

A model reads a (B, L) item sequence (item i as token i + 1, 0 = padding, left-padded) and returns a
hidden state per position; scores over the whole catalog are the dot products of the last hidden state
with the (tied) item embeddings, so full-catalog ranking is one matrix product. Models register by name
in ``BASELINES`` (one file + one ``@BASELINES.register``).
"""

from __future__ import annotations

import abc

import torch
from torch import nn

from rl_align.utils.registry import Registry

BASELINES: Registry[type["SequenceRecommender"]] = Registry("baseline model")


class SequenceRecommender(nn.Module, abc.ABC):
    """Item-ID next-item model with a tied output layer.

    Args:
        n_items: catalog size (item embeddings: (n_items + 1, hidden), row 0 = padding).
        max_len: longest input sequence.
        hidden: embedding / hidden width. layers, heads: depth and attention heads (models may ignore heads).
        dropout: dropout on embeddings and inside blocks during training.
    """

    def __init__(self, n_items: int, max_len: int, hidden: int = 64, layers: int = 2, heads: int = 1,
                 dropout: float = 0.2) -> None:
        super().__init__()
        self.hparams = dict(n_items=int(n_items), max_len=int(max_len), hidden=int(hidden), layers=int(layers),
                            heads=int(heads), dropout=float(dropout))
        self.item_emb = nn.Embedding(n_items + 1, hidden, padding_idx=0)
        nn.init.normal_(self.item_emb.weight, std=hidden ** -0.5)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    @abc.abstractmethod
    def encode(self, seq: torch.Tensor) -> torch.Tensor:
        """(B, L) int64 item tokens (0 = pad, left-padded) → (B, L, hidden) state after each position."""

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., hidden) states → (..., n_items) scores of every catalog item (padding row dropped)."""
        return hidden @ self.item_emb.weight[1:].T

    def score_last(self, seq: torch.Tensor) -> torch.Tensor:
        """(B, L) sequences → (B, n_items) scores of the next item after the last position."""
        return self.logits(self.encode(seq)[:, -1])
