"""Ray rollout workers: each wraps a :class:`rl_align.rollouts.base.RolloutEngine`; a pool spreads prompts over them.

Weights arrive as an object ref of a state dict with a version number. A worker
that died is restarted by Ray (``max_restarts=-1``) from the starting policy on
disk, so its version falls behind: the pool notices (every result carries the
version that produced it), pushes the current weights again and re-issues the
shard (:meth:`rl_align.actors.ActorGroup.map`). Results are assembled by shard
index, so a prompt is never dropped or generated twice into the batch.
"""

from __future__ import annotations

import logging
import time
from typing import Optional

import numpy as np
import ray
import torch
from ray.exceptions import RayActorError

from rl_align.actors import ActorGroup, Reissue, actor_pid
from rl_align.algos.batch import StepBatch
from rl_align.rollouts.base import ENGINES, GenerationRequest
from rl_align.sid.catalog import SidCatalog
from rl_align.utils.plugins import load_plugins

log = logging.getLogger("rl_align")


class RolloutWorker:
    """Holds one engine (a Ray actor in :class:`RolloutPool`; a plain object in tests)."""

    def __init__(self, engine: str, policy_dir: str, catalog_dir: str, threads: int = 1,
                 device: str = "cpu", plugins: tuple = ()) -> None:
        load_plugins(list(plugins))  # a plug-in engine registers in this process too
        torch.set_num_threads(max(1, int(threads)))
        self.catalog = SidCatalog.load(catalog_dir)
        self.engine = ENGINES.get(engine).from_policy_dir(policy_dir, self.catalog, device)
        self.calls = 0

    def generate(self, shard: StepBatch, seeds: np.ndarray, n: int, mode: str, constrained: bool,
                 temperature: float) -> StepBatch:
        """The rollout fields of ``shard``'s prompts (only those travel back). ``seeds``: (b,) one sampling seed per prompt, so a prompt samples
        the same on any worker; ``shard.banned`` (b, S) items it may not generate (prefix-level exclusion)."""
        as_t = lambda a: None if a is None else torch.from_numpy(np.array(a, np.int64))  # noqa: E731
        out = self.engine.generate(GenerationRequest(
            as_t(shard.prompt_ids), as_t(shard.prompt_mask), n=n, mode=mode, constrained=constrained,
            temperature=temperature, banned_items=as_t(shard.banned), seeds=as_t(seeds)))
        self.calls += 1
        return StepBatch(rollout_tokens=out.sequences.numpy(), rollout_logp=out.token_logprobs.numpy(),
                         rollout_seq_logp=out.seq_logprob.numpy(), rollout_items=out.items.numpy(),
                         rollout_version=int(out.version))

    def load_weights(self, state_dict: dict, version: int) -> int:
        self.engine.load_weights(state_dict, version)
        return version

    def version(self) -> int:
        return int(self.engine.version)

    def pid(self) -> int:
        return actor_pid()


def prompt_seeds(seed: int, n: int) -> np.ndarray:
    """(n,) int64 one sampling seed per prompt of a step (its position in the batch), independent of sharding."""
    s = np.random.SeedSequence([int(seed) & (2**63 - 1), n]).generate_state(n, np.uint64)
    return (s >> np.uint64(1)).astype(np.int64)


class RolloutPool:
    """N rollout workers; ``generate`` gives each one shard of the prompts and re-issues lost shards.

    Args:
        engine: registered engine name. policy_dir / catalog_dir: starting policy and catalog.
        n_workers, cpus, gpus: actors and their resources. bundles: optional [(pg, index)] per worker.
        max_retries: re-issues of one shard before failing the step.
        python: the workers' Python executable (Ray ``runtime_env`` ``py_executable``); None = the driver's.
        name_prefix: if given, worker i is the named actor ``<prefix>rollout-<i>``.
        plugins: modules / files every worker imports first (``RunConfig.plugins``).
    """

    def __init__(self, engine: str, policy_dir: str, catalog_dir: str, n_workers: int = 1, cpus: float = 1.0,
                 gpus: float = 0.0, bundles: Optional[list] = None, max_retries: int = 3,
                 python: Optional[str] = None, name_prefix: Optional[str] = None, plugins: tuple = ()) -> None:
        device = "cuda" if gpus > 0 else "cpu"
        args = (engine, policy_dir, catalog_dir, max(1, int(cpus)), device, tuple(plugins))
        self.group = ActorGroup(RolloutWorker, lambda i: args,
                                n_workers, cpus=cpus, gpus=gpus, bundles=bundles, python=python,
                                names=(lambda i: f"{name_prefix}rollout-{i}") if name_prefix else None,
                                kind="rollout worker")
        self.version = 0
        self.weights_ref = None
        self.max_retries = max_retries

    @property
    def actors(self) -> list:
        return self.group.actors

    @property
    def retries(self) -> int:
        return self.group.retries

    def pids(self) -> list[int]:
        return self.group.pids()

    def load_weights(self, weights_ref, version: int) -> None:
        """Push a state dict (object ref) to every worker; remembered for workers that restart later."""
        self.weights_ref, self.version = weights_ref, version
        refs = [a.load_weights.remote(weights_ref, version) for a in self.actors]
        for i, ref in enumerate(refs):
            try:
                ray.get(ref)
            except RayActorError as err:  # died during the sync: wait for Ray's restart, then push again
                log.warning("rollout worker %d lost during weight sync (%s); resyncing", i, type(err).__name__)
                self.group.retries += 1
                self._resync_when_back(i)

    def _resync_when_back(self, i: int, attempt: int = 0, timeout_s: float = 120.0) -> None:
        """Push the current weights to worker ``i`` once Ray has restarted it (RayActorError until then)."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if self.weights_ref is not None:
                    ray.get(self.actors[i].load_weights.remote(self.weights_ref, self.version))
                return
            except RayActorError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def _check(self, res: StepBatch) -> None:
        if res.rollout_version != self.version:
            raise Reissue(f"rollouts came from weight version {res.rollout_version}, expected {self.version}")

    def generate(self, batch: StepBatch, n: int, mode: str, constrained: bool, temperature: float,
                 seed: int) -> StepBatch:
        """``batch`` with rollouts for every prompt (in prompt order), all from the current weight version."""
        seeds = prompt_seeds(seed, len(batch))
        prompts = StepBatch(prompt_ids=batch.prompt_ids, prompt_mask=batch.prompt_mask, banned=batch.banned)
        shards = [(prompts.select(s, e), seeds[s:e]) if e > s else None
                  for s, e in batch.shard_bounds(len(self.actors))]
        parts = self.group.map("generate", shards, n, mode, constrained, temperature, pin=True,
                               max_retries=self.max_retries, check=self._check, before_retry=self._resync_when_back)
        out = StepBatch.concat([p for p in parts if p is not None])
        return batch.update(rollout_tokens=out.rollout_tokens, rollout_logp=out.rollout_logp,
                            rollout_seq_logp=out.rollout_seq_logp, rollout_items=out.rollout_items,
                            rollout_version=self.version)

    def shutdown(self) -> None:
        self.group.shutdown()
