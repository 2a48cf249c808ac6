"""One generic group of Ray actors: placement, names, restarts, and sharded calls that survive a dead actor.

The rollout pool, the reward pool and the learner group are each an :class:`ActorGroup` of their own
actor class. :meth:`ActorGroup.map` is the one place that re-issues work: a call whose actor died
(``RayActorError``), timed out, or whose result the caller rejects (:class:`Reissue`, e.g. rollouts from
stale weights) is sent again — to the same actor once Ray has restarted it (``pin=True``), or to any actor
with room (``pin=False``) — at most ``max_retries`` times per shard. Results are kept by shard index, so a
shard is never lost or counted twice. Unpinned, an actor that died is quarantined: no shard goes to it until
a cheap ``pid`` probe answers (a restarting actor refuses calls at once, which would otherwise burn a shard's
retries in milliseconds).
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from typing import Any, Callable, Optional

import ray
from ray.exceptions import GetTimeoutError, RayActorError
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

log = logging.getLogger("rl_align")


class Reissue(Exception):
    """Raised by a ``check`` callback: the result is unusable, send the shard again."""


class ActorGroup:
    """``n`` actors of ``cls``.

    Args:
        cls: a plain class (wrapped by ``ray.remote`` here). args: ``args(i)`` → constructor arguments of actor i.
        cpus, gpus: resources per actor. bundles: optional [(placement_group, bundle_index)] per actor.
        names: optional ``names(i)`` → the named actor ``i`` becomes (find it with ``ray.util.list_named_actors``).
        python: the actors' Python executable (Ray ``runtime_env`` ``py_executable``); None = the driver's.
        max_restarts: Ray restarts of a dead actor (-1 = always; 0 = the caller rebuilds the whole group).
        kind: what the actors are, for messages ("rollout worker", "reward replica"…).
    """

    def __init__(self, cls: type, args: Callable[[int], tuple], n: int, *, cpus: float = 1.0, gpus: float = 0.0,
                 bundles: Optional[list] = None, names: Optional[Callable[[int], str]] = None,
                 python: Optional[str] = None, max_restarts: int = -1, kind: str = "actor") -> None:
        remote_cls = ray.remote(cls)
        self.kind, self.retries, self.errors = kind, 0, []
        self.actors = []
        for i in range(n):
            opts: dict[str, Any] = {"num_cpus": cpus, "num_gpus": gpus, "max_restarts": max_restarts,
                                    "max_task_retries": 0}
            if names is not None:
                opts["name"] = names(i)
            if python:
                opts["runtime_env"] = {"py_executable": python}
            if bundles:
                pg, idx = bundles[i]
                opts["scheduling_strategy"] = PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=idx)
            self.actors.append(remote_cls.options(**opts).remote(*args(i)))

    def __len__(self) -> int:
        return len(self.actors)

    def call_all(self, method: str, *args: Any) -> list:
        """``method(*args)`` on every actor; their results in actor order."""
        return ray.get([getattr(a, method).remote(*args) for a in self.actors])

    def call_each(self, method: str, per_actor: list[tuple], *common: Any) -> list:
        """``method(*per_actor[i], *common)`` on actor i; results in actor order (no re-issue)."""
        return ray.get([getattr(a, method).remote(*args, *common) for a, args in zip(self.actors, per_actor)])

    def pids(self) -> list[int]:
        return ray.get([a.pid.remote() for a in self.actors])

    def map(self, method: str, shards: list[Optional[tuple]], *common: Any, pin: bool, max_inflight: int = 1,
            max_retries: int = 3, check: Optional[Callable[[Any], None]] = None,
            before_retry: Optional[Callable[[int, int], None]] = None) -> list:
        """``method(*shards[i], *common)`` for every shard (None shards are skipped); results by shard index.

        ``pin``: shard i runs on actor i (len(shards) ≤ len(self)), else on any actor with fewer than
        ``max_inflight`` calls in flight, round-robin. ``check(result)`` may raise :class:`Reissue`.
        ``before_retry(actor, attempt)`` runs before a shard is sent again (wait for a restart, resync…).
        """
        results: list = [None] * len(shards)
        attempts = [0] * len(shards)
        pending = deque(i for i, s in enumerate(shards) if s is not None)
        inflight: dict = {}
        load = [0] * len(self.actors)
        nxt = 0
        down = _Quarantine(self.actors, self.kind)
        while pending or inflight:
            down.poll()
            while pending:
                i = pending[0]
                a = i if pin else self._free_actor(load, max_inflight, down, nxt)
                if a is None or load[a] >= max_inflight:
                    break
                if not pin:
                    nxt = (a + 1) % len(self.actors)
                pending.popleft()
                inflight[getattr(self.actors[a], method).remote(*shards[i], *common)] = (i, a)
                load[a] += 1
            if not inflight:  # every actor is quarantined: wait for a probe
                time.sleep(0.05)
                continue
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=0.25 if down else None)
            if not ready:
                continue
            i, a = inflight.pop(ready[0])
            load[a] -= 1
            try:
                res = ray.get(ready[0])
                if check is not None:
                    check(res)
            except (RayActorError, GetTimeoutError, Reissue) as err:
                attempts[i] += 1
                self._failed(i, a, err, attempts[i], max_retries)
                if not pin and isinstance(err, RayActorError):
                    down.add(a)
                if before_retry is not None:
                    before_retry(a, attempts[i])
                pending.appendleft(i)
                continue
            results[i] = res
        return results

    def _free_actor(self, load: list[int], max_inflight: int, down: "_Quarantine", nxt: int) -> Optional[int]:
        """The next actor round-robin from ``nxt`` with fewer than ``max_inflight`` calls and not quarantined."""
        free = [j for j in range(len(self.actors)) if load[j] < max_inflight and j not in down]
        return min(free, key=lambda j: (j - nxt) % len(self.actors)) if free else None

    def _failed(self, i: int, a: int, err: Exception, attempt: int, max_retries: int) -> None:
        """Count a lost shard ``i`` (on actor ``a``); raise once it has failed more than ``max_retries`` times."""
        self.retries += 1
        self.errors.append(f"shard {i} on {self.kind} {a}: {type(err).__name__}")
        if attempt > max_retries:
            raise RuntimeError(f"{self.kind} shard {i} failed {attempt} times; last error: {err}") from err
        log.warning("%s %d lost shard %d (%s); re-issuing (attempt %d)", self.kind, a, i, type(err).__name__,
                    attempt + 1)

    def shutdown(self) -> None:
        """Kill every actor (no restart); safe to call twice or on actors that already died."""
        for a in self.actors:
            try:
                ray.kill(a, no_restart=True)
            except Exception:  # already dead
                pass
        self.actors = []


class _Quarantine:
    """Actors that died during an unpinned :meth:`ActorGroup.map`; one leaves when its ``pid`` probe answers.

    Probes back off (0.1 s doubling to 5 s); if every actor stays down for ``give_up_s`` the map fails.
    """

    def __init__(self, actors: list, kind: str, give_up_s: float = 300.0) -> None:
        self.actors, self.kind, self.give_up_s = actors, kind, give_up_s
        self.next_probe: dict[int, float] = {}
        self.probes: dict = {}
        self.fails: dict[int, int] = {}
        self.all_down_since: Optional[float] = None

    def __contains__(self, a: int) -> bool:
        return a in self.next_probe or a in self.probes.values()

    def __bool__(self) -> bool:
        return bool(self.next_probe or self.probes)

    def add(self, a: int) -> None:
        self.fails[a] = self.fails.get(a, 0) + 1
        self.next_probe[a] = time.time() + min(5.0, 0.1 * 2 ** (self.fails[a] - 1))

    def poll(self) -> None:
        """Send due probes, collect answered ones; raise once every actor has been down for ``give_up_s``."""
        if not self:
            self.all_down_since = None
            return
        now = time.time()
        for a, t in list(self.next_probe.items()):
            if t <= now:
                del self.next_probe[a]
                self.probes[self.actors[a].pid.remote()] = a
        ready, _ = ray.wait(list(self.probes), num_returns=len(self.probes), timeout=0) if self.probes else ([], [])
        for ref in ready:
            a = self.probes.pop(ref)
            try:
                ray.get(ref)
                log.info("%s %d answers again", self.kind, a)
            except RayActorError:
                self.add(a)
        everyone = all(j in self for j in range(len(self.actors)))
        self.all_down_since = (self.all_down_since or now) if everyone else None
        if everyone and now - self.all_down_since > self.give_up_s:
            raise RuntimeError(f"every {self.kind} has been unreachable for {self.give_up_s:.0f} s")


def actor_pid() -> int:
    """The calling actor's process id (what ``pid`` methods of actor classes return)."""
    return os.getpid()
