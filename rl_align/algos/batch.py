"""The one batch a training step passes between actors: prompts → rollouts → rewards → learner.

The controller fills the prompt fields, the rollout pool the rollout fields, the reward pool the reward
fields; the learner group shards the whole batch over its ranks. Each field keeps one name from the actor
that writes it to the loss that reads it. Arrays are numpy (they cross Ray's object store); shapes use
B prompts, G rollouts per prompt, P prompt tokens, T rollout tokens, Tg target tokens, H history items,
F future events, S banned items.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch

from rl_align.sid.catalog import PAD

# fields that hold per-token rollout values, right-padded with these values when shards are joined
_TOKEN_PAD = {"rollout_tokens": PAD, "rollout_logp": 0.0}


@dataclass
class StepBatch:
    """One step's data. ``None`` = not produced (yet, or not needed by this objective).

    Prompt fields (controller):
        rows: (B,) int64 rows of the training examples. users: (B,) int64. history: (B, H) int64, -1 padded.
        targets: (B,) int64 ground-truth item y*. target_tokens: (B, Tg) int64 SID tokens of y* (+ <eos>).
        prompt_ids: (B, P) int64 left-padded prompt tokens. prompt_mask: (B, P) int64.
        future: (B, F) int64 the user's next training events, y* first, -1 padded (``future_match`` reward).
        banned: (B, S) int64 items the rollouts may not contain, -1 padded (``rl.exclude_seen``).
        seen: (B, S) int64 items the user interacted with before the prompt, -1 padded (``reward.seen_reward``).
        sanity_items: (B, K) int64 random catalog items, never y*, that the reward pool scores with the ranker
            alone (``rl.adagrpo.sanity_negatives``).
    Rollout fields (rollout pool):
        rollout_tokens: (B, G, T) int64 generated tokens, <pad> after <eos>.
        rollout_logp: (B, G, T) float32 behaviour log-prob of each token (0 at padding).
        rollout_seq_logp: (B, G) float32 their sums. rollout_items: (B, G) int64 item, -1 if not a valid SID.
        rollout_injected: (B, G) bool rollouts replaced by y* (``rl.inject_target``).
        rollout_version: weight version that generated them.
    Reward fields (reward pool):
        rewards: (B, G) float32. rollout_scores: (B, G) float32 ranker probability (NaN where not scored).
        target_scores: (B,) float32 ranker probability of y* (NaN where unknown).
        sanity_scores: (B, K) float32 ranker probability of K random catalog items (``rl.adagrpo.sanity_negatives``).
    Preference fields (controller, from the run's preference pairs; preference objectives only):
        pref_items: (B, K) int64 candidates, positives first (y* in slot 0), -1 = empty slot.
        pref_tokens: (B, K, Tg) int64 their SID tokens (+ <eos>), <pad> for empty slots.
        pref_positive: (B, K) bool.
    info: scalar side results (counters, timings, versions) of the stages that ran.
    """

    rows: Optional[np.ndarray] = None
    users: Optional[np.ndarray] = None
    history: Optional[np.ndarray] = None
    targets: Optional[np.ndarray] = None
    target_tokens: Optional[np.ndarray] = None
    prompt_ids: Optional[np.ndarray] = None
    prompt_mask: Optional[np.ndarray] = None
    future: Optional[np.ndarray] = None
    banned: Optional[np.ndarray] = None
    seen: Optional[np.ndarray] = None
    sanity_items: Optional[np.ndarray] = None
    rollout_tokens: Optional[np.ndarray] = None
    rollout_logp: Optional[np.ndarray] = None
    rollout_seq_logp: Optional[np.ndarray] = None
    rollout_items: Optional[np.ndarray] = None
    rollout_injected: Optional[np.ndarray] = None
    rollout_version: int = 0
    rewards: Optional[np.ndarray] = None
    rollout_scores: Optional[np.ndarray] = None
    target_scores: Optional[np.ndarray] = None
    sanity_scores: Optional[np.ndarray] = None
    pref_items: Optional[np.ndarray] = None
    pref_tokens: Optional[np.ndarray] = None
    pref_positive: Optional[np.ndarray] = None
    info: dict = field(default_factory=dict)

    def arrays(self) -> dict[str, np.ndarray]:
        """Every array field that is set, by name."""
        return {f.name: v for f in dataclasses.fields(self)
                if isinstance(v := getattr(self, f.name), np.ndarray)}

    def __len__(self) -> int:
        """B, the number of prompts."""
        sizes = {a.shape[0] for a in self.arrays().values()}
        if len(sizes) != 1:
            raise ValueError(f"StepBatch: arrays disagree on the number of prompts: {self.shapes()}")
        return sizes.pop()

    def shapes(self) -> dict[str, tuple]:
        return {k: tuple(v.shape) for k, v in self.arrays().items()}

    def select(self, start: int, end: int) -> "StepBatch":
        """Prompts ``start:end`` (contiguous copies, ready for another process); scalars and ``info`` kept."""
        return dataclasses.replace(self, **{k: np.ascontiguousarray(v[start:end]) for k, v in self.arrays().items()},
                                   info=dict(self.info))

    def update(self, **fields) -> "StepBatch":
        """A copy with ``fields`` set (what a pool adds to the batch it was given)."""
        return dataclasses.replace(self, **fields)

    @classmethod
    def concat(cls, parts: list["StepBatch"]) -> "StepBatch":
        """Shards joined in order; per-token rollout fields right-padded to the longest shard's T."""
        if not parts:
            raise ValueError("StepBatch.concat: no parts")
        names = parts[0].arrays().keys()
        out = {}
        for k in names:
            arrs = [p.arrays()[k] for p in parts]
            if k in _TOKEN_PAD:
                T = max(a.shape[2] for a in arrs)
                arrs = [np.pad(a, ((0, 0), (0, 0), (0, T - a.shape[2])), constant_values=_TOKEN_PAD[k]) for a in arrs]
            out[k] = np.concatenate(arrs)
        return dataclasses.replace(parts[0], **out, info=dict(parts[0].info))

    def shard_bounds(self, k: int) -> list[tuple[int, int]]:
        """``k`` contiguous, near-equal (start, end) prompt ranges (some empty when B < k)."""
        B = len(self)
        return [(i * B // k, (i + 1) * B // k) for i in range(k)]

    def tensors(self, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        """Every array field as a tensor on ``device`` (the learner converts once per step)."""
        return {k: torch.as_tensor(np.array(v)).to(device) for k, v in self.arrays().items()}
