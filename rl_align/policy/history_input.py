"""Content-aware history tokens (``policy.history_input: id_codes``): an item's ID row plus its SID codes' rows.

With ``sid.history: items`` a history item is one token whose input embedding is a free row, SASRec's item table:
an item seen in few training windows keeps a nearly random row. ``id_codes`` adds, to that row, ``g ⊙`` the sum of
the input embeddings of the item's own SID code tokens (the tokens the policy reads while it generates a SID), so
items that share a code prefix share part of their input vector, as in ID + content hybrids (LIGER, MBGen). The
gate ``g`` (H,) is learned and starts at 0: training starts from the ID-only model and takes as much content as
helps (an ungated sum fell on ML-100K valid, seed 0: 0.2375 against the ID rows' 0.2428; docs/results.md). With the
history-tied item head (``policy.item_head: history``) the head's item vectors are these composed rows too.

The composition is a function of the token id alone, so :func:`fold_history_rows` writes the composed rows into the
history tokens' embedding rows when the policy is saved: the checkpoint stays a plain HF model (our torch engine
and vLLM load it unchanged) and scores exactly as the composed model did. Training checkpoints keep the raw rows
and the hook is attached again when SFT resumes. The output head must be untied (a tied head would score the
history tokens with the raw rows, which the saved model no longer holds); the config refuses the pair.

``id_vec`` adds instead ``W v_k``: a learned projection W (H, d), zero at the start, of the item's own vector
``v_k`` (the run's ``embed/item_emb.npy``, the vectors its SIDs quantise), so the row reads the item's content at
full resolution rather than through its codes; ``id_codes_vec`` adds both. The vectors are a frozen, non-persistent
buffer and fold into the saved rows the same way. ``id_codes_own`` reads the codes through a table of its own
(one row per code token, zero at the start, no gate) instead of the rows the policy generates SIDs with, so the
content the history rows take is not shaped by the SID task.

``id_dropout`` (``policy.history_id_dropout``) zeroes a history token's own ID row with that probability in training
mode, keeping its content: the trunk must then read an item from its codes alone now and then, as it must for an
item whose row saw few training windows. The item head's vectors (:meth:`HistoryCodes.rows`) are never dropped.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from rl_align.sid.catalog import SidCatalog

ATTR = "rl_align_history_codes"
KINDS = ("id", "id_codes", "id_codes_own", "id_vec", "id_codes_vec")
NEEDS_VECTORS = ("id_vec", "id_codes_vec")
GATES = ("shared", "level", "popularity")
POP_BUCKETS = 5


class HistoryCodes(torch.nn.Module):
    """The content of every catalog item, and the composed history rows it gives.

    code_tokens: (n_items, T) int64 token ids of each item's code tokens, ``mask`` (n_items, T) bool marks the
    real ones (items may have fewer codes than T); both None when the codes are not read (``id_vec``).
    ``vectors``: (n_items, d) the items' own vectors, or None (``id_codes``). ``first``: the first history token
    id (item i is ``first + i``). ``id_dropout``: the probability, in training mode, that a history token's ID
    row is zeroed and only its content kept. The tables are non-persistent buffers; ``gate`` (H,), ``table``
    (``own_table``: (max code token + 1, H), in place of the gate) and ``proj`` (H, d) start at zero and are
    parameters (in training checkpoints and the weight EMA, dropped from the saved HF checkpoint by
    :func:`fold_history_rows`).
    ``gate_index``: (n_items, T) int64, which of G gate rows scales each code's row (the gate is then (G, H): one
    per code level, or per popularity bucket of the item); None = one gate (H,)."""

    def __init__(self, code_tokens: Optional[torch.Tensor], mask: Optional[torch.Tensor], first: int, hidden: int,
                 vectors: Optional[torch.Tensor] = None, own_table: bool = False,
                 gate_index: Optional[torch.Tensor] = None, id_dropout: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= id_dropout < 1.0:
            raise ValueError(f"policy.history_id_dropout must be in [0, 1), got {id_dropout}")
        self.id_dropout = float(id_dropout)
        if code_tokens is None and vectors is None:
            raise ValueError("HistoryCodes: needs the items' code tokens, their vectors, or both")
        self.reads_codes = code_tokens is not None
        self.gate = self.table = self.proj = None
        if self.reads_codes:
            self.register_buffer("code_tokens", code_tokens.long(), persistent=False)
            self.register_buffer("mask", mask.bool(), persistent=False)
            self.register_buffer("gate_index", None if gate_index is None else gate_index.long(), persistent=False)
            if own_table:  # rows indexed by code token id; no gate
                self.table = torch.nn.Parameter(torch.zeros(int(code_tokens.max()) + 1, hidden))
            else:
                shape = (hidden,) if gate_index is None else (int(gate_index.max()) + 1, hidden)
                self.gate = torch.nn.Parameter(torch.zeros(shape))
        if vectors is not None:
            self.register_buffer("vectors", vectors.float(), persistent=False)
            self.proj = torch.nn.Linear(vectors.shape[1], hidden, bias=False)
            torch.nn.init.zeros_(self.proj.weight)
        self.first = int(first)
        self._n = int((code_tokens if self.reads_codes else vectors).shape[0])

    @property
    def n_items(self) -> int:
        return self._n

    def gate_abs(self) -> dict[str, float]:
        """How much content the rows have taken: mean |gate| (codes), the own table's and the projection's RMS
        entry."""
        out = {}
        if self.gate is not None:
            out["history_gate_abs"] = float(self.gate.detach().abs().mean())
        if self.table is not None:
            out["history_table_rms"] = float(self.table.detach().pow(2).mean().sqrt())
        if self.proj is not None:
            out["history_proj_rms"] = float(self.proj.weight.detach().pow(2).mean().sqrt())
        return out

    def content(self, weight: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """What the items' rows gain: ``gate ⊙`` the sum of their code-token rows of ``weight`` (V, H) and/or
        ``proj(v_item)``; with an own table, the sum of its rows (no gate). items: (...,) item indices →
        (..., H)."""
        add = 0
        if self.reads_codes:
            own = self.table is not None
            rows = (self.table if own else weight)[self.code_tokens[items]].to(weight.dtype)  # (..., T, H)
            rows = rows * self.mask[items].unsqueeze(-1).to(rows.dtype)
            if own:
                add = rows.sum(-2)
            elif self.gate_index is None:
                add = rows.sum(-2) * self.gate.to(rows.dtype)
            else:  # a gate row per code level or per popularity bucket: (..., T, H) weights
                add = (rows * self.gate[self.gate_index[items]].to(rows.dtype)).sum(-2)
        if self.proj is not None:
            add = add + self.proj(self.vectors[items]).to(weight.dtype)
        return add

    def rows(self, weight: torch.Tensor) -> torch.Tensor:
        """(n_items, H): every history token's composed input row (ID row + its item's content)."""
        items = torch.arange(self.n_items, device=weight.device)
        return weight[self.first: self.first + self.n_items] + self.content(weight, items)

    def compose(self, ids: torch.Tensor, out: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """The embedding's output with content added at history tokens (their ID rows dropped with probability
        ``id_dropout`` in training mode). ids: (M, P); out: (M, P, H)."""
        item = ids - self.first
        hist = (item >= 0) & (item < self.n_items)
        if not bool(hist.any()):
            return out
        add = self.content(weight, item.clamp(0, self.n_items - 1))
        if self.training and self.id_dropout > 0:
            drop = hist & (torch.rand(hist.shape, device=hist.device) < self.id_dropout)
            out = out.masked_fill(drop.unsqueeze(-1), 0.0)
        return out + add * hist.unsqueeze(-1).to(add.dtype)


def item_code_tokens(catalog: SidCatalog) -> tuple[torch.Tensor, torch.Tensor]:
    """((n_items, T) int64 code token ids, (n_items, T) bool mask): each item's SID code tokens (no <eos>)."""
    tok = torch.as_tensor(np.asarray(catalog.tokens)).long()
    mask = catalog.layout.is_code(tok)
    return torch.where(mask, tok, torch.zeros_like(tok)), mask


