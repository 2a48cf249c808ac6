"""Config sections of the policy, SFT and evaluation stages."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from rl_align.config import doc


@dataclass
class PolicyConfig:
    """Architecture of the SID policy (built from this config; no downloaded weights)."""

    arch: Literal["llama", "qwen2"] = doc("llama", "HF architecture: llama (LlamaForCausalLM) or qwen2")
    hidden_size: int = doc(128, "model width")
    num_layers: int = doc(2, "transformer layers")
    num_heads: int = doc(2, "attention heads (head dim = hidden_size / num_heads, must be ≥ 64 for vLLM CPU)")
    num_kv_heads: Optional[int] = doc(None, "key/value heads for GQA (default: num_heads)")
    intermediate_size: int = doc(512, "MLP width")
    attention_dropout: float = doc(0.1, "dropout on attention probabilities during training")
    tie_embeddings: bool = doc(True, "tie input embeddings and the output head")


@dataclass
class SftConfig:
    """Supervised next-item training (NLL on SID tokens) on Ray Train workers."""

    epochs: int = doc(20, "maximum epochs (early stopping may end sooner)")
    batch_size: int = doc(64, "global batch size in windows (split across workers)")
    lr: float = doc(3e-3, "peak learning rate (AdamW)")
    weight_decay: float = doc(0.01, "AdamW weight decay")
    warmup_steps: int = doc(50, "linear warm-up steps, then cosine decay to 10%")
    grad_clip: float = doc(1.0, "gradient norm clip (0 = off)")
    window_items: int = doc(21, "items per training window (history + target); default max_history + 1")
    num_workers: int = doc(1, "Ray Train workers (one process each)")
    cpus_per_worker: float = doc(2.0, "CPUs per worker; torch threads are set to this (rounded down, ≥ 1)")
    use_gpu: bool = doc(False, "one GPU per worker (nccl) instead of CPU (gloo)")
    backend: Literal["deepspeed", "ddp"] = doc("deepspeed", "deepspeed engine per worker, or plain torch DDP fallback")
    zero_stage: int = doc(0, "DeepSpeed ZeRO stage 0-3")
    bf16: bool = doc(False, "train in bf16 (DeepSpeed) instead of fp32")
    eval_every: int = doc(1, "validate every this many epochs")
    eval_users: Optional[int] = doc(None, "validate on at most this many users (None = all)")
    patience: int = doc(3, "stop after this many validations without a better valid NDCG@10")
    max_failures: int = doc(2, "Ray Train restarts from the last checkpoint after a worker dies")
    seed: int = doc(0, "training seed")


@dataclass
class EvalConfig:
    """Leave-one-out evaluation with full ranking over the catalog."""

    beams: int = doc(20, "beam width of constrained beam search (≥ the largest K)")
    ks: list = doc([1, 5, 10, 20], "cut-offs for HR@K and NDCG@K")
    exclude_history: bool = doc(True, "drop items the user already interacted with from the ranking (RecBole)")
    batch_size: int = doc(128, "prompts per decoding batch")
    free_beams: int = doc(10, "beam width of free (unconstrained) decoding for the hallucination rate")
    head_share: float = doc(0.2, "most popular share of items counted as 'head' in the bucketed metrics")
