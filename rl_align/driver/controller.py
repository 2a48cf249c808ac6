"""The single controller of alignment on Ray (``rl-align rl CONFIG``; the ``ray job submit`` entrypoint).

One step:
  prompts (B training examples, in a seeded order) → RolloutPool (G SIDs each, with log-probs)
  → RewardPool (rewards + ranker scores of rollouts and of the ground truth)
  → LearnerGroup (objective; AdaGRPO's gate is computed there from these diagnostics, without gradient)
  → versioned weight sync learner → rollout workers
  → every ``eval_every`` steps: valid HR@10/NDCG@10 + free-decoding hallucination (local torch engine)
  → every ``checkpoint_every`` steps: atomic checkpoint (learner + optimizer + step + version + metrics).

Every step's randomness derives from (seed, step), so a resumed run repeats an
uninterrupted one. Phase times, losses, gate statistics and rollout quality go
to ``rl/metrics.jsonl`` and wandb.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import is_dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import ray
from ray.util.placement_group import placement_group
from tqdm import tqdm

from rl_align.algos import OBJECTIVES
from rl_align.algos.batch import StepBatch
from rl_align.algos.gates import random_negatives
from rl_align.algos.injection import inject_targets
from rl_align.config import ConfigError, RunConfig, from_dict, to_dict
from rl_align.data.prompts import future_events, pad_cat, recent_examples, seen_before, serving_prompts
from rl_align.data.split import train_popularity
from rl_align.eval.evaluate import eval_set, hallucination_rate, metrics, rank_with_engine
from rl_align.eval.hybrid import hybrid_rankings, valid_record
from rl_align.learner.group import LearnerGroup
from rl_align.policy.data import build_prompts
from rl_align.policy.item_head import load_item_head
from rl_align.policy.model import load_policy
from rl_align.preferences import load_or_build
from rl_align.ray_utils import init_ray
from rl_align.rewards.actor import RewardPool
from rl_align.rewards.functions import REWARDS
from rl_align.rewards.scorers import scorer_path
from rl_align.rollouts import build_engine
from rl_align.rollouts.worker import RolloutPool
from rl_align.run_dir import resume_view
from rl_align.sid.catalog import PAD, SidCatalog
from rl_align.tracking import Tracker
from rl_align.utils.io import load_npz, read_json, write_json

log = logging.getLogger("rl_align")


class RlConfigError(ValueError):
    """An invalid combination of settings, found before any actor starts."""


def validate(cfg: RunConfig, run_path: Path) -> Path:
    """Check what the run must hold for the rl settings (the settings themselves were checked when the config
    loaded: :mod:`rl_align.checks`); returns the starting policy dir. Raises RlConfigError."""
    r = cfg.rl
    if r.rollout_python is not None:
        py = Path(r.rollout_python).expanduser()
        if not (py.is_file() and os.access(py, os.X_OK)):
            raise RlConfigError(f"rl.rollout_python: {r.rollout_python} is not an executable Python (for vLLM in its "
                                "own venv: .venv-vllm/bin/python, built by `make test`)")
        r.rollout_python = str(py.absolute())
    elif r.engine == "vllm":
        import importlib.util

        if importlib.util.find_spec("vllm") is None:
            raise RlConfigError("rl.engine: vllm is not installed in this Python; install it or point "
                                "rl.rollout_python at a venv that has it (e.g. .venv-vllm/bin/python)")
    catalog_dir = run_path / "sids" / "catalog"
    if not catalog_dir.exists():
        raise RlConfigError(f"{catalog_dir}: no catalog in the run (run the sids stage first)")
    policy = run_path / ("sft/best_policy" if r.init == "sft" else "sft/final_policy")
    if not policy.exists():
        raise RlConfigError(f"{policy}: no starting policy (run the sft stage first)")
    catalog = SidCatalog.load(catalog_dir)
    load_policy(policy, catalog)  # VocabMismatchError (a ValueError) on another catalog
    if (OBJECTIVES.get(r.algo).uses_preferences and r.preference.exposure_share > 0
            and not (run_path / "exposure" / "log.npz").exists()):
        raise RlConfigError(f"{run_path / 'exposure'}: rl.preference.exposure_share > 0 takes negatives from the "
                            "exposure logs (run the exposure stage first, or set it to 0)")
    scorer = scorer_path(run_path, cfg.reward.scorer)
    if needs_ranker(cfg) and not (scorer / "model.safetensors").exists():
        how = ("run the exposure and ranker stages first" if cfg.reward.scorer == "din" else
               f"train it: rl-align ranker scorers {run_path} {cfg.reward.scorer}")
        raise RlConfigError(f"{scorer}: {r.algo} needs the reward model {cfg.reward.scorer!r} ({how})")
    _check_reward_embeddings(cfg, run_path, catalog.n_items)
    if r.steps_from is not None:
        r.steps = steps_from(cfg, run_path)
    return policy


# what a refit may change against the run it takes its step count from
_REFIT_FREE = {"serving_split", "steps_from"}


def steps_from(cfg: RunConfig, run_path: Path) -> int:
    """The best-on-valid step of the alignment ``rl.steps_from`` names in ``run_path`` (its ``summary.json``),
    after checking that it ran with these rl and reward settings (schedule fields, ``serving_split`` and
    ``steps_from`` apart). Raises RlConfigError naming the file and what differs."""
    src = run_path / "rl" / cfg.rl.steps_from / "summary.json"
    if not src.exists():
        raise RlConfigError(f"rl.steps_from: {src} does not exist (run the alignment tagged "
                            f"{cfg.rl.steps_from!r} in this run first)")
    summary = read_json(src)
    try:
        saved = [from_dict(type(sec), summary[name], source=str(src), prefix=f"{name}.")
                 for name, sec in (("rl", cfg.rl), ("reward", cfg.reward))]
    except ConfigError as e:
        raise RlConfigError(f"rl.steps_from: {e}") from e
    diff = _differing("rl", _refit_view(cfg.rl), _refit_view(saved[0]), cfg.rl)
    diff += _differing("reward", resume_view(cfg.reward), resume_view(saved[1]), cfg.reward)
    if diff:
        raise RlConfigError(f"rl.steps_from: {src} ran with other settings ({', '.join(diff)}); a refit "
                            "takes the step count valid chose for the same setting")
    best = int(summary["best_step"])
    if best < 1:
        raise RlConfigError(f"rl.steps_from: {src} chose step {best} on valid (the starting policy); a refit of "
                            "0 steps is the SFT policy itself")
    log.info("rl: %d steps, the best-on-valid step of %s", best, src.parent.name)
    return best


def _refit_view(r) -> dict:
    """What a refit must share with the alignment it takes its step count from: what a checkpoint must share to
    be resumed (non-default, non-schedule fields), but the serving split and ``steps_from`` itself."""
    return {k: v for k, v in resume_view(r).items() if k not in _REFIT_FREE}


def _differing(prefix: str, now: dict, saved: dict, section) -> list[str]:
    """Dotted names of the keys whose values differ between two resume views of config ``section``'s type,
    nested sections key by key (a view leaves out a section at its defaults)."""
    out = []
    for k in sorted(set(now) | set(saved)):
        a, b, sub = now.get(k), saved.get(k), getattr(section, k)
        if is_dataclass(sub):
            out += _differing(f"{prefix}.{k}", a or {}, b or {}, sub)
        elif a != b:
            out.append(f"{prefix}.{k}")
    return out


def sanity_weights(cfg: RunConfig, split: dict, n_items: int) -> Optional[np.ndarray]:
    """(n_items,) draw weights of AdaGRPO's sanity items: training popularity with ``rl.adagrpo.sanity_draw:
    popularity``, else None (uniform)."""
    return train_popularity(split, n_items) if cfg.rl.adagrpo.sanity_draw == "popularity" else None


def reward_embeddings(cfg: RunConfig, run_path: Path) -> Optional[Path]:
    """The run's item vectors (``embed/item_emb.npy``, (n_items, d)) when a reward term reads them
    (``semantic``), else None: reward replicas then load nothing they do not use."""
    return run_path / "embed" / "item_emb.npy" if _embedding_terms(cfg) else None


def _embedding_terms(cfg: RunConfig) -> list[str]:
    """The reward terms of ``cfg`` that read item vectors."""
    return [n for n in cfg.reward.functions if REWARDS.get(n).needs_item_embeddings]


def _check_reward_embeddings(cfg: RunConfig, run_path: Path, n_items: int) -> None:
    """A reward term that reads item vectors needs the embed stage's file, one row per catalog item (objectives
    without rollouts call no reward)."""
    path = reward_embeddings(cfg, run_path)
    if path is None or not OBJECTIVES.get(cfg.rl.algo).uses_rollouts:
        return
    if not path.is_file():
        raise RlConfigError(f"{path}: reward.functions {_embedding_terms(cfg)} read the run's item vectors (run "
                            "the embed stage first)")
    rows = np.load(path, mmap_mode="r", allow_pickle=False).shape[0]
    if rows != n_items:
        raise RlConfigError(f"{path}: {rows} rows, but the run's catalog has {n_items} items (re-run the embed "
                            "stage)")


def rl_bundles(cfg: RunConfig) -> list[dict]:
    """Resources of one alignment run, one bundle per actor: learners, then rollout workers, then reward replicas
    (a Ray Tune trial reserves these after its own bundle)."""
    r, w = cfg.rl, cfg.reward

    def bundle(cpu: float, gpu: float) -> dict:
        return {"CPU": cpu, **({"GPU": gpu} if gpu else {})}

    learners = [bundle(r.cpus_per_learner, r.gpus_per_learner)] * r.learners
    if not OBJECTIVES.get(r.algo).uses_rollouts:  # nll and the preference objectives: learners only
        return learners
    return (learners + [bundle(r.cpus_per_rollout_worker, r.gpus_per_rollout_worker)] * r.rollout_workers
            + [bundle(w.cpus_per_replica, w.gpus_per_replica)] * w.replicas)


def cpu_needs(cfg: RunConfig) -> str:
    """``learners a×b + rollout workers c×d + reward replicas e×f``: what resource errors list."""
    r, w = cfg.rl, cfg.reward
    if not OBJECTIVES.get(r.algo).uses_rollouts:
        return f"learners {r.learners}×{r.cpus_per_learner:g}"
    return (f"learners {r.learners}×{r.cpus_per_learner:g} + rollout workers {r.rollout_workers}×"
            f"{r.cpus_per_rollout_worker:g} + reward replicas {w.replicas}×{w.cpus_per_replica:g}")


def needs_ranker(cfg: RunConfig) -> bool:
    """Whether alignment with ``cfg`` reads the ranker (its objective's gate, a ``ranker`` reward term, or the
    tilted GRPO rewards of ``rl.reward_tilt``)."""
    objective = OBJECTIVES.get(cfg.rl.algo)
    return objective.uses_rollouts and (objective.needs_ranker or "ranker" in cfg.reward.functions
                                        or cfg.rl.reward_tilt > 0)


def prompt_order(n: int, seed: int, step: int, B: int) -> np.ndarray:
    """Rows of the training examples used at ``step``: epochs of seeded permutations, B rows per step."""
    start = step * B
    out = []
    while len(out) < B:
        epoch, pos = divmod(start + len(out), n)
        perm = np.random.default_rng(seed * 7919 + epoch).permutation(n)
        out.extend(perm[pos: pos + B - len(out)].tolist())
    return np.array(out, np.int64)


class Controller:
    """Owns the schedule; actors do the work. ``run()`` returns the final summary."""

    def __init__(self, cfg: RunConfig, run_path: Path, resume: bool = True,
                 reporter: Optional[Callable[[dict], None]] = None, placement: Optional[tuple] = None) -> None:
        """``reporter``: called with each validation's metrics (Ray Tune's ``tune.report`` in a sweep).
        ``placement``: (placement group, first bundle) of bundles already reserved for :func:`rl_bundles` (a Tune
        trial's); None = reserve a placement group of our own."""
        self.cfg, self.run = cfg, Path(run_path).resolve()
        self.policy_dir = validate(cfg, self.run)
        self.out = self.run / "rl" / cfg.rl.out_tag()
        self.out.mkdir(parents=True, exist_ok=True)
        self.resume, self.reporter, self.placement = resume, reporter, placement

    # ------------------------------------------------------------------ setup
    def _placement(self) -> tuple:
        """(placement group, first bundle) for learners, rollout workers and reward replicas (:func:`rl_bundles`)."""
        if self.placement is not None:
            return self.placement
        bundles = rl_bundles(self.cfg)
        need_cpu = sum(b["CPU"] for b in bundles)
        have_cpu = ray.cluster_resources().get("CPU", 0.0)
        if need_cpu > have_cpu + 1e-9:
            raise RlConfigError(f"rl needs {need_cpu:g} CPUs ({cpu_needs(self.cfg)}) but the Ray cluster has "
                                f"{have_cpu:g}: lower rl.cpus_per_* / "
                                "reward.cpus_per_replica (fractions are fine) or add nodes")
        pg = placement_group(bundles, strategy="PACK" if self.cfg.rl.placement == "pack" else "SPREAD")
        ray.get(pg.ready(), timeout=300)
        self._own_pg = pg
        return pg, 0

    def _setup(self) -> None:
        """Start Ray, load the run's data, place and start learners, rollout workers and reward replicas."""
        r = self.cfg.rl
        init_ray()
        self.catalog = SidCatalog.load(self.run / "sids" / "catalog")
        self.split = load_npz(self.run / "data" / "split.npz")
        # the prompt pool is fixed for the run: select it once, not every step
        self.prompt_pool = recent_examples(self.split["train_users"], self.split["train_positions"], r.recent_prompts)
        self.serving = serving_prompts(self.split, r.serving_split) if r.serving_prompts > 0 else None
        self.sanity_weights = sanity_weights(self.cfg, self.split, self.catalog.n_items)
        self.pairs = None
        if OBJECTIVES.get(r.algo).uses_preferences:  # prompts = the preference table's rows, in table order
            self.pairs = load_or_build(self.cfg, self.run)
            self.prompt_pool = self.pairs.rows
        pg, first = self._placement()
        at = lambda start, n: [(pg, first + start + i) for i in range(n)]  # noqa: E731
        self.learners = LearnerGroup(r, str(self.policy_dir), str(self.run / "sids" / "catalog"),
                                     at(0, r.learners), plugins=self.cfg.plugins)
        # the driver's own engine for periodic validation (weights pulled from the learner)
        self.eval_model = load_policy(self.policy_dir, self.catalog)
        self.eval_engine = build_engine("torch", model=self.eval_model, catalog=self.catalog)
        # a starting policy's item head stays frozen (with rl.item_head_trunk: sft, on a frozen copy of its trunk):
        # validation fuses it with the aligned policy's beam
        self.item_head = load_item_head(self.policy_dir, self.catalog,
                                        self.eval_model.get_input_embeddings().weight.shape[1],
                                        own_trunk=r.item_head_trunk == "sft")
        self.rollouts = self.rewards = None
        if not OBJECTIVES.get(r.algo).uses_rollouts:  # no rollout workers or reward replicas to start
            return
        self.rollouts = RolloutPool(r.engine, str(self.policy_dir), str(self.run / "sids" / "catalog"),
                                    r.rollout_workers, r.cpus_per_rollout_worker, r.gpus_per_rollout_worker,
                                    at(r.learners, r.rollout_workers), python=r.rollout_python,
                                    name_prefix=self._actor_prefix(), plugins=self.cfg.plugins)
        ranker = scorer_path(self.run, self.cfg.reward.scorer)
        self.rewards = RewardPool(self.cfg.reward, ranker if ranker.exists() else None,
                                  reward_embeddings(self.cfg, self.run), n_items=self.catalog.n_items,
                                  name_prefix=self._actor_prefix(), plugins=self.cfg.plugins,
                                  bundles=at(r.learners + r.rollout_workers, self.cfg.reward.replicas))

    def _actor_prefix(self) -> str:
        """Actor names ``rl-align/<run>/<tag>/<job id>/rollout-<i>`` and ``…/reward-<i>``: one per job."""
        return f"rl-align/{self.run.name}/{self.out.name}/{ray.get_runtime_context().get_job_id()}/"

    # ------------------------------------------------------------------ pieces of a step
    def _prompts(self, step: int) -> StepBatch:
        """The prompt fields of step ``step``'s batch: training examples in the seeded order of
        :func:`prompt_order`, then (``rl.serving_prompts``) serving prompts in an order of their own."""
        r = self.cfg.rl
        n_serving = round(r.prompts_per_step * r.serving_prompts) if self.serving is not None else 0
        pool = self.prompt_pool
        idx = prompt_order(pool.size, r.seed, step, r.prompts_per_step - n_serving)
        rows = pool[idx]
        sp = self.split
        users, history = sp["train_users"][rows], sp["train_history"][rows]
        targets = sp["train_targets"][rows].astype(np.int64)
        need_seen = r.exclude_seen or self.cfg.reward.seen_reward is not None
        seen = seen_before(sp, rows) if need_seen else None
        if n_serving:
            sv = prompt_order(self.serving["users"].size, r.seed + 1_000_003, step, n_serving)
            rows = np.r_[rows, np.full(n_serving, -1, np.int64)]
            users = np.r_[users, self.serving["users"][sv]]
            history = pad_cat(history, self.serving["history"][sv])
            targets = np.r_[targets, np.full(n_serving, -1, np.int64)]
            seen = pad_cat(seen, self.serving["seen"][sv]) if seen is not None else None
        ids, mask = build_prompts(history, self.catalog, users)
        target_tokens = self.catalog.tokens[np.maximum(targets, 0)].astype(np.int64)
        target_tokens[targets < 0] = PAD   # no y*: an empty continuation (NLL and the gate skip the row)
        pref = {}
        if self.pairs is not None:
            items, tokens, positive = self.pairs.candidates(idx, self.catalog)
            pref = {"pref_items": items, "pref_tokens": tokens, "pref_positive": positive}
        return StepBatch(**pref, rows=rows, users=users, history=history, targets=targets,
                         target_tokens=target_tokens, prompt_ids=ids.numpy(), prompt_mask=mask.numpy(),
                         future=(future_events(sp, rows, self.cfg.reward.future_window)
                                 if "future_match" in self.cfg.reward.functions else None),
                         banned=seen if r.exclude_seen else None,
                         seen=seen if self.cfg.reward.seen_reward is not None else None)

    def _rollouts(self, b: StepBatch, step: int, rec: dict) -> StepBatch:
        """``b`` with G rollouts per prompt (and y* injected when ``rl.inject_target``); rollout stats → ``rec``."""
        r = self.cfg.rl
        t = time.perf_counter()
        b = self.rollouts.generate(b, r.group_size, r.rollout_mode, r.constrained, r.temperature,
                                   r.seed * 100003 + step)
        rec["rollout_s"] = time.perf_counter() - t
        if self.catalog.has_buckets:   # a bucket code stands for the item its within-bucket scorer puts first
            b = b.update(rollout_items=self.catalog.buckets.resolve(b.rollout_items, b.history, b.banned, b.users))
        it = b.rollout_items
        known = b.targets >= 0   # serving prompts have no y*
        if known.any():
            rec["rollout_hit"] = float((it[known] == b.targets[known, None]).any(1).mean())
        if b.banned is not None:  # exclusion is the engine's guarantee; count breaches, expected 0
            rec["rollout_seen"] = int(((it[:, :, None] == b.banned[:, None, :]) & (it[:, :, None] >= 0)).sum())
        if r.inject_target:
            seqs, lps, items, injected = inject_targets(b.rollout_tokens, b.rollout_logp, it, b.targets,
                                                        b.target_tokens)
            b = b.update(rollout_tokens=seqs, rollout_logp=lps, rollout_items=items, rollout_injected=injected)
            rec["injected_share"] = float(injected.any(1).mean())
        return b

    def _rewards(self, b: StepBatch, rec: dict, step: int) -> StepBatch:
        """``b`` with rewards and ranker scores of the rollouts and of y* (and of random items for AdaGRPO's sanity
        test); reward stats → ``rec``."""
        t = time.perf_counter()
        r = self.cfg.rl
        gated = r.algo == "adagrpo" or (r.algo == "tilted" and r.tilt_gate)
        k = r.adagrpo.sanity_negatives if gated else 0
        if k:   # scored in the same request as the rollouts, by the ranker alone
            b = b.update(sanity_items=random_negatives(b.targets, self.catalog.n_items, k, r.seed * 100003 + step,
                                                       weights=self.sanity_weights))
        b = self.rewards.score(b, with_target_scores=True).update(sanity_items=None)
        rec["reward_s"] = time.perf_counter() - t
        rec.update(rollout_valid=float((b.rollout_items >= 0).mean()),
                   rollout_unique=float(np.mean([len(set(x.tolist())) for x in b.rollout_items])) / self.cfg.rl.group_size,
                   reward_floored=int(b.info["n_invalid"] + b.info["n_nonfinite"]))
        if b.seen is not None:   # reward.seen_reward: the share of rollouts the user had already seen
            rec["reward_seen"] = float(b.info["n_seen"] / b.rollout_items.size)
        return b

    def _learn(self, b: StepBatch, step: int, rec: dict) -> dict:
        """One learner-group step; a dead rank restarts the whole alignment from the last checkpoint."""
        t = time.perf_counter()
        try:
            m = self.learners.step(b, seed=self.cfg.rl.seed * 100003 + step)
        except ray.exceptions.RayActorError as err:
            ck = self.latest_checkpoint()
            log.warning("rl: a learner died (%s); the group restarts from %s", type(err).__name__, ck)
            raise _Restart(ck) from err
        rec["learn_s"] = time.perf_counter() - t
        return m

    def _sync(self, state: dict, rec: dict):
        """Push the new weights (version + 1) to the rollout workers; returns their object ref."""
        t = time.perf_counter()
        state["version"] += 1
        w = self.learners.weights()
        if self.rollouts is not None:
            self.rollouts.load_weights(w, state["version"])
        rec["sync_s"] = time.perf_counter() - t
        return w

    def _record(self, rec: dict, m: dict, b: StepBatch) -> dict:
        """The learner's metrics, per-sample gate diagnostics as percentiles + histograms, and throughput; returns
        the per-sample lists (for wandb histograms)."""
        r = self.cfg.rl
        lists = {k: m.pop(k) for k in ("difficulty_values", "disc_values") if k in m}
        rec.update(m)
        for k, v in lists.items():
            a = np.asarray(v, np.float64)
            a = a[np.isfinite(a)]
            if a.size:
                rec[f"{k[:-7]}_p10"], rec[f"{k[:-7]}_p50"], rec[f"{k[:-7]}_p90"] = np.percentile(a, [10, 50, 90])
                rec[f"{k[:-7]}_hist"] = np.histogram(a, bins=10)[0].tolist()
        step_s = sum(rec.get(k, 0.0) for k in ("rollout_s", "reward_s", "learn_s", "sync_s"))
        rec["step_s"] = step_s
        has_rollouts = b.rollout_tokens is not None
        rec["samples_per_s"] = r.prompts_per_step * (r.group_size if has_rollouts else 1) / step_s
        if has_rollouts:
            rec["tokens_per_s"] = float((b.rollout_tokens != 0).sum()) / step_s
        return lists

    @staticmethod
    def _samples(b: StepBatch, n: int = 8) -> tuple[list[str], list[list]]:
        """A table of the step's first ``n`` prompts: history tail, y*, the rollouts with rewards and ranker scores."""
        cols = ["user", "history (last 5)", "target", "rollouts", "rewards", "ranker scores"]
        rows = []
        for i in range(min(n, len(b))):
            h = [int(x) for x in b.history[i] if x >= 0][-5:]
            rows.append([int(b.users[i]), str(h), int(b.targets[i]), str(b.rollout_items[i].tolist()),
                         str(np.round(b.rewards[i], 3).tolist()), str(np.round(b.rollout_scores[i], 3).tolist())])
        return cols, rows

    def _validate(self, weights_ref, version: int) -> dict:
        r, e = self.cfg.rl, self.cfg.eval
        self.eval_engine.load_weights(ray.get(weights_ref), version)
        es = eval_set(self.split, "valid", r.eval_users)
        t = time.perf_counter()
        ranked, scores = rank_with_engine(self.eval_engine, self.catalog, es, max(10, e.beams), e.exclude_history,
                                          e.batch_size)
        m = metrics(ranked, es.targets, [10])
        out = {"valid_hr@10": m["hr@10"], "valid_ndcg@10": m["ndcg@10"]}
        if self.item_head is not None:  # the figures the eval stage will report: the fused list at its best β
            fused, _ = hybrid_rankings(self.eval_model, self.item_head, self.catalog, es, ranked, scores,
                                       e.item_head_union, e.item_head_betas, e.exclude_history, e.batch_size)
            by_beta = {b: metrics(r, es.targets, [10]) for b, r in fused.items()}
            out = valid_record((m["hr@10"], m["ndcg@10"]),
                               {b: (v["hr@10"], v["ndcg@10"]) for b, v in by_beta.items()})
        sub = eval_set(self.split, "valid", min(256, es.targets.size))
        hall = hallucination_rate(self.eval_engine, self.catalog, sub, e.free_beams, e.batch_size)
        return {**out, "valid_free_hallucination": hall, "eval_seconds": time.perf_counter() - t}

    # ------------------------------------------------------------------ checkpoints
    def _ckpt_dir(self, step: int) -> Path:
        return self.out / "checkpoints" / f"step_{step:06d}"

    def latest_checkpoint(self) -> Optional[Path]:
        root = self.out / "checkpoints"
        done = sorted(p for p in root.glob("step_*") if (p / "state.json").exists()) if root.exists() else []
        return done[-1] if done else None

    def _digest(self) -> str:
        """What a checkpoint must share with the current config to be resumed (everything but the schedule and
        placement; fields at their defaults do not count, so a newer rl-align that adds fields still resumes)."""
        import hashlib

        keep = resume_view(self.cfg.rl)
        keep["reward"] = resume_view(self.cfg.reward)
        return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def _checkpoint(self, step: int, state: dict) -> None:
        final = self._ckpt_dir(step)
        tmp = final.with_name(final.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        self.learners.save(str(tmp / "learner"))
        write_json(tmp / "state.json", state)  # written last: a directory without it is incomplete
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        done = sorted(p for p in final.parent.glob("step_*") if not p.name.endswith(".tmp"))
        for old in done[: -self.cfg.rl.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)

    # ------------------------------------------------------------------ the loop
    def _start_state(self) -> tuple[dict, Tracker]:
        """The loop state (fresh, or from the last checkpoint when resuming) and the metrics tracker."""
        r = self.cfg.rl
        state = {"step": 0, "version": 0, "best_valid_hr@10": -1.0, "best_step": -1, "evals": []}
        ck = self.latest_checkpoint() if self.resume else None
        if ck is not None and read_json(ck / "state.json").get("digest") != self._digest():
            raise RlConfigError(f"{ck}: checkpoint was made with other rl/reward settings; use another rl.tag or "
                                "--no-resume")
        state["digest"] = self._digest()
        if ck is not None:
            state = read_json(ck / "state.json")
            self.learners.load(str(ck / "learner"))
            log.info("rl: resumed from %s (step %d, weight version %d)", ck, state["step"], state["version"])
            for ev in state["evals"]:  # a restored Tune trial sees the same sequence of reports as an uninterrupted one
                if self.reporter is not None and ev["step"] > 0:
                    self.reporter(dict(ev))
        tracker = Tracker(self.out, name=f"{self.run.name}-rl-{r.algo}", config=to_dict(self.cfg),
                          use_wandb=self.cfg.wandb)
        if ck is not None:
            n = tracker.drop_after(state["step"])
            if n:
                log.info("rl: dropped %d metric record(s) logged after the checkpoint; those steps are redone", n)
        elif not self.resume:
            tracker.drop_after(-1)
        tracker.log({"event": "resume" if ck is not None else "start", "step": state["step"], "algo": r.algo})
        return state, tracker

    def _evaluate(self, state: dict, done: int, w, rec: dict, force: bool = False) -> None:
        """Validate every ``eval_every`` steps (and when ``force``); keep the best policy."""
        r = self.cfg.rl
        if not (force or done % r.eval_every == 0 or done == r.steps):
            return
        ev = self._validate(w, state["version"])
        rec.update(ev)
        state["evals"].append({"step": done, **ev})
        if self.reporter is not None and done > 0:  # step 0 is the starting policy, the same for every trial
            self.reporter({"step": done, **ev})
        if ev["valid_hr@10"] > state["best_valid_hr@10"]:
            state.update({"best_valid_hr@10": ev["valid_hr@10"], "best_step": done})
            self.learners.save_policy(str(self.out / "best_policy"), {"rl_step": done, **ev})

    def run_loop(self) -> dict:
        """Steps from the last checkpoint (or 0) to ``rl.steps``; returns the summary written to summary.json."""
        r = self.cfg.rl
        self._setup()
        state, tracker = self._start_state()
        t0 = time.perf_counter()
        w = self.learners.weights()
        if self.rollouts is not None:
            self.rollouts.load_weights(w, state["version"])
        sync_s = time.perf_counter() - t0
        if state["step"] == 0 and not state["evals"]:
            rec0 = {}
            self._evaluate(state, 0, w, rec0, force=True)
            tracker.log({"step": 0, **rec0}, step=0)
        uses_rollouts = OBJECTIVES.get(r.algo).uses_rollouts
        bar = tqdm(range(state["step"], r.steps), desc=f"rl {r.algo}", initial=state["step"], total=r.steps,
                   mininterval=2.0)
        for step in bar:
            rec: dict = {"step": step + 1, "weight_version": state["version"]}
            b = self._prompts(step)
            if uses_rollouts:
                b = self._rewards(self._rollouts(b, step, rec), rec, step)
            m = self._learn(b, step, rec)
            w = self._sync(state, rec)
            hists = self._record(rec, m, b)
            state["step"] = step + 1
            self._evaluate(state, step + 1, w, rec)
            if (step + 1) % r.checkpoint_every == 0 or step + 1 == r.steps:
                self._checkpoint(step + 1, state)
            tracker.log(rec, step=step + 1, histograms=hists)
            if uses_rollouts and "valid_hr@10" in rec:   # sampled rollouts at every validation
                tracker.table("rollout_samples", *self._samples(b), step=step + 1)
            bar.set_postfix({k: f"{rec[k]:.3g}" for k in ("loss", "reward_mean", "admission_rate", "valid_hr@10")
                             if k in rec})
        return self._finish(state, tracker, time.perf_counter() - t0, sync_s)

    def _finish(self, state: dict, tracker: Tracker, seconds: float, sync_s: float) -> dict:
        r = self.cfg.rl
        self.learners.save_policy(str(self.out / "final_policy"), {"rl_step": state["step"]})
        summary = {"algo": r.algo, "steps": state["step"], "best_step": state["best_step"],
                   "best_valid_hr@10": state["best_valid_hr@10"], "evals": state["evals"],
                   "seconds": seconds, "initial_sync_s": sync_s,
                   "rollout_retries": self.rollouts.retries if self.rollouts is not None else 0,
                   "reward_retries": self.rewards.stats.retries if self.rewards is not None else 0,
                   "rl": to_dict(r), "reward": to_dict(self.cfg.reward)}
        write_json(self.out / "summary.json", summary)
        tracker.log({"event": "done", **{k: v for k, v in summary.items() if k != "evals"}})
        tracker.finish()
        return summary

    def shutdown(self) -> None:
        for part in ("learners", "rollouts", "rewards"):
            obj = getattr(self, part, None)
            if obj is not None:
                obj.shutdown()
        if getattr(self, "_own_pg", None) is not None:  # a Tune trial's group is Tune's to remove
            ray.util.remove_placement_group(self._own_pg)
            self._own_pg = None


class _Restart(Exception):
    def __init__(self, ckpt) -> None:
        super().__init__(f"restart from {ckpt}")
        self.ckpt = ckpt


def run_rl(cfg: RunConfig, run_path: Path, resume: bool = True, reporter: Optional[Callable[[dict], None]] = None,
           placement: Optional[tuple] = None) -> dict:
    """Run alignment to ``cfg.rl.steps``; a learner failure rebuilds every actor and resumes from the last
    checkpoint, at most ``rl.max_learner_restarts`` times, then fails with the cause. ``reporter`` and
    ``placement``: see :class:`Controller`."""
    restarts = 0
    while True:
        ctl = Controller(cfg, run_path, resume=True if restarts else resume, reporter=reporter, placement=placement)
        try:
            return ctl.run_loop()
        except _Restart as e:
            restarts += 1
            if restarts > cfg.rl.max_learner_restarts:
                raise RuntimeError(f"rl: the learner group failed {restarts} times (limit "
                                   f"rl.max_learner_restarts={cfg.rl.max_learner_restarts}); last: {e.__cause__}") from e
        finally:
            ctl.shutdown()


def run_fresh(cfg: RunConfig, run_path: Path) -> Path:
    """Run ``cfg.rl`` from scratch in ``run_path`` (its ``rl/<tag>`` emptied first, no resume) and shut the
    actors down; → the tag's output directory. For analyses and benchmarks that must not resume an earlier tag."""
    ctl = Controller(cfg, run_path, resume=False)
    shutil.rmtree(ctl.out, ignore_errors=True)
    ctl.out.mkdir(parents=True)
    try:
        ctl.run_loop()
    finally:
        ctl.shutdown()
    return ctl.out
