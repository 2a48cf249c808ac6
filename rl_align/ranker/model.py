"""The ranker: a DIN-style CTR model (target attention over the user's history) with an MLP or DCN-v2 head.

It scores ``(user, history, candidate)`` triples the way a production ranker
does: item-ID and item side-feature embeddings, user-ID and user side-feature
embeddings, a target-attention pooling of the history (DIN, Zhou et al. 2018)
and a scoring head. All feature tables live in the model as buffers, so a
checkpoint (``model.safetensors`` + ``ranker.json``) is all a RewardActor needs.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from rl_align.config import RankerConfig, from_dict
from rl_align.data.features import FeatureSpec
from rl_align.utils.io import atomic_dir, read_json, write_json

MODEL_FILE = "model.safetensors"
META_FILE = "ranker.json"


class RankerLoadError(ValueError):
    """A ranker checkpoint is missing, incomplete or belongs to another catalog."""


class _FieldEmbedding(nn.Module):
    """Embeds one side-feature table: (N+1, T) value ids → mean over the non-padding values → (…, d)."""

    def __init__(self, table: torch.Tensor, n_values: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("table", table.long(), persistent=True)
        self.emb = nn.Embedding(n_values, dim, padding_idx=0)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        ids = self.table[idx]                                   # (…, T)
        e = self.emb(ids)                                       # (…, T, d)
        n = (ids > 0).sum(-1, keepdim=True).clamp(min=1)
        return e.sum(-2) / n


class DinRanker(nn.Module):
    """CTR model: ``logit = head([user, cand, attn_pool(history | cand), cand ⊙ pool, mean(history)])``.

    Item index conventions: inputs use dense item indices with -1 for padding / invalid;
    internally index 0 is the padding item.
    """

    def __init__(self, n_items: int, n_users: int, cfg: RankerConfig, item_specs: list[FeatureSpec],
                 user_specs: list[FeatureSpec], item_tables: Optional[dict] = None,
                 user_tables: Optional[dict] = None) -> None:
        super().__init__()
        d = cfg.embed_dim
        self.n_items, self.n_users, self.cfg = n_items, n_users, cfg
        self.item_specs, self.user_specs = item_specs, user_specs
        self.item_id = nn.Embedding(n_items + 1, d, padding_idx=0)
        self.item_fields = nn.ModuleDict({
            s.name: _FieldEmbedding((item_tables or {}).get(s.name, torch.zeros(n_items + 1, s.width, dtype=torch.long)),
                                    s.n_values, d) for s in item_specs})
        self.user_id = nn.Embedding(n_users + 1, d, padding_idx=0) if cfg.use_user_id else None
        self.user_fields = nn.ModuleDict({
            s.name: _FieldEmbedding((user_tables or {}).get(s.name, torch.zeros(n_users + 1, s.width, dtype=torch.long)),
                                    s.n_values, d) for s in user_specs})
        di = d * (1 + len(item_specs))
        du = d * (int(cfg.use_user_id) + len(user_specs))
        self.item_dim, self.user_dim = di, du
        a = cfg.attention_hidden
        # DIN activation unit on [h, c, h - c, h ⊙ c], with the first layer split by input so that
        # history and candidate projections are computed once, not per (candidate, history) pair
        self.att_h = nn.Linear(di, a)
        self.att_c = nn.Linear(di, a, bias=False)
        self.att_hc = nn.Linear(di, a, bias=False)
        self.att_out = nn.Sequential(nn.ReLU(), nn.Linear(a, 1))
        x_dim = du + 4 * di
        layers, prev = [], x_dim
        for w in cfg.mlp_dims:
            layers += [nn.Linear(prev, w), nn.ReLU(), nn.Dropout(cfg.dropout)]
            prev = w
        self.deep = nn.Sequential(*layers)
        self.cross = nn.ModuleList([nn.Linear(x_dim, x_dim) for _ in range(cfg.cross_layers)]) \
            if cfg.head == "dcn" else nn.ModuleList()
        self.out = nn.Linear(prev + (x_dim if cfg.head == "dcn" else 0), 1)

    # ------------------------------------------------------------------ pieces
    def item_vec(self, items: torch.Tensor) -> torch.Tensor:
        """(…) item indices (-1 = padding) → (…, item_dim)."""
        idx = items + 1
        parts = [self.item_id(idx)] + [f(idx) for f in self.item_fields.values()]
        return torch.cat(parts, -1)

    def user_vec(self, users: torch.Tensor) -> torch.Tensor:
        """(B,) user indices → (B, user_dim) (width 0 when the model has no user features)."""
        idx = users + 1
        parts = ([self.user_id(idx)] if self.user_id is not None else []) + [f(idx) for f in self.user_fields.values()]
        if not parts:
            return torch.zeros(users.shape[0], 0, device=users.device)
        return torch.cat(parts, -1)

    # ------------------------------------------------------------------ forward
    def forward(self, users: torch.Tensor, history: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """Logits of clicking each candidate.

        Args:
            users: (B,) int64 user indices.
            history: (B, H) int64 item indices, any alignment, -1 = padding.
            candidates: (B, G) int64 item indices (-1 = invalid; scored as the padding item).
        Returns:
            (B, G) float logits.
        """
        mask = history >= 0                                            # (B, H)
        h = self.item_vec(history.clamp(min=-1))                       # (B, H, Di)
        c = self.item_vec(candidates.clamp(min=-1))                    # (B, G, Di)
        # W·[h, c, h−c, h⊙c] = (W_h + W_{h−c})·h + (W_c − W_{h−c})·c + W_{h⊙c}·(h⊙c): the same function class,
        # with the h and c projections computed once instead of per (candidate, history) pair
        z = self.att_h(h)[:, None] + self.att_c(c)[:, :, None] + self.att_hc(c[:, :, None] * h[:, None])  # (B,G,H,A)
        w = self.att_out(z).squeeze(-1) * mask[:, None].float()        # (B, G, H), DIN: no softmax
        pooled = torch.einsum("bgh,bhd->bgd", w, h)                    # (B, G, Di)
        n = mask.sum(-1, keepdim=True).clamp(min=1)
        mean_h = (h * mask[..., None].float()).sum(1) / n              # (B, Di)
        G = candidates.shape[1]
        u = self.user_vec(users)[:, None].expand(-1, G, -1)            # (B, G, Du)
        x = torch.cat([u, c, pooled, c * pooled, mean_h[:, None].expand(-1, G, -1)], -1)
        deep = self.deep(x)
        if self.cfg.head == "dcn":
            xl = x
            for lin in self.cross:
                xl = x * lin(xl) + xl
            deep = torch.cat([deep, xl], -1)
        return self.out(deep).squeeze(-1)


def items_digest(item_ids: list) -> str:
    """A short digest of the catalog's item ids (in order): a ranker only serves the catalog it was trained on."""
    return hashlib.sha256("\x1f".join(map(str, item_ids)).encode()).hexdigest()[:16]


