"""The LearnerGroup: M Ray actors forming one torch.distributed group, each with a DeepSpeed engine.

The controller sees one object: ``step(batch)`` shards the prompts over the
ranks, ``weights()`` returns rank 0's state dict as an object ref (for the
rollout workers), ``save/load`` write and read one checkpoint directory, and
``restart(checkpoint)`` rebuilds the whole group after a rank died (a rank is
not restarted alone: the process group would not survive it).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Optional

from rl_align.actors import ActorGroup
from rl_align.algos.batch import StepBatch
from rl_align.config import RlConfig
from rl_align.learner.worker import LearnerRank

log = logging.getLogger("rl_align")


class LearnerGroup:
    """Args:
        cfg: learners, resources, the objective and DeepSpeed settings.
        policy_dir: starting policy (HF folder). catalog_dir: the run's catalog.
        bundles: optional [(placement_group, bundle_index)] per rank.
        plugins: modules / files every rank imports first (``RunConfig.plugins``: a plug-in objective).
    """

    def __init__(self, cfg: RlConfig, policy_dir: str, catalog_dir: str, bundles: Optional[list] = None,
                 plugins: tuple = ()) -> None:
        self.cfg, self.policy_dir, self.catalog_dir, self.bundles = cfg, policy_dir, catalog_dir, bundles
        self.plugins = tuple(plugins)
        self._start()

    def _start(self) -> None:
        c = self.cfg
        args = lambda r: (r, c.learners, dataclasses.asdict(c), self.policy_dir, self.catalog_dir,  # noqa: E731
                          max(1, int(c.cpus_per_learner)), c.gpus_per_learner > 0, self.plugins)
        self.group = ActorGroup(LearnerRank, args, c.learners, cpus=c.cpus_per_learner, gpus=c.gpus_per_learner,
                                bundles=self.bundles, max_restarts=0, kind="learner")
        addr, port = self.group.call_each("address", [()])[0]
        self.group.call_all("setup", addr, port)

    @property
    def actors(self) -> list:
        return self.group.actors

    def pids(self) -> list[int]:
        return self.group.pids()

    def step(self, batch: StepBatch, seed: int = 0) -> dict:
        """One optimizer step over ``batch``, its prompts split evenly over the ranks; metrics from rank 0
        (all-reduced). ``seed`` fixes every rank's dropout for this step, so a resumed run repeats an
        uninterrupted one."""
        shards = [(batch.select(s, e),) for s, e in batch.shard_bounds(len(self.actors))]
        return self.group.call_each("train_step", shards, seed)[0]

    def weights(self):
        """Object ref of rank 0's CPU state dict."""
        return self.actors[0].state_dict.remote()

    def save(self, directory: str) -> None:
        self.group.call_all("save", directory)

    def load(self, directory: str) -> int:
        return self.group.call_all("load", directory)[0]

    def save_policy(self, directory: str, extra: Optional[dict] = None) -> None:
        self.group.call_all("save_policy", directory, extra)

    def shutdown(self) -> None:
        self.group.shutdown()

    def restart(self, checkpoint: Optional[str]) -> int:
        """Kill every rank, rebuild the group and load ``checkpoint`` (None = the starting policy)."""
        self.shutdown()
        self._start()
        return self.load(checkpoint) if checkpoint else 0
