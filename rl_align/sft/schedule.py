"""Learning-rate schedule and the per-epoch data order, shared by every worker (pure torch/numpy)."""

from __future__ import annotations

import math

import numpy as np
import torch

from rl_align.policy.data import drop_events, shuffled_training_events


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup: int, total: int, floor: float = 0.1):
    """Linear warm-up for ``warmup`` steps, then cosine decay to ``floor`` × peak at ``total`` steps."""

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        p = min(1.0, (step - warmup) / max(1, total - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * p))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, f)


def epoch_events(split: dict[str, np.ndarray], window: int, seed: int, epoch: int,
                 stride: int | None = None, item_drop: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """The epoch's shuffled training windows as event indices into ``split["seq_items"]`` (-1 = padding) —
    identical on every worker (seeded by seed and epoch).

    ``stride`` target items per window (:func:`rl_align.policy.data.strided_windows`; None = ``window``, i.e.
    non-overlapping windows in which every item is a target). ``item_drop`` > 0 removes each entry but a window's
    last with that probability (:func:`rl_align.policy.data.drop_events`), drawn afresh each epoch; 0 leaves the
    windows (and every random draw before it) exactly as without it.

    Returns:
        events (M, window) and n_target (M,): how many trailing items of each window are targets.
    """
    events, n_target = shuffled_training_events(split, window, stride, np.random.default_rng([seed, epoch]))
    return drop_events(events, n_target, item_drop, np.random.default_rng([seed, epoch, 1]))


def shard_rows(n_rows: int, global_batch: int, rank: int, world: int) -> list[np.ndarray]:
    """Row indices of each global batch that belong to ``rank`` (contiguous slices of equal size).

    The last partial batch is dropped so every rank runs the same number of steps.
    """
    if global_batch % world:
        raise ValueError(f"sft.batch_size {global_batch} must be divisible by sft.num_workers {world}")
    micro = global_batch // world
    out = []
    for s in range(0, n_rows - global_batch + 1, global_batch):
        out.append(np.arange(s + rank * micro, s + (rank + 1) * micro))
    return out