def gate_index_for(gate: str, mask: torch.Tensor, counts: Optional[np.ndarray] = None) -> Optional[torch.Tensor]:
    """(n_items, T) gate row of each item's codes: None for ``'shared'``; the code level for ``'level'``; the
    item's popularity bucket for ``'popularity'`` (``counts`` (n_items,) training interactions, cut into
    :data:`POP_BUCKETS` equal-count groups of items by rank; ties broken by item index)."""
    if gate not in GATES:
        raise ValueError(f"policy.history_gate: expected one of {list(GATES)}, got {gate!r}")
    if gate == "shared":
        return None
    if gate == "level":
        return torch.arange(mask.shape[1]).expand(mask.shape).clone()
    if counts is None or len(counts) != mask.shape[0]:
        raise ValueError(f"policy.history_gate: 'popularity' needs ({mask.shape[0]},) training counts")
    rank = np.empty(len(counts), np.int64)
    rank[np.argsort(np.asarray(counts), kind="stable")] = np.arange(len(counts))
    bucket = torch.from_numpy(rank * POP_BUCKETS // len(counts))
    return bucket.unsqueeze(1).expand(mask.shape).clone()


def attach_history_codes(model: torch.nn.Module, catalog: SidCatalog, kind: str,
                         vectors: Optional[np.ndarray] = None, gate: str = "shared",
                         counts: Optional[np.ndarray] = None, id_dropout: float = 0.0) -> Optional[HistoryCodes]:
    """Compose history tokens' input embeddings with their items' content (``kind`` in :data:`KINDS` other than
    ``'id'``: code rows, the items' ``vectors`` (n_items, d), or both); None for ``'id'``. A forward hook on the
    input embedding; call it before the embedding-dropout hook so dropout covers the composed vector. ValueError
    when the catalog has no history tokens, the output head is tied, or the kind needs vectors that are missing or
    of the wrong item count. ``gate``/``counts``: the code gate's rows (:func:`gate_index_for`). ``id_dropout``: see
    :class:`HistoryCodes`."""
    if kind not in KINDS:
        raise ValueError(f"policy.history_input: expected one of {list(KINDS)}, got {kind!r}")
    if kind == "id":
        return None
    if not catalog.history_items:
        raise ValueError(f"policy.history_input: {kind!r} composes history tokens: needs sid.history: items")
    if getattr(model.config, "tie_word_embeddings", False):
        raise ValueError(f"policy.history_input: {kind!r} needs policy.tie_embeddings: false")
    vec = None
    if kind in NEEDS_VECTORS:
        if vectors is None or np.asarray(vectors).shape[0] != catalog.n_items:
            got = None if vectors is None else np.asarray(vectors).shape
            raise ValueError(f"policy.history_input: {kind!r} needs ({catalog.n_items}, d) item vectors, got {got}")
        vec = torch.as_tensor(np.asarray(vectors, dtype=np.float32))
    codes, mask = item_code_tokens(catalog) if kind != "id_vec" else (None, None)
    emb = model.get_input_embeddings()
    gated = kind in ("id_codes", "id_codes_vec")  # the kinds whose code rows pass through a gate
    if gate != "shared" and not gated:
        raise ValueError(f"policy.history_gate: {gate!r} gates code rows: needs history_input id_codes or "
                         f"id_codes_vec, got {kind!r}")
    index = gate_index_for(gate, mask, counts) if gated else None
    hc = HistoryCodes(codes, mask, catalog.layout.history_offset, emb.weight.shape[1], vec,
                      own_table=kind == "id_codes_own", gate_index=index,
                      id_dropout=id_dropout).to(emb.weight.device)
    setattr(model, ATTR, hc)
    emb.register_forward_hook(lambda mod, args, out: hc.compose(args[0], out, mod.weight))
    return hc


def history_codes_of(model: torch.nn.Module) -> Optional[HistoryCodes]:
    """The composition attached to ``model`` (or to a DeepSpeed / DDP wrapper's ``module``), else None."""
    return getattr(getattr(model, "module", model), ATTR, None)


def fold_history_rows(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` (the model's state dict) with the history rows of the input embedding replaced by the composed
    rows and the composition's parameters dropped, so a plain HF model loaded from it embeds as the composed one
    does; ``state`` itself when nothing is attached."""
    hc = history_codes_of(model)
    if hc is None:
        return state
    model = getattr(model, "module", model)
    weight = model.get_input_embeddings().weight
    key = next(k for k, p in model.named_parameters() if p is weight)
    folded = state[key].detach().clone()
    with torch.no_grad():
        folded[hc.first: hc.first + hc.n_items] = hc.rows(weight).to(folded.dtype)
    return {**{k: v for k, v in state.items() if not k.startswith(ATTR + ".")}, key: folded}
