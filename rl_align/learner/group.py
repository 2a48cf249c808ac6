"""The LearnerGroup: M Ray actors forming one torch.distributed group, each with a DeepSpeed engine.

The controller sees one object: ``step(batch)`` shards the prompts over the
ranks, ``weights()`` returns rank 0's state dict as an object ref (for the
rollout workers), ``save/load`` write and read one checkpoint directory, and
``restart(checkpoint)`` rebuilds the whole group after a rank died.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Optional

import numpy as np

from rl_align.config import RlConfig
from rl_align.learner.worker import LearnerRank

log = logging.getLogger("rl_align")


class LearnerGroup:
    """Args:
        cfg: learners, resources, the objective and DeepSpeed settings.
        policy_dir: starting policy (HF folder). catalog_dir: the run's catalog.
        bundles: optional [(placement_group, bundle_index)] per rank.
    """

    def __init__(self, cfg: RlConfig, policy_dir: str, catalog_dir: str, bundles: Optional[list] = None) -> None:
        self.cfg, self.policy_dir, self.catalog_dir, self.bundles = cfg, policy_dir, catalog_dir, bundles
        self.actors: list = []
        self._start()

    def _start(self) -> None:
        import ray
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        c = self.cfg
        cls = ray.remote(LearnerRank)
        self.actors = []
        for r in range(c.learners):
            opts = {"num_cpus": c.cpus_per_learner, "num_gpus": c.gpus_per_learner, "max_restarts": 0}
            if self.bundles:
                pg, idx = self.bundles[r]
                opts["scheduling_strategy"] = PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=idx)
            self.actors.append(cls.options(**opts).remote(r, c.learners, dataclasses.asdict(c), self.policy_dir,
                                                          self.catalog_dir, max(1, int(c.cpus_per_learner)),
                                                          c.gpus_per_learner > 0))
        addr, port = ray.get(self.actors[0].address.remote())
        ray.get([a.setup.remote(addr, port) for a in self.actors])

    def pids(self) -> list[int]:
        import ray

        return ray.get([a.pid.remote() for a in self.actors])

    def step(self, batch: dict, seed: int = 0) -> dict:
        """Shard ``batch`` (numpy arrays with B prompts first) over the ranks; metrics from rank 0 (all-reduced).

        ``seed`` fixes every rank's dropout for this step, so a resumed run repeats an uninterrupted one."""
        import ray

        B = batch["prompt_ids"].shape[0]
        per = B // len(self.actors)
        shards = [{k: np.ascontiguousarray(v[r * per:(r + 1) * per]) for k, v in batch.items()}
                  for r in range(len(self.actors))]
        outs = ray.get([a.train_step.remote(s, seed) for a, s in zip(self.actors, shards)])
        return outs[0]

    def weights(self):
        """Object ref of rank 0's CPU state dict."""
        return self.actors[0].state_dict.remote()

    def save(self, directory: str) -> None:
        import ray

        ray.get([a.save.remote(directory) for a in self.actors])

    def load(self, directory: str) -> int:
        import ray

        return ray.get([a.load.remote(directory) for a in self.actors])[0]

    def save_policy(self, directory: str, extra: Optional[dict] = None) -> None:
        import ray

        ray.get([a.save_policy.remote(directory, extra) for a in self.actors])

    def shutdown(self) -> None:
        import ray

        for a in self.actors:
            try:
                ray.kill(a, no_restart=True)
            except Exception:  # already dead
                pass
        self.actors = []

    def restart(self, checkpoint: Optional[str]) -> int:
        """Kill every rank, rebuild the group and load ``checkpoint`` (None = the starting policy)."""
        self.shutdown()
        self._start()
        return self.load(checkpoint) if checkpoint else 0
