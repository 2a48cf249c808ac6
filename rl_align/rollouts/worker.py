"""Ray rollout workers: each wraps a :class:`rl_align.rollouts.base.RolloutEngine`; a pool spreads prompts over them.

Weights arrive as an object ref of a state dict with a version number. A worker
that died is restarted by Ray (``max_restarts=-1``) from the starting policy on
disk, so its version falls behind: the pool notices (every result carries the
version that produced it), pushes the current weights again and re-issues the
shard. Results are assembled by shard index, so a prompt is never dropped or
generated twice into the batch.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Optional

import numpy as np
import torch

from rl_align.rollouts.base import ENGINES, GenerationRequest
from rl_align.sid.catalog import PAD, SidCatalog

log = logging.getLogger("rl_align")


class RolloutWorkerImpl:
    """Engine holder (the Ray actor class is built from it in :func:`rollout_actor_class`)."""

    def __init__(self, engine: str, policy_dir: str, catalog_dir: str, threads: int = 1, seed: int = 0,
                 device: str = "cpu") -> None:
        torch.set_num_threads(max(1, int(threads)))
        self.catalog = SidCatalog.load(catalog_dir)
        self.engine = ENGINES.get(engine).from_policy_dir(policy_dir, self.catalog, device)
        self.seed = seed
        self.calls = 0

    def generate(self, shard_id: int, input_ids: np.ndarray, attention_mask: np.ndarray, n: int, mode: str,
                 constrained: bool, temperature: float, seeds: np.ndarray,
                 banned: Optional[np.ndarray] = None) -> tuple[int, dict]:
        """``seeds``: (N,) one sampling seed per prompt (a prompt samples the same on any worker);
        ``banned``: optional (N, S) items each prompt may not generate (-1 padded; prefix-level exclusion)."""

        ids, mask = torch.from_numpy(np.array(input_ids)), torch.from_numpy(np.array(attention_mask))
        out = self.engine.generate(GenerationRequest(ids, mask,
                                                     n=n, mode=mode, constrained=constrained,
                                                     temperature=temperature,
                                                     banned_items=None if banned is None
                                                     else torch.from_numpy(np.array(banned, np.int64)),
                                                     seeds=torch.from_numpy(np.array(seeds, np.int64))))
        self.calls += 1
        return shard_id, {"sequences": out.sequences.numpy(), "token_logprobs": out.token_logprobs.numpy(),
                          "seq_logprob": out.seq_logprob.numpy(), "items": out.items.numpy(),
                          "version": int(out.version)}

    def load_weights(self, state_dict: dict, version: int) -> int:
        self.engine.load_weights(state_dict, version)
        return version

    def version(self) -> int:
        return int(self.engine.version)

    def pid(self) -> int:
        return os.getpid()


def rollout_actor_class():
    import ray

    return ray.remote(RolloutWorkerImpl)


class RolloutPool:
    """N rollout workers; ``generate`` splits prompts into one shard per worker and re-issues lost shards.

    Args:
        engine: registered engine name. policy_dir / catalog_dir: starting policy and catalog.
        n_workers, cpus, gpus: actors and their resources. bundles: optional [(pg, index)] per worker.
        max_retries: re-issues of one shard before failing the step.
        python: the workers' Python executable (Ray ``runtime_env`` ``py_executable``); None = the driver's.
        name_prefix: if given, worker i is the named actor ``<prefix>rollout-<i>``.
    """

    def __init__(self, engine: str, policy_dir: str, catalog_dir: str, n_workers: int = 1, cpus: float = 1.0,
                 gpus: float = 0.0, bundles: Optional[list] = None, seed: int = 0, max_retries: int = 3,
                 python: Optional[str] = None, name_prefix: Optional[str] = None) -> None:
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        cls = rollout_actor_class()
        self.actors = []
        for i in range(n_workers):
            opts = {"num_cpus": cpus, "num_gpus": gpus, "max_restarts": -1, "max_task_retries": 0}
            if name_prefix:
                opts["name"] = f"{name_prefix}rollout-{i}"
            if python:  # e.g. vLLM in its own venv (same Ray, Python and torch versions as the driver)
                opts["runtime_env"] = {"py_executable": python}
            if bundles:
                pg, idx = bundles[i]
                opts["scheduling_strategy"] = PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=idx)
            self.actors.append(cls.options(**opts).remote(engine, policy_dir, catalog_dir, max(1, int(cpus)), seed,
                                                          "cuda" if gpus > 0 else "cpu"))
        self.version = 0
        self.weights_ref = None
        self.max_retries = max_retries
        self.retries = 0

    def pids(self) -> list[int]:
        import ray

        return ray.get([a.pid.remote() for a in self.actors])

    def load_weights(self, weights_ref, version: int) -> None:
        """Push a state dict (object ref) to every worker; remembered for workers that restart later."""
        import ray
        from ray.exceptions import RayActorError

        self.weights_ref, self.version = weights_ref, version
        refs = [a.load_weights.remote(weights_ref, version) for a in self.actors]
        for i, ref in enumerate(refs):
            try:
                ray.get(ref)
            except RayActorError as err:  # died during the sync: wait for Ray's restart, then push again
                log.warning("rollout worker %d lost during weight sync (%s); resyncing", i, type(err).__name__)
                self.retries += 1
                self._resync_when_back(self.actors[i])

    def _resync(self, actor) -> None:
        import ray

        if self.weights_ref is not None:
            ray.get(actor.load_weights.remote(self.weights_ref, self.version))

    def _resync_when_back(self, actor, timeout_s: float = 120.0) -> None:
        """Push the current weights to ``actor`` once Ray has restarted it (RayActorError until then)."""
        from ray.exceptions import RayActorError

        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self._resync(actor)
                return
            except RayActorError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def generate(self, input_ids: np.ndarray, attention_mask: np.ndarray, n: int, mode: str, constrained: bool,
                 temperature: float, seed: int, banned: Optional[np.ndarray] = None) -> dict:
        """Rollouts for every prompt (arrays concatenated in prompt order) produced by the current version."""
        import ray
        from ray.exceptions import RayActorError

        N = input_ids.shape[0]
        k = len(self.actors)
        # one seed per prompt (its position in the step's batch): sharding does not change what is sampled
        seeds = np.random.SeedSequence([int(seed) & (2**63 - 1), N]).generate_state(N, np.uint64)
        seeds = (seeds >> np.uint64(1)).astype(np.int64)
        bounds = [(i * N // k, (i + 1) * N // k) for i in range(k)]
        results: list[Optional[dict]] = [None] * k
        attempts = [0] * k

        def submit(i, actor_idx):
            s, e = bounds[i]
            return self.actors[actor_idx].generate.remote(i, input_ids[s:e], attention_mask[s:e], n, mode,
                                                          constrained, temperature, seeds[s:e],
                                                          None if banned is None else banned[s:e])

        inflight = {submit(i, i): i for i in range(k) if bounds[i][1] > bounds[i][0]}  # empty shards stay None
        while inflight:
            ready, _ = ray.wait(list(inflight), num_returns=1)
            ref = ready[0]
            i = inflight.pop(ref)
            try:
                sid, res = ray.get(ref)
                if res["version"] != self.version:
                    raise _StaleVersion(res["version"])
            except (RayActorError, _StaleVersion) as err:
                attempts[i] += 1
                self.retries += 1
                if attempts[i] > self.max_retries:
                    raise RuntimeError(f"rollout shard {i} failed {attempts[i]} times: {err}") from err
                log.warning("rollout worker %d lost shard %d (%s); re-issuing", i, i, type(err).__name__)
                self._resync_when_back(self.actors[i])  # wait for Ray's restart, then bring its weights up to date
                inflight[submit(i, i)] = i
                continue
            results[sid] = res
        parts = [r for r in results if r is not None]
        T = max(r["sequences"].shape[2] for r in parts)  # shards may stop at different lengths: right-pad

        def pad(a, value):
            return np.pad(a, ((0, 0), (0, 0), (0, T - a.shape[2])), constant_values=value)

        return {"sequences": np.concatenate([pad(r["sequences"], PAD) for r in parts]),
                "token_logprobs": np.concatenate([pad(r["token_logprobs"], 0.0) for r in parts]),
                "seq_logprob": np.concatenate([r["seq_logprob"] for r in parts]),
                "items": np.concatenate([r["items"] for r in parts]), "version": self.version}

    def shutdown(self) -> None:
        import ray

        for a in self.actors:
            try:
                ray.kill(a, no_restart=True)
            except Exception:
                pass
        self.actors = []


class _StaleVersion(Exception):
    def __init__(self, got: int) -> None:
        super().__init__(f"rollouts came from weight version {got}")
