"""The in-memory interaction dataset every loader produces."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np


@dataclass
class InteractionData:
    """Users, items, timestamped interactions and item text, with dense integer ids.

    Interactions are kept in *source file order*; splits sort them stably by time,
    so ties keep that order (RecBole's convention).

    Attributes:
        name: dataset name, e.g. ``"ml-100k"``.
        user_ids: raw user id of each dense user index, length n_users.
        item_ids: raw item id of each dense item index, length n_items.
        users: (n_inter,) int64 dense user index per interaction.
        items: (n_inter,) int64 dense item index per interaction.
        timestamps: (n_inter,) float64 time of each interaction.
        item_text: text describing each item (title, year, genres / brand, categories), length n_items.
        item_features: optional per-item side features, each a list of length n_items.
        user_features: optional per-user side features, each a list of length n_users.
        item_embeddings: optional (n_items, d) float32 vectors the source carries (synthetic data).
    """

    name: str
    user_ids: list[str]
    item_ids: list[str]
    users: np.ndarray
    items: np.ndarray
    timestamps: np.ndarray
    item_text: list[str]
    item_features: dict[str, list] = field(default_factory=dict)
    user_features: dict[str, list] = field(default_factory=dict)
    item_embeddings: Optional[np.ndarray] = None

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_interactions(self) -> int:
        return int(self.users.shape[0])

    def item_popularity(self) -> np.ndarray:
        """(n_items,) int64 interaction count per item."""
        return np.bincount(self.items, minlength=self.n_items).astype(np.int64)

    def validate(self) -> None:
        """Check shapes and index ranges; raise ValueError naming the offending field."""
        n = self.n_interactions
        for name in ("items", "timestamps"):
            if getattr(self, name).shape != (n,):
                raise ValueError(f"{self.name}: field {name!r} has shape {getattr(self, name).shape}, expected ({n},)")
        if n and (self.users.min() < 0 or self.users.max() >= self.n_users):
            raise ValueError(f"{self.name}: field 'users' has indices outside [0, {self.n_users})")
        if n and (self.items.min() < 0 or self.items.max() >= self.n_items):
            raise ValueError(f"{self.name}: field 'items' has indices outside [0, {self.n_items})")
        if len(self.item_text) != self.n_items:
            raise ValueError(f"{self.name}: item_text has {len(self.item_text)} entries, expected {self.n_items}")
        if not np.all(np.isfinite(self.timestamps)):
            raise ValueError(f"{self.name}: field 'timestamps' contains NaN/inf")
        if self.item_embeddings is not None and self.item_embeddings.shape[0] != self.n_items:
            raise ValueError(
                f"{self.name}: item_embeddings has {self.item_embeddings.shape[0]} rows, expected {self.n_items}"
            )

    def subset_interactions(self, mask: np.ndarray) -> "InteractionData":
        """Keep the interactions where ``mask`` is true; drop users and items left with none."""
        users, items, ts = self.users[mask], self.items[mask], self.timestamps[mask]
        keep_u = np.unique(users)
        keep_i = np.unique(items)
        umap = np.full(self.n_users, -1, np.int64)
        umap[keep_u] = np.arange(len(keep_u))
        imap = np.full(self.n_items, -1, np.int64)
        imap[keep_i] = np.arange(len(keep_i))
        return InteractionData(
            name=self.name,
            user_ids=[self.user_ids[u] for u in keep_u],
            item_ids=[self.item_ids[i] for i in keep_i],
            users=umap[users],
            items=imap[items],
            timestamps=ts,
            item_text=[self.item_text[i] for i in keep_i],
            item_features={k: [v[i] for i in keep_i] for k, v in self.item_features.items()},
            user_features={k: [v[u] for u in keep_u] for k, v in self.user_features.items()},
            item_embeddings=None if self.item_embeddings is None else self.item_embeddings[keep_i],
        )


def k_core(data: InteractionData, k: int) -> InteractionData:
    """Iteratively drop users and items with fewer than ``k`` interactions."""
    if k <= 1:
        return data
    while True:
        uc = np.bincount(data.users, minlength=data.n_users)
        ic = np.bincount(data.items, minlength=data.n_items)
        mask = (uc[data.users] >= k) & (ic[data.items] >= k)
        if mask.all():
            return data
        data = data.subset_interactions(mask)


def drop_short_users(data: InteractionData, min_len: int) -> tuple[InteractionData, int]:
    """Drop users with fewer than ``min_len`` interactions; return the data and how many were dropped."""
    uc = np.bincount(data.users, minlength=data.n_users)
    short = int((uc < min_len).sum())
    if short == 0:
        return data, 0
    mask = uc[data.users] >= min_len
    # items are kept even if they lose all interactions: they remain in the catalog
    users = data.users[mask]
    keep_u = np.unique(users)
    umap = np.full(data.n_users, -1, np.int64)
    umap[keep_u] = np.arange(len(keep_u))
    out = InteractionData(
        name=data.name,
        user_ids=[data.user_ids[u] for u in keep_u],
        item_ids=data.item_ids,
        users=umap[users],
        items=data.items[mask],
        timestamps=data.timestamps[mask],
        item_text=data.item_text,
        item_features=data.item_features,
        user_features={k: [v[u] for u in keep_u] for k, v in data.user_features.items()},
        item_embeddings=data.item_embeddings,
    )
    return out, short
