"""The SFT stage's driver: starts (or joins) Ray and runs the worker loop as a Ray Train ``TorchTrainer``."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

from rl_align.config import RunConfig, to_dict
from rl_align.ray_utils import RAY_RUN_NAME, init_ray, latest_checkpoint  # noqa: F401 (re-exported)
from rl_align.sft.worker import train_loop_per_worker
from rl_align.utils.io import atomic_path, write_npz

log = logging.getLogger("rl_align")


def run_sft(cfg: RunConfig, run_path: Path, item_vectors: np.ndarray | None = None,
            teacher: dict[str, np.ndarray] | None = None) -> dict:
    """Train the policy; returns the final Ray Train metrics and where the best policy is.

    Args:
        item_vectors: (n_items, d) vectors for the item-ID tokens' initial embeddings (``sft.item_token_init``),
            written to ``sft/item_token_init.npy`` for the workers; None = random.
        teacher: ``items`` / ``prob`` (E, K) of :func:`rl_align.sft.distill.teacher_targets` (``sft.distill_from``),
            written to ``sft/distill_targets.npz`` for the workers; None = no distillation.
    """
    init_ray()
    run_path = Path(run_path).resolve()
    storage = run_path / "sft"
    storage.mkdir(parents=True, exist_ok=True)
    resume = latest_checkpoint(storage)
    init_path, teacher_path = _worker_files(storage, item_vectors, teacher)
    if resume is not None:
        # the workers pick it up themselves (see ray_utils.resume_checkpoint): Ray Train v2 has no
        # resume_from_checkpoint, and the same path covers a restarted worker group
        log.info("sft: resuming from %s", resume)
    result = _trainer(cfg, run_path, storage, init_path, teacher_path).fit()
    best = storage / "best_policy"
    if not best.exists():
        raise RuntimeError(f"sft finished without a best policy in {best}")
    return {"metrics": dict(result.metrics or {}), "best_policy": str(best)}


def _worker_files(storage: Path, item_vectors: np.ndarray | None,
                  teacher: dict[str, np.ndarray] | None) -> tuple[Path | None, Path | None]:
    """Write what the workers read from disk (atomically): the item-token init vectors and the distillation
    targets; returns their paths (None for what is not used)."""
    init_path = teacher_path = None
    if item_vectors is not None:
        init_path = storage / "item_token_init.npy"
        with atomic_path(init_path) as tmp, open(tmp, "wb") as f:  # a handle: np.save would append .npy
            np.save(f, np.asarray(item_vectors, np.float32), allow_pickle=False)
    if teacher is not None:
        teacher_path = storage / "distill_targets.npz"
        write_npz(teacher_path, **teacher)
    return init_path, teacher_path


def _trainer(cfg: RunConfig, run_path: Path, storage: Path, init_path: Path | None, teacher_path: Path | None):
    """The Ray Train TorchTrainer of the SFT loop: ``sft.num_workers`` workers, checkpoints under ``storage``."""
    import ray.train
    from ray.train import CheckpointConfig, FailureConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    s = cfg.sft
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "run_dir": str(run_path),
            "sft": dataclasses.asdict(s),
            "policy": dataclasses.asdict(cfg.policy),
            "eval": dataclasses.asdict(cfg.eval),
            "max_history": cfg.data.max_history,
            "item_token_init": str(init_path) if init_path else None,
            "distill_targets": str(teacher_path) if teacher_path else None,
            "wandb": cfg.wandb,
            "wandb_config": to_dict(cfg),
        },
        torch_config=TorchConfig(backend="nccl" if s.use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=s.num_workers, use_gpu=s.use_gpu,
                                     resources_per_worker={"CPU": s.cpus_per_worker}),
        run_config=ray.train.RunConfig(
            name=RAY_RUN_NAME,
            storage_path=str(storage),
            failure_config=FailureConfig(max_failures=s.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
        ),
    )
