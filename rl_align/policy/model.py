"""Build, save and load the SID policy as a standard HF causal LM.

The directory written by :func:`save_policy` is a plain ``save_pretrained``
folder (config.json + model.safetensors) plus ``rl_align_policy.json`` recording
the catalog fingerprint and vocabulary size, so both our torch engine and vLLM
load the same directory and a checkpoint from another catalog is refused.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedModel, Qwen2Config

from rl_align.config import PolicyConfig
from rl_align.policy.history_input import fold_history_rows, history_codes_of
from rl_align.policy.item_head import FILE, TRUNK, item_head_of, save_item_head, save_trunk, without_item_head
from rl_align.sid.catalog import BOS, EOS, PAD, SidCatalog
from rl_align.utils.io import atomic_dir, read_json, write_json


class VocabMismatchError(ValueError):
    """A policy checkpoint does not belong to the catalog in use."""


def max_positions(catalog: SidCatalog, max_history: int) -> int:
    """Tokens of the longest sequence: <bos> + (history + target) items × (SID + <eos>)."""
    return 1 + (max_history + 1) * catalog.max_sid_len


def build_policy(cfg: PolicyConfig, catalog: SidCatalog, max_history: int, seed: int = 0) -> PreTrainedModel:
    """A freshly initialised causal LM over ``catalog``'s vocabulary."""
    if cfg.hidden_size % cfg.num_heads:
        raise ValueError(f"policy.hidden_size {cfg.hidden_size} is not divisible by policy.num_heads {cfg.num_heads}")
    head_dim = cfg.hidden_size // cfg.num_heads
    common = dict(
        vocab_size=catalog.vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads or cfg.num_heads,
        max_position_embeddings=max(64, max_positions(catalog, max_history)),
        attention_dropout=cfg.attention_dropout,
        tie_word_embeddings=cfg.tie_embeddings,
        bos_token_id=BOS,
        eos_token_id=EOS,
        pad_token_id=PAD,
        use_cache=True,
    )
    hf_cfg = LlamaConfig(head_dim=head_dim, **common) if cfg.arch == "llama" else Qwen2Config(**common)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(hf_cfg)
    return model


def next_token_loss(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean next-token cross-entropy of a causal LM, optionally label-smoothed.

    logits: (M, P, V) for positions 0..P-1; labels: (M, P) token ids, -100 = ignored. Position t predicts
    labels[:, t + 1], exactly as HF's ``ForCausalLMLoss``; with ``label_smoothing = 0`` the value equals the
    model's own ``.loss``. Smoothing spreads ``label_smoothing`` of each target's mass uniformly over the V tokens
    (``torch.nn.functional.cross_entropy``'s definition). Returns a scalar.
    """
    shifted = torch.nn.functional.pad(labels, (0, 1), value=-100)[:, 1:]
    return token_loss(logits, shifted, label_smoothing)


def token_loss(logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean cross-entropy of each position's own target (unshifted: position t predicts ``targets[:, t]``).

    logits: (M, P, V); targets: (M, P) token ids, -100 = ignored (the packed ``sid.history: items`` batch's
    ``targets``). Returns a scalar.
    """
    flat = logits.float().reshape(-1, logits.shape[-1])  # all P positions, as HF does (bit-identical loss)
    return torch.nn.functional.cross_entropy(flat, targets.reshape(-1).to(flat.device), ignore_index=-100,
                                             label_smoothing=label_smoothing)


def attention_mask_for(model: PreTrainedModel, allowed: torch.Tensor) -> torch.Tensor:
    """A custom (M, 1, P, P) bool mask (True = may attend) as the additive float mask (0 / dtype min, in the model's
    dtype) that every HF attention kernel takes as is (SDPA, eager, and the shared-prefix kernel)."""
    dtype = next(getattr(model, "module", model).parameters()).dtype
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed,
                                                                                       torch.finfo(dtype).min)


def add_embedding_dropout(model: PreTrainedModel, p: float) -> None:
    """Drop token-embedding activations with probability ``p`` in training mode (SASRec-style regularisation).

    Implemented as a forward hook on the input embedding, so the saved checkpoint stays a plain HF model
    that vLLM and ``from_pretrained`` load unchanged.
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"policy.embedding_dropout must be in [0, 1), got {p}")
    if p == 0.0:
        return
    emb = getattr(model, "module", model).get_input_embeddings()
    emb.register_forward_hook(lambda mod, args, out: torch.nn.functional.dropout(out, p, mod.training))


def add_hidden_dropout(model: PreTrainedModel, p: float) -> None:
    """Drop each attention and MLP sub-layer's output with probability ``p`` before its residual add, in training
    mode (SASRec's dropout on the attention and feed-forward outputs; Llama and Qwen2 configs have none).

    Forward hooks on every decoder layer's ``self_attn`` (whose output is a tuple whose first element is the
    (M, P, H) attention output) and ``mlp`` ((M, P, H)), so the saved checkpoint stays a plain HF model.
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"policy.hidden_dropout must be in [0, 1), got {p}")
    if p == 0.0:
        return

    def drop(mod, args, out):
        if isinstance(out, tuple):
            return (torch.nn.functional.dropout(out[0], p, mod.training), *out[1:])
        return torch.nn.functional.dropout(out, p, mod.training)

    layers = getattr(model, "module", model).model.layers
    for layer in layers:
        layer.self_attn.register_forward_hook(drop)
        layer.mlp.register_forward_hook(drop)