def ranker_meta(model: DinRanker, extra: Optional[dict] = None) -> dict:
    return {
        "n_items": model.n_items, "n_users": model.n_users, "config": asdict(model.cfg),
        "item_specs": [s.to_json() for s in model.item_specs], "user_specs": [s.to_json() for s in model.user_specs],
        **(extra or {}),
    }


def save_ranker(model: DinRanker, directory: str | Path, extra: Optional[dict] = None) -> None:
    """``model.safetensors`` (weights + feature tables) and ``ranker.json`` (architecture, specs, catalog), atomically."""
    from safetensors.torch import save_file

    model = getattr(model, "module", model)
    with atomic_dir(directory) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp / MODEL_FILE))
        write_json(tmp / META_FILE, ranker_meta(model, extra))


def build_ranker(meta: dict, source: str = META_FILE) -> DinRanker:
    """An untrained ranker with the architecture a ``ranker.json`` describes (weights: ``load_state_dict``)."""
    cfg = from_dict(RankerConfig, meta["config"], source=source)
    specs = lambda key: [FeatureSpec(**s) for s in meta[key]]  # noqa: E731
    return DinRanker(meta["n_items"], meta["n_users"], cfg, specs("item_specs"), specs("user_specs"))


def load_ranker(directory: str | Path, device: str | torch.device = "cpu",
                expect_items: Optional[list] = None) -> tuple[DinRanker, dict]:
    """Rebuild a ranker from ``directory`` (no pickle: safetensors + JSON); optionally check the catalog's item ids."""
    from safetensors.torch import load_file

    directory = Path(directory)
    for f in (MODEL_FILE, META_FILE):
        if not (directory / f).exists():
            raise RankerLoadError(f"{directory}: not a ranker checkpoint (missing {f})")
    meta = read_json(directory / META_FILE)
    if expect_items is not None and meta.get("item_ids_digest") is not None:
        if meta["item_ids_digest"] != items_digest(expect_items):
            raise RankerLoadError(f"{directory}: ranker was trained on another catalog (item ids differ)")
    model = build_ranker(meta, source=str(directory / META_FILE))
    state = load_file(str(directory / MODEL_FILE))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise RankerLoadError(f"{directory / MODEL_FILE}: weights do not match {META_FILE}: {e}") from None
    return model.to(device).eval(), meta
