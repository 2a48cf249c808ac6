"""Serving rewards: an in-process :class:`RewardScorer`, the Ray ``RewardActor`` around it, and a :class:`RewardPool`.

The pool splits a request into chunks of whole groups (so group-normalised
rewards see the whole group), keeps at most ``max_inflight`` chunks per replica
(back-pressure), and when a replica dies with chunks in flight re-issues exactly
those chunks — to another replica or to the same one once Ray has restarted it
(``max_restarts=-1``). Each chunk's result is written once into its own slice,
so nothing is lost or counted twice; a chunk that fails ``max_retries`` times
fails the request with a clear error.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import ray
import torch

from rl_align.actors import ActorGroup, actor_pid
from rl_align.algos.batch import StepBatch
from rl_align.config import RewardConfig, from_dict
from rl_align.ranker.model import MODEL_FILE
from rl_align.rewards.functions import CompositeReward, RewardContext, RewardInputs
from rl_align.rewards.scorers import load_scorer, with_fault
from rl_align.utils.plugins import load_plugins

log = logging.getLogger("rl_align")


def ranker_version(ranker_dir: str | Path) -> str:
    """Content digest of a ranker checkpoint (its weights file): two replicas agree iff they serve the same model."""
    h = hashlib.sha256()
    with open(Path(ranker_dir) / MODEL_FILE, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


class RewardScorer:
    """Loads a ranker (+ optional item embeddings) and turns requests into rewards. No Ray; used by the actor.

    Args:
        ranker_dir: a :func:`rl_align.ranker.model.save_ranker` directory (None if no ``ranker`` term is used).
        cfg: reward functions, weights, normalisation and floor.
        item_embeddings_path: ``.npy`` (n_items, d) for the ``semantic`` reward.
        n_items: catalog size (taken from the ranker when it is loaded).
        threads: torch threads (default: leave torch's setting).
    """

    def __init__(self, ranker_dir: Optional[str | Path], cfg: RewardConfig,
                 item_embeddings_path: Optional[str | Path] = None, n_items: Optional[int] = None,
                 device: str = "cpu", threads: Optional[int] = None) -> None:
        if threads:
            torch.set_num_threads(int(threads))
        self.cfg = cfg
        self.device = torch.device(device)
        emb = None
        if item_embeddings_path is not None:
            e = np.load(item_embeddings_path, allow_pickle=False).astype(np.float32)
            emb = torch.from_numpy(e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)).to(self.device)
        ctx = RewardContext(ranker_normalize=cfg.ranker_normalize, item_embeddings=emb,
                            future_discount=cfg.future_discount, ranker_topk=cfg.ranker_topk)
        self.composite = CompositeReward(cfg.functions, cfg.floor, ctx, cfg.seen_reward)
        self.model = None
        self.n_users = None
        self.version = "no-ranker"
        if ranker_dir is not None:
            self.load(ranker_dir)
        elif self.composite.needs_ranker:
            raise ValueError("reward.functions uses 'ranker' but no ranker checkpoint was given")
        if self.composite.needs_item_embeddings and emb is None:
            raise ValueError(f"reward.functions {sorted(cfg.functions)} read item embeddings but no "
                             "item_embeddings_path was given")
        self.n_items = self.model.n_items if self.model is not None else n_items
        if self.n_items is None:
            raise ValueError("RewardScorer needs n_items when no ranker is loaded")
        if emb is not None and emb.shape[0] != self.n_items:
            raise ValueError(f"{item_embeddings_path}: {emb.shape[0]} rows, but the catalog has {self.n_items} items")
        self.served = 0

    def load(self, ranker_dir: str | Path, version: Optional[str] = None) -> str:
        """(Re)load the ranker (made faulty for ``reward.fault_share`` of the users if asked); returns its version
        (content digest unless given)."""
        self.model = with_fault(load_scorer(ranker_dir), self.cfg).to(self.device)
        self.n_users = self.model.n_users
        self.version = version or ranker_version(ranker_dir)
        return self.version

    @torch.no_grad()
    def score(self, users: np.ndarray, history: np.ndarray, items: np.ndarray, targets: np.ndarray,
              with_target_scores: bool = False, future: Optional[np.ndarray] = None,
              seen: Optional[np.ndarray] = None, sanity_items: Optional[np.ndarray] = None) -> dict:
        """Rewards of B groups of G items.

        Args:
            users: (B,) int64. history: (B, H) int64, -1 padded. items: (B, G) int64, -1 = invalid SID.
            targets: (B,) int64 ground truth (-1 unknown).
            with_target_scores: also return the ranker's probability of each ground truth (for AdaGRPO).
            future: (B, F) int64 the user's next events after each prompt, ground truth first, -1 padded
                (for ``future_match``; None = the ground truth only).
            seen: (B, S) int64 the items each user saw before the prompt, -1 padded (``reward.seen_reward``).
            sanity_items: (B, K) int64 catalog items scored by the ranker alone, in the same forward pass as the
                rollouts (AdaGRPO's sanity test); they get no reward.
        Returns:
            dict with ``rewards`` (B, G) float32, ``ranker_scores`` (B, G) float32 (NaN where not scored),
            ``target_scores`` (B,) if asked, ``sanity_scores`` (B, K) float32 if sanity_items were given,
            counters ``n_invalid``, ``n_nonfinite``, ``ranker_nonfinite``,
            ``n_seen`` (items scored with ``reward.seen_reward``), and ``version``.
        """
        t0 = time.perf_counter()
        inp = RewardInputs(*(torch.as_tensor(np.array(a), dtype=torch.long, device=self.device)
                             for a in (users, history, items, targets)))
        if future is not None:
            inp.future = torch.as_tensor(np.array(future), dtype=torch.long, device=self.device)
        if seen is not None:
            inp.seen = torch.as_tensor(np.array(seen), dtype=torch.long, device=self.device)
        if sanity_items is not None:
            inp.sanity_items = torch.as_tensor(np.array(sanity_items), dtype=torch.long, device=self.device)
        inp.validate(self.n_items, self.n_users)
        extra = inp.sanity_items
        scores = tgt = sanity = None
        ranker_nf = 0
        if self.model is not None and (self.composite.needs_ranker or with_target_scores or extra is not None):
            cands = torch.cat([inp.items, inp.targets[:, None]], 1) if with_target_scores else inp.items
            if extra is not None:
                cands = torch.cat([cands, extra], 1)
            p = torch.sigmoid(self.model(inp.users, inp.history, cands).float())
            bad = ~torch.isfinite(p)
            ranker_nf = int(bad.sum())
            if ranker_nf:
                log.warning("ranker: %d non-finite score(s); their rewards get the floor", ranker_nf)
            if extra is not None:
                p, sanity = p[:, :-extra.shape[1]], p[:, -extra.shape[1]:]
            if with_target_scores:   # NaN for prompts without y* (serving prompts, targets == -1)
                p, tgt = p[:, :-1], torch.where(inp.targets >= 0, p[:, -1], torch.full_like(p[:, -1], float("nan")))
            scores = torch.where(inp.items >= 0, p, torch.full_like(p, float("nan")))
            inp.ranker_scores = scores
        out = self.composite(inp)
        self.served += int(inp.items.numel())
        res = {"rewards": out.rewards.cpu().numpy(),
               "ranker_scores": (scores.cpu().numpy() if scores is not None
                                 else np.full(inp.items.shape, np.nan, np.float32)),
               "n_invalid": out.n_invalid, "n_nonfinite": out.n_nonfinite, "ranker_nonfinite": ranker_nf,
               "n_seen": out.n_seen,
               "version": self.version, "compute_s": time.perf_counter() - t0}
        if with_target_scores:
            res["target_scores"] = (tgt.cpu().numpy() if tgt is not None
                                    else np.full(inp.items.shape[0], np.nan, np.float32))
        if extra is not None:
            res["sanity_scores"] = (sanity.cpu().numpy() if sanity is not None
                                    else np.full(tuple(extra.shape), np.nan, np.float32))
        return res

    def score_batch(self, batch: StepBatch, with_target_scores: bool = True) -> StepBatch:
        """``batch`` (users, history, targets, rollout_items, optional future, seen and sanity_items) with its reward
        fields set (``sanity_scores`` too when it carries sanity_items); the counters and the ranker version go to
        ``info``."""
        res = self.score(batch.users, batch.history, batch.rollout_items, batch.targets, with_target_scores,
                         batch.future, batch.seen, batch.sanity_items)
        info = {k: res[k] for k in ("n_invalid", "n_nonfinite", "ranker_nonfinite", "n_seen", "compute_s")}
        return batch.update(rewards=res["rewards"], rollout_scores=res["ranker_scores"],
                            target_scores=res.get("target_scores"), sanity_scores=res.get("sanity_scores"),
                            info={**batch.info, **info, "ranker_version": res["version"]})

    def health(self) -> dict:
        return {"ok": True, "pid": os.getpid(), "version": self.version, "served_pairs": self.served}


class RewardReplica:
    """One replica of the pool (a Ray actor in :class:`RewardPool`): a :class:`RewardScorer` built from plain
    arguments (a config dict, paths), so it can start in another process."""

    def __init__(self, ranker_dir: Optional[str], cfg: dict, item_embeddings_path: Optional[str] = None,
                 n_items: Optional[int] = None, device: str = "cpu", threads: int = 1, plugins: tuple = ()) -> None:
        load_plugins(list(plugins))  # a plug-in reward registers in this process too
        self.scorer = RewardScorer(ranker_dir, from_dict(RewardConfig, cfg, source="reward"), item_embeddings_path,
                                   n_items, device, threads)

    def score(self, chunk: StepBatch, with_target_scores: bool) -> StepBatch:
        """The reward fields of ``chunk`` (only those travel back)."""
        out = self.scorer.score_batch(chunk, with_target_scores)
        return StepBatch(rewards=out.rewards, rollout_scores=out.rollout_scores, target_scores=out.target_scores,
                         sanity_scores=out.sanity_scores, info=out.info)

    def load(self, ranker_dir: str, version: Optional[str] = None) -> str:
        return self.scorer.load(ranker_dir, version)

    def health(self) -> dict:
        return self.scorer.health()

    def pid(self) -> int:
        return actor_pid()


@dataclass
class PoolStats:
    """Counters of a pool's lifetime: requests, chunks, re-issued chunks, floored rewards."""

    requests: int = 0
    chunks: int = 0
    retries: int = 0
    n_invalid: int = 0
    n_nonfinite: int = 0
    ranker_nonfinite: int = 0
    errors: list = field(default_factory=list)


class RewardPool:
    """N :class:`RewardReplica` actors behind one ``score`` call, with back-pressure and re-issue on replica death.

    Args:
        cfg: replicas, resources, chunk size, in-flight limit, retries and the reward functions.
        ranker_dir: ranker checkpoint every replica loads (and reloads after a restart).
        item_embeddings_path: ``.npy`` for the ``semantic`` reward.
        n_items: catalog size when no ranker is used.
        name_prefix: if given, replica i is the named actor ``<prefix>reward-<i>`` (find it with
            ``ray.util.list_named_actors`` to inspect or debug it).
        plugins: modules / files every replica imports first (``RunConfig.plugins``).
        bundles: optional [(placement_group, bundle_index)] per replica.
    """

    def __init__(self, cfg: RewardConfig, ranker_dir: Optional[str | Path], item_embeddings_path=None,
                 n_items: Optional[int] = None, name_prefix: Optional[str] = None, plugins: tuple = (),
                 bundles: Optional[list] = None) -> None:
        self.cfg = cfg
        args = (str(ranker_dir) if ranker_dir else None, dataclasses.asdict(cfg),
                str(item_embeddings_path) if item_embeddings_path else None, n_items,
                "cuda" if cfg.gpus_per_replica > 0 else "cpu", max(1, int(cfg.cpus_per_replica)), tuple(plugins))
        self.group = ActorGroup(RewardReplica, lambda i: args, cfg.replicas, cpus=cfg.cpus_per_replica,
                                gpus=cfg.gpus_per_replica, kind="reward replica", bundles=bundles,
                                names=(lambda i: f"{name_prefix}reward-{i}") if name_prefix else None)
        self.stats = PoolStats()
        self.version = self._agreed_version()

    @property
    def actors(self) -> list:
        return self.group.actors

    def _agreed_version(self) -> str:
        versions = {h["version"] for h in self.group.call_all("health")}
        if len(versions) != 1:
            raise RuntimeError(f"reward replicas serve different ranker versions: {sorted(versions)}")
        return versions.pop()

    def health(self, timeout: float = 10.0) -> list[dict]:
        """One entry per replica: its health dict, or ``{"ok": False, "error": ...}``."""
        out = []
        for i, a in enumerate(self.actors):
            try:
                out.append({"replica": i, **ray.get(a.health.remote(), timeout=timeout)})
            except Exception as e:  # a dead or restarting replica is reported, not raised
                out.append({"replica": i, "ok": False, "error": f"{type(e).__name__}: {e}"})
        return out

    def reload(self, ranker_dir: str | Path, version: Optional[str] = None) -> str:
        """Load a new ranker on every replica; returns the agreed version."""
        self.group.call_all("load", str(ranker_dir), version or ranker_version(ranker_dir))
        self.version = self._agreed_version()
        return self.version

    def score(self, batch: StepBatch, with_target_scores: bool = True) -> StepBatch:
        """``batch`` with rewards (same contract as :meth:`RewardScorer.score_batch`), chunks of whole groups spread
        over the replicas."""
        items = batch.rollout_items
        if items is None or items.ndim != 2 or items.shape[0] == 0 or items.shape[1] == 0:
            raise ValueError(f"rollout_items: expected a non-empty (B, G) array, got "
                             f"{None if items is None else items.shape}")
        B, G = items.shape
        K = 0 if batch.sanity_items is None else batch.sanity_items.shape[1]
        rows = max(1, self.cfg.chunk_size // (G + K))
        # only what a reward reads goes to the replicas (not the prompts' or rollouts' tokens)
        request = StepBatch(users=batch.users, history=batch.history, targets=batch.targets, rollout_items=items,
                            future=batch.future, seen=batch.seen, sanity_items=batch.sanity_items)
        chunks = [(request.select(s, min(s + rows, B)),) for s in range(0, B, rows)]
        before = self.group.retries
        parts = self.group.map("score", chunks, with_target_scores, pin=False, max_inflight=self.cfg.max_inflight,
                               max_retries=self.cfg.max_retries)
        self.stats.retries += self.group.retries - before
        self.stats.errors = self.group.errors
        versions = {p.info["ranker_version"] for p in parts}
        if len(versions) != 1:
            raise RuntimeError(f"reward request scored by different ranker versions: {sorted(versions)}")
        info = {k: sum(p.info[k] for p in parts) for k in ("n_invalid", "n_nonfinite", "ranker_nonfinite",
                                                            "n_seen", "compute_s")}
        for k in ("n_invalid", "n_nonfinite", "ranker_nonfinite"):
            setattr(self.stats, k, getattr(self.stats, k) + info[k])
        self.stats.requests += 1
        self.stats.chunks += len(chunks)
        out = StepBatch.concat(parts)
        return batch.update(rewards=out.rewards, rollout_scores=out.rollout_scores, target_scores=out.target_scores,
                            sanity_scores=out.sanity_scores,
                            info={**batch.info, **info, "ranker_version": versions.pop(), "chunks": len(chunks)})

    def shutdown(self) -> None:
        self.group.shutdown()