def disable_dropout(model: torch.nn.Module) -> None:
    """Set every dropout of ``model`` to 0 (``nn.Dropout`` modules and HF attention's ``attention_dropout``), so
    training-mode log-probs equal the rollout engine's: exact π_θ/π_old ratios in RL (as TRL's ``disable_dropout``)."""
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
        if isinstance(getattr(m, "attention_dropout", None), float):
            m.attention_dropout = 0.0


def save_tokenizer(catalog: SidCatalog, directory: str | Path) -> None:
    """A word-level HF tokenizer over the SID vocabulary (``<a_3> <b_17> <c_0> <eos>``), for vLLM and HF tools."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    names = catalog.layout.token_names(catalog.user_tokens)
    tok = Tokenizer(models.WordLevel({n: i for i, n in enumerate(names)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                                   unk_token="<unk>", sep_token="<sep>")
    fast.save_pretrained(str(directory))


def save_policy(model: PreTrainedModel, directory: str | Path, catalog: SidCatalog, extra: dict | None = None,
                frozen_item_head: str | Path | None = None, freeze_trunk: bool = False) -> None:
    """``save_pretrained`` (safetensors) + SID tokenizer + catalog fingerprint, atomically (whole directory swap);
    an attached item head (``policy.item_head``) goes to its own file, the HF checkpoint stays plain; composed
    history rows (``policy.history_input: id_codes``) are folded into the history tokens' embedding rows.
    ``frozen_item_head``: a policy directory whose item head file (if any) is saved unchanged with a model that
    carries none (alignment moves the SID policy and keeps the SFT head frozen). ``freeze_trunk``: the head keeps
    that directory's trunk too (``rl.item_head_trunk: sft``, :func:`rl_align.policy.item_head.save_trunk`); a trunk
    the directory's head already carries is always kept with it."""
    model = getattr(model, "module", model)
    with atomic_dir(directory) as tmp:
        if item_head_of(model) is None and history_codes_of(model) is None:
            model.save_pretrained(tmp, safe_serialization=True)
        else:  # the HF checkpoint stays plain (vLLM loads it): the head goes to its own file, composed rows folded
            state = fold_history_rows(model, without_item_head(model.state_dict()))
            model.save_pretrained(tmp, safe_serialization=True, state_dict=state)
        head = save_item_head(model, tmp)
        if not head and frozen_item_head is not None and (Path(frozen_item_head) / FILE).exists():
            (tmp / FILE).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(Path(frozen_item_head) / FILE, tmp / FILE)
            head = True
            if freeze_trunk or (Path(frozen_item_head) / TRUNK).is_dir():
                save_trunk(frozen_item_head, tmp)
        save_tokenizer(catalog, tmp)
        write_json(tmp / "rl_align_policy.json", {"catalog_fingerprint": catalog.fingerprint(),
                                                  "vocab_size": catalog.vocab_size,
                                                  **({"item_head": FILE} if head else {}), **(extra or {})})


