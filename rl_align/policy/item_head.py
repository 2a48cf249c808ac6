"""An item-level head beside the SID policy (``policy.item_head``): the hybrid of generative and dense retrieval.

The SID policy scores an item only through its code tokens, which many items share. The item head gives every
catalog item a free vector (SASRec's output layer) and scores all of them from the policy state at the position
that predicts the next item's first code: ``logits = (P h) · V_i`` with ``P`` an H × H projection (identity at
start) and ``V`` an (n_items, H) table. SFT trains it beside the NLL (``sft.item_head_weight`` × its full-softmax
cross-entropy); evaluation ranks the union of the beam's items and the head's top items by
``log π(SID) + β · log softmax_head`` (:mod:`rl_align.eval.hybrid`), as LIGER-style retrievers do.

The head lives on the HF model as the submodule :data:`ATTR`, so DeepSpeed, checkpoints and the weight EMA carry it
with the policy; :func:`rl_align.policy.model.save_policy` writes it to :data:`FILE` beside a plain HF checkpoint.
The file sits in a sub-directory because vLLM loads every ``*.safetensors`` file at the top of a model directory as
model weights; ``from_pretrained`` and vLLM never see it there.

Alignment moves the SID policy and keeps the head's file frozen. With ``rl.item_head_trunk: sft`` the head also keeps
the trunk it was trained on: a copy of the starting policy's HF weights in :data:`TRUNK`, which
:func:`load_item_head` attaches (:attr:`ItemHead.trunk`), so the head's state is not moved by alignment either.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from rl_align.policy.data import earlier_items, left_aligned
from rl_align.policy.history_input import HistoryCodes, history_codes_of
from rl_align.sid.catalog import SPECIALS, SidCatalog

ATTR = "rl_align_item_head"
FILE = "item_head/item_head.safetensors"  # not at the top: vLLM would load it as model weights
TRUNK = "item_head/trunk"  # a frozen head's own trunk (rl.item_head_trunk: sft): a plain HF checkpoint
_TRUNK_FILES = ("config.json", "generation_config.json", "model.safetensors.index.json")
KINDS = ("none", "free", "free_sid", "history")


class ItemHead(torch.nn.Module):
    """Free item vectors (plus, with ``codes``, embeddings of the items' SID codes) scored from a policy state.
    h: (N, H) → (N, n_items) logits. codes: (n_items, T) int64 code indices in [0, n_codes), -1 = none.

    ``tied`` = (the policy's input embedding, the first history token id): the item vectors are the history tokens'
    input embeddings (``sid.history: items``), SASRec's one item table for input and output. The embedding stays
    the policy's parameter (held outside this module's parameters, so nothing is registered twice); the saved head
    holds a snapshot of those rows as a free table (:func:`save_item_head`), which is what evaluation loads.
    ``composed``: with ``policy.history_input: id_codes``, the tied vectors are the composed history rows (ID row +
    the item's code rows, :mod:`rl_align.policy.history_input`), as the trunk reads them."""

    def __init__(self, n_items: int, hidden: int, codes: Optional[torch.Tensor] = None, n_codes: int = 0,
                 tied: Optional[tuple[torch.nn.Embedding, int]] = None,
                 composed: Optional[HistoryCodes] = None) -> None:
        super().__init__()
        self._tied = tied
        # policy.history_input: id_codes; in a tuple so it is not registered as this module's child (the policy owns it)
        self._composed = () if composed is None else (composed,)
        self._trunk: tuple = ()  # a policy whose states the head reads instead of the evaluated one (not a child)
        if tied is None:
            self.items = torch.nn.Embedding(n_items, hidden)
            torch.nn.init.normal_(self.items.weight, std=0.02)
        self.n_items = n_items
        self.proj = torch.nn.Linear(hidden, hidden, bias=False)
        torch.nn.init.eye_(self.proj.weight)
        self.code_emb = None
        if codes is not None:
            self.register_buffer("codes", codes.long())
            self.code_emb = torch.nn.Embedding(n_codes, hidden)
            torch.nn.init.normal_(self.code_emb.weight, std=0.02)

    @property
    def tied(self) -> bool:
        """True when the item vectors are the policy's history-token embeddings (``policy.item_head: history``)."""
        return self._tied is not None

    @property
    def trunk(self) -> Optional[torch.nn.Module]:
        """The policy whose last-position state this head scores when it is not the policy being evaluated (an
        aligned policy's frozen head with its SFT trunk, ``rl.item_head_trunk: sft``); None = that policy."""
        return self._trunk[0] if self._trunk else None

    def attach_trunk(self, model: torch.nn.Module) -> "ItemHead":
        """Read states from ``model`` (in eval mode) from now on; returns self."""
        self._trunk = (model.eval(),)
        return self

    def item_vectors(self) -> torch.Tensor:
        """(n_items, H): the free vectors (or the tied history-token embeddings), plus the sums of their SID codes'
        embeddings with ``free_sid``."""
        if self._tied is not None:
            emb, first = self._tied
            if self._composed:
                return self._composed[0].rows(emb.weight)
            return emb.weight[first: first + self.n_items]
        if self.code_emb is None:
            return self.items.weight
        sid = (self.code_emb(self.codes.clamp(min=0)) * (self.codes >= 0).unsqueeze(-1)).sum(1)
        return self.items.weight + sid

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.proj(h) @ self.item_vectors().T


def sid_code_indices(catalog: SidCatalog) -> tuple[torch.Tensor, int]:
    """Every item's SID codes as indices into one code table: ((n_items, T) int64, -1 past the codes; n_codes)."""
    tok = torch.as_tensor(catalog.tokens).long()
    code = catalog.layout.is_code(tok)
    return torch.where(code, tok - len(SPECIALS), torch.full_like(tok, -1)), catalog.layout.user_offset - len(SPECIALS)


def _new_head(catalog: SidCatalog, hidden: int, kind: str) -> ItemHead:
    """A freshly initialised head of ``kind`` (``free`` or ``free_sid``) for ``catalog``'s items, width ``hidden``."""
    if kind == "free_sid":
        codes, n_codes = sid_code_indices(catalog)
        return ItemHead(catalog.n_items, hidden, codes, n_codes)
    return ItemHead(catalog.n_items, hidden)


def attach_item_head(model: torch.nn.Module, catalog: SidCatalog, kind: str) -> Optional[ItemHead]:
    """Give the HF policy ``model`` an item head of ``kind`` (``policy.item_head``); None for ``none``.

    Call after the model's own seeded initialisation, so the policy's weights do not change with the head, and
    after :func:`rl_align.policy.history_input.attach_history_codes` (a tied head reads the composed rows)."""
    if kind not in KINDS:
        raise ValueError(f"policy.item_head: expected one of {list(KINDS)}, got {kind!r}")
    if kind == "none":
        return None
    emb = model.get_input_embeddings()
    if kind != "history":
        head = _new_head(catalog, emb.weight.shape[1], kind)
    elif catalog.history_items:
        head = ItemHead(catalog.n_items, emb.weight.shape[1], tied=(emb, catalog.layout.history_offset),
                        composed=history_codes_of(model))
    else:
        raise ValueError("policy.item_head: 'history' ties the head to the history tokens: needs sid.history: items")
    setattr(model, ATTR, head.to(emb.weight.device))
    return head


def item_head_of(model: torch.nn.Module) -> Optional[ItemHead]:
    """The item head attached to ``model`` (or to a DeepSpeed / DDP wrapper's ``module``), else None."""
    return getattr(getattr(model, "module", model), ATTR, None)


def target_items(windows: np.ndarray, n_target: Optional[np.ndarray]) -> torch.Tensor:
    """The target items of a batch's windows, row by row in order (the order of their first-code positions in the
    batch :func:`rl_align.policy.data.windows_to_batch` builds). windows: (M, W) items, -1 = none; n_target: (M,)
    targets per window (None = every item). Returns (sum n_target,) int64."""
    w = left_aligned(windows)
    n = (w >= 0).sum(1)
    k = n if n_target is None else n_target
    return torch.as_tensor(np.concatenate([r[c - t:c] for r, c, t in zip(w, n, k)]).astype(np.int64))


def future_targets(events: np.ndarray, n_target: Optional[np.ndarray], seq_items: np.ndarray,
                   seq_offsets: np.ndarray, k: int) -> torch.Tensor:
    """Each target of a batch's windows and the user's next ``k - 1`` training items (``sft.item_head_future``).

    Rows follow :func:`target_items`; column 0 is the target item itself, column j the item j events later in the
    user's log, -1 past the user's last training event (the last two events, valid and test, are never read).
    events: (M, W) event indices into ``seq_items`` (-1 = none); n_target: (M,) (None = every entry); seq_offsets:
    (n_users + 1,). Returns (sum n_target, k) int64."""
    first = target_items(events, n_target).numpy()
    offsets = np.asarray(seq_offsets, np.int64)
    end = offsets[np.searchsorted(offsets, first, side="right")] - 2  # the user's first non-training event
    ahead = first[:, None] + np.arange(k, dtype=np.int64)[None, :]
    items = np.asarray(seq_items, np.int64)[np.minimum(ahead, len(seq_items) - 1)]
    return torch.as_tensor(np.where(ahead < end[:, None], items, -1))


def seen_before(events: np.ndarray, n_target: Optional[np.ndarray], seq_items: np.ndarray, seq_offsets: np.ndarray,
                targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, cols) int64 index pairs: for each target of a batch's windows (rows in :func:`target_items` order), the
    items of the user's log before that event (``sft.item_head_seen_mask``; :func:`rl_align.policy.data.earlier_items`),
    less the row's own ``targets`` ((T,) or (T, k), -1 = none). events: (M, W) event indices into ``seq_items``
    (-1 = none); n_target: (M,) (None = every entry); seq_offsets: (n_users + 1,)."""
    rows, cols = earlier_items(target_items(events, n_target).numpy(), seq_items, seq_offsets, targets.numpy())
    return torch.from_numpy(rows), torch.from_numpy(cols)


def first_code_positions(labels: torch.Tensor, catalog: SidCatalog, shifted: bool = True) -> torch.Tensor:
    """(M, P) bool: the positions that predict a target item's first SID token (the state the head reads).
    labels: (M, P) token ids, -100 = ignored: HF causal-LM labels (``shifted``: position t predicts
    labels[:, t + 1]), or the packed ``sid.history: items`` batch's ``targets`` (not shifted: position t predicts
    targets[:, t]; :func:`rl_align.policy.data.item_history_batch`, where they are the shared history columns)."""
    nxt = torch.nn.functional.pad(labels, (0, 1), value=-100)[:, 1:] if shifted else labels
    lo = catalog.layout.offsets[0]
    return (nxt >= lo) & (nxt < lo + catalog.layout.codebook_sizes[0])


def item_head_logp(head: ItemHead, hidden: torch.Tensor, labels: torch.Tensor, catalog: SidCatalog,
                   shifted: bool = True, seen: Optional[tuple[torch.Tensor, torch.Tensor]] = None) -> torch.Tensor:
    """(T, n_items) float32 log-softmax of the head at every target's first-code position, in row order.
    hidden: (M, P, H) last-layer states (after the final norm); labels: (M, P), see :func:`first_code_positions`.
    seen: (rows, cols) logits left out of the softmax (log-prob -inf; :func:`seen_before`), None = none."""
    logits = head(hidden[first_code_positions(labels, catalog, shifted)]).float()
    if seen is not None:
        rows, cols = (t.to(logits.device) for t in seen)
        logits = logits.index_put((rows, cols), torch.tensor(float("-inf"), device=logits.device))
    return torch.log_softmax(logits, dim=-1)


def item_head_nll(logp: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of :func:`item_head_logp`'s (T, n_items) rows against ``targets``: (T,) the target items in
    row order (:func:`target_items`), or (T, k) with later items beside each (:func:`future_targets`, -1 = none;
    column 0 must be set): then each position's loss is the mean cross-entropy over its row's items, and the batch's
    the mean over positions (k = 1 is the plain loss). ValueError when the counts differ. Returns a scalar."""
    if logp.shape[0] != targets.shape[0]:
        raise ValueError(f"item head: {logp.shape[0]} first-code positions but {targets.shape[0]} target items")
    targets = targets.to(logp.device)
    if targets.dim() == 1:
        return torch.nn.functional.nll_loss(logp, targets)
    valid = targets >= 0
    nll = torch.where(valid, -logp.gather(1, targets.clamp(min=0)), 0.0)  # not × valid: a left-out row is -inf
    return (nll.sum(1) / valid.sum(1).clamp(min=1)).mean()


def item_head_loss(head: ItemHead, hidden: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor,
                   catalog: SidCatalog) -> torch.Tensor:
    """Full-softmax cross-entropy of the head at every target's first-code position (:func:`item_head_logp`, then
    :func:`item_head_nll`). hidden: (M, P, H); labels: (M, P); targets: (T,) or (T, k). Returns a scalar."""
    return item_head_nll(item_head_logp(head, hidden, labels, catalog), targets)


def save_item_head(model: torch.nn.Module, directory: str | Path) -> bool:
    """Write the model's item head (if any) to ``directory/FILE``; True when one was written."""
    head = item_head_of(model)
    if head is None:
        return False
    path = Path(directory) / FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    state = dict(head.state_dict())
    if head.tied:  # a snapshot of the tied rows, loaded as a free head that scores as the tied one did here
        state["items.weight"] = head.item_vectors()
    save_file({k: (v.float() if v.is_floating_point() else v).detach().cpu().contiguous()
               for k, v in state.items()}, str(path))
    return True


def without_item_head(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A model state dict with the item head's entries dropped (what the HF checkpoint holds)."""
    return {k: v for k, v in state.items() if not k.startswith(ATTR + ".")}


def save_trunk(policy_dir: str | Path, directory: str | Path) -> None:
    """Copy a frozen head's trunk to ``directory/TRUNK``: the trunk ``policy_dir`` already carries (its head's own),
    else ``policy_dir``'s HF weights and config."""
    src = Path(policy_dir)
    src = src / TRUNK if (src / TRUNK).is_dir() else src
    dst = Path(directory) / TRUNK
    dst.mkdir(parents=True, exist_ok=True)
    for f in sorted(src.iterdir()):
        if f.is_file() and (f.suffix == ".safetensors" or f.name in _TRUNK_FILES):
            shutil.copyfile(f, dst / f.name)


def _load_trunk(path: Path, catalog: SidCatalog, hidden: int, device: str | torch.device) -> torch.nn.Module:
    """A head's saved trunk (safetensors only), checked against the catalog's vocabulary and the policy width."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, local_files_only=True,
                                                 use_safetensors=True)
    rows, width = model.get_input_embeddings().weight.shape
    if rows != catalog.vocab_size or width != hidden:
        raise ValueError(f"{path}: expected a trunk with {catalog.vocab_size} token rows of width {hidden} (the "
                         f"catalog's vocabulary × policy width), got {rows} × {width}")
    return model.to(device).eval()


def load_item_head(directory: str | Path, catalog: SidCatalog, hidden: int, device: str | torch.device = "cpu",
                   own_trunk: bool = False) -> Optional[ItemHead]:
    """The item head saved in a policy directory, or None when it has none; with its own trunk attached when the
    directory carries one (:data:`TRUNK`), else, with ``own_trunk``, a frozen copy of the directory's policy (the
    trunk :func:`save_trunk` would save: ``rl.item_head_trunk: sft``). Safetensors only (no pickle)."""
    path = Path(directory) / FILE
    if not path.exists():
        return None
    state = load_file(str(path))
    shape = tuple(state["items.weight"].shape) if "items.weight" in state else None
    if shape != (catalog.n_items, hidden):
        raise ValueError(f"{path}: expected an item table of shape {(catalog.n_items, hidden)} (catalog items × "
                         f"policy width), got {shape}")
    kind = "free_sid" if "code_emb.weight" in state else "free"
    head = _new_head(catalog, hidden, kind)
    if kind == "free_sid" and not torch.equal(state.get("codes", torch.empty(0)), head.codes):
        raise ValueError(f"{path}: the item head was trained on other SID codes than this catalog's")
    head.load_state_dict(state)
    head = head.to(device).eval()
    saved = Path(directory) / TRUNK
    trunk = saved if (saved / "config.json").exists() else (Path(directory) if own_trunk else None)
    if trunk is not None:
        head.attach_trunk(_load_trunk(trunk, catalog, hidden, device))
    return head