def load_policy(directory: str | Path, catalog: SidCatalog, device: str | torch.device = "cpu",
                dtype: torch.dtype = torch.float32) -> PreTrainedModel:
    """Load a policy directory and check it was trained on ``catalog``."""
    directory = Path(directory)
    meta_path = directory / "rl_align_policy.json"
    if not meta_path.exists():
        raise VocabMismatchError(f"{directory}: not an rl-align policy directory (no rl_align_policy.json)")
    meta = read_json(meta_path)
    if meta.get("vocab_size") != catalog.vocab_size or meta.get("catalog_fingerprint") != catalog.fingerprint():
        raise VocabMismatchError(
            f"{directory}: policy was trained on another catalog (vocab {meta.get('vocab_size')}, fingerprint "
            f"{meta.get('catalog_fingerprint')}) but the catalog in use has vocab {catalog.vocab_size}, fingerprint "
            f"{catalog.fingerprint()}"
        )
    try:
        model = AutoModelForCausalLM.from_pretrained(directory, dtype=dtype, local_files_only=True)
    except Exception as e:  # noqa: BLE001 - a corrupt or truncated weights file: one line naming it
        weights = sorted(directory.glob("*.safetensors")) or [directory]
        raise ValueError(f"{weights[0]}: cannot load the policy weights ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else 'unreadable'})") from None
    return model.to(device).eval()


def item_token_ids(catalog: SidCatalog) -> torch.Tensor:
    """(n_items,) the token id of each item's own ID token (``sid.collision: item_token``: the level before
    ``<eos>`` whose code is the item's index). ValueError when the catalog has no such level."""
    n = catalog.n_items
    last = catalog.layout.offsets[-1]
    tok = torch.as_tensor(catalog.tokens[np.arange(n), catalog.token_lengths - 2])
    if catalog.layout.codebook_sizes[-1] != n or not torch.equal(tok, last + torch.arange(n)):
        raise ValueError("sft.item_token_init: the catalog has no item-ID level (build it with sid.collision: "
                         "item_token)")
    return tok


def item_token_id_sets(catalog: SidCatalog) -> list[torch.Tensor]:
    """Every (n_items,) set of per-item tokens the catalog has: its history tokens (``sid.history: items``) and
    its item-ID level (``sid.collision: item_token``). ValueError when it has neither."""
    sets = [torch.as_tensor(catalog.history_tokens(np.arange(catalog.n_items)))] if catalog.history_items else []
    try:
        sets.append(item_token_ids(catalog))
    except ValueError:
        if not sets:
            raise ValueError("sft.item_token_init: the catalog has no item-ID tokens (build it with sid.collision: "
                             "item_token or sid.history: items)") from None
    return sets


def init_item_token_embeddings(model: PreTrainedModel, catalog: SidCatalog, vectors: torch.Tensor,
                               seed: int = 0) -> dict:
    """Write an item-ID model's item vectors into the policy's item-token embeddings (tied: the head too): the
    history tokens (``sid.history: items``) and/or the item-ID level (``sid.collision: item_token``).

    The (n_items, d) vectors are centred, mapped to the policy width H by an isometry (a seeded orthonormal
    (d, H) basis when d ≤ H, the top-H principal directions when d > H), so dot products between items are
    kept, and scaled so their standard deviation equals the random initialisation's.

    Args:
        vectors: (n_items, d) float, row i = item i (the catalog's dense index).

    Returns:
        ``{"items", "dim_in", "dim_out", "scale"}``, for the log.
    """
    n, d = vectors.shape
    if n != catalog.n_items:
        raise ValueError(f"sft.item_token_init: expected {catalog.n_items} item vectors (one per catalog item), "
                         f"got {n}")
    emb = getattr(model, "module", model).get_input_embeddings().weight
    H = emb.shape[1]
    v = vectors.double() - vectors.double().mean(0)
    if d <= H:
        g = torch.Generator().manual_seed(seed)
        basis, _ = torch.linalg.qr(torch.randn(H, d, generator=g, dtype=torch.float64))  # (H, d), orthonormal
        mapped = v @ basis.T
    else:
        _, _, vh = torch.linalg.svd(v, full_matrices=False)
        mapped = v @ vh[:H].T
    sets = [ids.to(emb.device) for ids in item_token_id_sets(catalog)]
    with torch.no_grad():
        target_std = float(emb[sets[0]].std())
        scale = target_std / max(float(mapped.std()), 1e-12)
        for ids in sets:  # history tokens and item-ID level alike: the same item table
            emb[ids] = (mapped * scale).to(emb.dtype)
    return {"items": n, "dim_in": d, "dim_out": H, "scale": scale, "token_sets": len(sets)}
