"""Ray Tune sweeps of alignment settings: ``rl-align tune SPEC.yaml``.

A sweep spec names a run config, the stages prepared once and shared by every trial (data → SFT → ranker, in
``<sweep>/prepared`` or an existing run dir), a search space over any dotted config key, the metric reported at
each validation, a scheduler (ASHA stops weak trials early) and a cap on free-decoding hallucination for the
best-config choice. Each trial is a full alignment run — learners, rollout workers and reward replicas — whose
actors live in the trial's own placement group (:func:`trial_resources`: one bundle for the trial's driver, then
:func:`rl_align.driver.controller.rl_bundles`), in its own run dir ``<sweep>/trials/<trial id>`` that links the
prepared artifacts. A killed sweep continues with ``rl-align tune SPEC.yaml`` again (``Tuner.restore``: finished
trials are kept, unfinished ones resume from their own RL checkpoints).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import ray
import yaml
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import create_searcher

from rl_align.checks import check_config
from rl_align.config import ConfigError, RunConfig, doc, dump_yaml, from_dict, load_config
from rl_align.driver.controller import cpu_needs, needs_ranker, rl_bundles, run_rl
from rl_align.pipeline import run_pipeline
from rl_align.ray_utils import init_ray
from rl_align.rewards.scorers import scorer_path
from rl_align.utils.io import write_json, write_text

log = logging.getLogger("rl_align")

SHARED = ("data", "embed", "sids", "sft", "exposure", "ranker")   # what a trial links from the prepared run
KINDS = ("grid", "choice", "uniform", "loguniform", "randint")


@dataclass
class SweepSpec:
    """A Ray Tune sweep of alignment settings (YAML; every key checked when it loads)."""

    config: str = doc("", "the run config every trial starts from (a path, relative to the spec file)")
    overrides: list = doc([], "KEY=VALUE overrides applied to it before the search space")
    prepared_run: Optional[str] = doc(None, "an existing run dir holding the shared stages (data → sft → ranker); "
                                            "None = run them once in <sweep dir>/prepared")
    space: dict = doc({}, "dotted config key → {grid: [..]} | {choice: [..]} | {uniform: [lo, hi]} | "
                          "{loguniform: [lo, hi]} | {randint: [lo, hi]}")
    num_samples: int = doc(1, "samples of the space (grid keys: every combination each time)", ge=1)
    metric: str = doc("valid_hr@10", "metric each validation reports and the scheduler ranks trials by")
    mode: str = doc("max", "max or min")
    scheduler: str = doc("asha", "asha (stop weak trials at each rung) or fifo (run every trial to the end)")
    search_alg: Optional[str] = doc(None, "a Ray Tune searcher by name (optuna, hyperopt, bayesopt…, where installed); "
                                          "None = Tune's own sampling of the space")
    grace_period: int = doc(1, "asha: validations (after step 0) every trial gets before it can be stopped", ge=1)
    reduction_factor: int = doc(2, "asha: 1/reduction_factor of the trials go on at each rung", ge=2)
    max_hallucination: float = doc(1.0, "best config: only trials whose last free-decoding hallucination rate is "
                                        "at most this", ge=0, le=1)
    max_concurrent: int = doc(0, "trials at once (0 = as many as the cluster fits)", ge=0)
    driver_cpus: float = doc(0.5, "CPUs of each trial's own bundle (its controller and validation)", gt=0)
    name: str = doc("sweep", "Tune experiment name (its directory under the sweep dir)")
    extra: dict = field(default_factory=dict, metadata={"doc": "free-form notes kept with the results"})

    def value_errors(self) -> list[tuple[str, str]]:
        errs = []
        if not self.config:
            errs.append(("config", "expected the path of a run config"))
        if self.mode not in ("max", "min"):
            errs.append(("mode", f"expected max or min, got {self.mode!r}"))
        if self.scheduler not in ("asha", "fifo"):
            errs.append(("scheduler", f"expected asha or fifo, got {self.scheduler!r}"))
        if not self.space:
            errs.append(("space", "expected at least one dotted key to search"))
        if self.search_alg and any("grid" in d for d in self.space.values() if isinstance(d, dict)):
            errs.append(("search_alg", "searchers sample the space: use choice instead of grid with them"))
        for key, dom in self.space.items():
            if not isinstance(dom, dict) or len(dom) != 1 or next(iter(dom)) not in KINDS:
                errs.append((f"space.{key}", f"expected one of {{{', '.join(KINDS)}}}: VALUES, got {dom!r}"))
                continue
            kind, vals = next(iter(dom.items()))
            if not isinstance(vals, list) or not vals or (kind not in ("grid", "choice") and len(vals) != 2):
                errs.append((f"space.{key}.{kind}", f"expected {'a non-empty list' if kind in ('grid', 'choice') else '[low, high]'}, got {vals!r}"))
        return errs


def load_spec(path: str | os.PathLike) -> tuple[SweepSpec, Path]:
    """The spec and its run config's path; every trial's config is checked here, before anything starts."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: sweep spec not found")
    spec = from_dict(SweepSpec, yaml.safe_load(path.read_text()) or {}, source=str(path))
    cfg_path = Path(spec.config) if Path(spec.config).is_absolute() else path.parent / spec.config
    base = load_config(cfg_path, RunConfig, spec.overrides)
    for key, dom in spec.space.items():  # every value the space can take must make a valid config
        for v in next(iter(dom.values())):  # grid/choice values, or the two ends of a range
            try:
                check_config(_with(base, {key: v}), "space")
            except ConfigError as e:
                raise ConfigError(f"{path}: space.{key}={v!r}: {str(e).split(': ', 1)[1]}") from None
    return spec, cfg_path


def _with(base: RunConfig, values: dict[str, Any]) -> RunConfig:
    """A copy of ``base`` with dotted keys set (re-validated as a whole)."""
    data = dataclasses.asdict(base)
    for key, v in values.items():
        node = data
        *parents, leaf = key.split(".")
        for p in parents:
            if not isinstance(node.get(p), dict):
                raise ConfigError(f"space: {key}: {p!r} is not a config section")
            node = node[p]
        if leaf not in node:
            raise ConfigError(f"space: {key}: unknown config key")
        node[leaf] = v
    return from_dict(RunConfig, data, source="space")


def search_space(space: dict) -> dict:
    """Tune domains keyed by dotted config key."""
    build = {"grid": tune.grid_search, "choice": tune.choice, "uniform": lambda v: tune.uniform(*v),
             "loguniform": lambda v: tune.loguniform(*v), "randint": lambda v: tune.randint(*v)}
    return {k: build[next(iter(d))](next(iter(d.values()))) for k, d in space.items()}


def trial_resources(cfg: RunConfig, driver_cpus: float) -> tune.PlacementGroupFactory:
    """One trial's placement group: its own bundle, then every actor's (a trial never reserves a nested group)."""
    return tune.PlacementGroupFactory([{"CPU": driver_cpus}, *rl_bundles(cfg)],
                                      strategy="PACK" if cfg.rl.placement == "pack" else "SPREAD")


def _link_prepared(prepared: Path, run: Path) -> None:
    run.mkdir(parents=True, exist_ok=True)
    for name in SHARED:
        src, dst = prepared / name, run / name
        if src.exists() and not dst.exists():
            dst.symlink_to(src.resolve(), target_is_directory=True)


def rl_trial(values: dict, base: dict, prepared: str, trials_dir: str) -> None:
    """One Tune trial: the base config with ``values`` set, aligned in ``<trials_dir>/<trial id>``."""
    cfg = _with(from_dict(RunConfig, base, source="sweep"), values)
    run = Path(trials_dir) / tune.get_context().get_trial_id()
    os.environ.setdefault("WANDB_RUN_GROUP", Path(trials_dir).parent.name)  # one wandb group per sweep
    _link_prepared(Path(prepared), run)
    (run / "trial.yaml").write_text(dump_yaml(cfg))
    run_rl(cfg, run, resume=True, reporter=lambda m: tune.report(m),
           placement=(ray.util.get_current_placement_group(), 1))


def prepare(spec: SweepSpec, base: RunConfig, sweep_dir: Path) -> Path:
    """The run dir holding the shared stages: ``spec.prepared_run``, or ``<sweep>/prepared`` (digest-cached)."""
    if spec.prepared_run:
        run = Path(spec.prepared_run)
        scorer = str(scorer_path("", base.reward.scorer))
        need = ["sids/catalog", "sft/best_policy"] + ([scorer] if needs_ranker(base) else [])
        missing = [p for p in need if not (run / p).exists()]
        if missing:
            raise ConfigError(f"prepared_run: {run} has no {missing[0]} (run the stage that makes it first)")
        return run
    skip = () if needs_ranker(base) else ("exposure", "ranker")
    cfg = dataclasses.replace(base, stages=[s for s in SHARED if s not in skip], wandb=False)
    run_pipeline(cfg, sweep_dir / "prepared")
    return sweep_dir / "prepared"


def _fits(spec: SweepSpec, base: RunConfig) -> None:
    need = spec.driver_cpus + sum(b["CPU"] for b in rl_bundles(base))
    have = ray.cluster_resources().get("CPU", 0.0)
    if need > have + 1e-9:
        raise ConfigError(f"one trial needs {need:g} CPUs (its driver {spec.driver_cpus:g} + {cpu_needs(base)}) "
                          f"but the Ray cluster has {have:g}: lower rl.cpus_per_* / reward.cpus_per_replica / "
                          "driver_cpus, or add nodes")


def run_tune(spec_path: str | os.PathLike, sweep_dir: Path, prepared_run: Optional[str] = None) -> dict:
    """Run (or continue) the sweep in ``sweep_dir``; writes ``trials.json/.md``, ``best_config.yaml`` and
    ``frontier.png``; returns the summary. ``prepared_run`` overrides the spec's."""
    spec, cfg_path = load_spec(spec_path)
    if prepared_run:
        spec.prepared_run = prepared_run
    base = load_config(cfg_path, RunConfig, spec.overrides)
    check_config(base, str(cfg_path))
    searcher = _searcher(spec.search_alg)
    init_ray()
    _fits(spec, base)
    sweep_dir = Path(sweep_dir).resolve()
    sweep_dir.mkdir(parents=True, exist_ok=True)
    prepared = prepare(spec, base, sweep_dir)
    trainable = tune.with_resources(
        tune.with_parameters(rl_trial, base=dataclasses.asdict(base), prepared=str(prepared.resolve()),
                             trials_dir=str(sweep_dir / "trials")),
        trial_resources(base, spec.driver_cpus))
    storage = sweep_dir / "tune"
    exp = storage / spec.name
    if tune.Tuner.can_restore(str(exp)):
        log.info("tune: continuing the sweep in %s", exp)
        tuner = tune.Tuner.restore(str(exp), trainable, resume_unfinished=True, resume_errored=True)
    else:
        sched = (ASHAScheduler(time_attr="training_iteration", grace_period=spec.grace_period,
                               # one rung past the last report: a trial that survives every rung ends by itself
                               # (writing its summary and final policy), not by the scheduler
                               reduction_factor=spec.reduction_factor, max_t=-(-base.rl.steps // base.rl.eval_every) + 1)
                 if spec.scheduler == "asha" else FIFOScheduler())
        tuner = tune.Tuner(
            trainable, param_space=search_space(spec.space),
            tune_config=tune.TuneConfig(metric=spec.metric, mode=spec.mode, scheduler=sched,
                                        search_alg=searcher,
                                        num_samples=spec.num_samples, max_concurrent_trials=spec.max_concurrent or None),
            run_config=tune.RunConfig(name=spec.name, storage_path=str(storage), verbose=1))
    results = tuner.fit()
    return summarize(results, spec, base, sweep_dir)


def _searcher(name: Optional[str]):
    """Tune's searcher called ``name`` (its library must be installed), or None."""
    if not name:
        return None
    try:
        return create_searcher(name)
    except (ImportError, ValueError, AssertionError) as e:  # Tune asserts its searchers' libraries
        raise ConfigError(f"search_alg: {name!r} is not available here ({e}); install its library or leave it out")


def summarize(results, spec: SweepSpec, base: RunConfig, sweep_dir: Path) -> dict:
    """One row per trial (values, last and best metric, hallucination, validations, stopped early), the best
    config under the hallucination cap, and the frontier plot."""
    rows = []
    for r in results:
        df = r.metrics_dataframe
        hist = [] if df is None or df.empty else df.to_dict("records")
        last = hist[-1] if hist else {}
        rows.append({"trial": (r.metrics or {}).get("trial_id"),
                     **{k: r.config.get(k) for k in spec.space},
                     "validations": len(hist), "last_step": last.get("step"),
                     spec.metric: last.get(spec.metric),
                     f"best_{spec.metric}": max((h.get(spec.metric, float("nan")) for h in hist), default=None)
                     if spec.mode == "max" else min((h.get(spec.metric, float("nan")) for h in hist), default=None),
                     "valid_free_hallucination": last.get("valid_free_hallucination"),
                     "error": str(r.error).splitlines()[0][:120] if r.error else None})
    full = max(row["validations"] for row in rows) if rows else 0
    for row in rows:
        row["stopped_early"] = row["validations"] < full and row["error"] is None
    ok = [r for r in rows if r[spec.metric] is not None and r["error"] is None
          and (r["valid_free_hallucination"] or 0.0) <= spec.max_hallucination]
    best = (max if spec.mode == "max" else min)(ok, key=lambda r: r[spec.metric]) if ok else None
    out = {"metric": spec.metric, "mode": spec.mode, "max_hallucination": spec.max_hallucination,
           "trials": rows, "best": best}
    write_json(sweep_dir / "trials.json", out)
    cols = ["trial", *spec.space, "validations", "stopped_early", "last_step", spec.metric, f"best_{spec.metric}",
            "valid_free_hallucination", "error"]
    cell = lambda v: "–" if v is None else (_short(v, 4) if isinstance(v, float) else str(v))  # noqa: E731
    md = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    md += ["| " + " | ".join(cell(r.get(c)) for c in cols) + " |" for r in rows]
    write_text(sweep_dir / "trials.md", "\n".join(md) + "\n")
    if best is not None:
        write_text(sweep_dir / "best_config.yaml", dump_yaml(_with(base, {k: best[k] for k in spec.space})))
    frontier_plot(rows, spec, sweep_dir / "frontier.png")
    return out


def frontier_plot(rows: list[dict], spec: SweepSpec, path: Path) -> None:
    """Validation metric vs free-decoding hallucination, one point per trial (stopped trials hollow)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [r for r in rows if r.get(spec.metric) is not None and r.get("valid_free_hallucination") is not None]
    fig, ax = plt.subplots(figsize=(5, 4))
    for r in pts:
        ax.scatter(r["valid_free_hallucination"], r[spec.metric], s=40,
                   facecolors="none" if r["stopped_early"] else "C0", edgecolors="C0")
        ax.annotate(", ".join(f"{k.split('.')[-1]}={_short(r[k])}" for k in spec.space),
                    (r["valid_free_hallucination"], r[spec.metric]), fontsize=6, xytext=(3, 3),
                    textcoords="offset points")
    ax.axvline(spec.max_hallucination, color="grey", ls=":", lw=1)
    ax.set_xlabel("free-decoding hallucination (valid)")
    ax.set_ylabel(spec.metric)
    ax.set_title(f"{spec.name}: {len(pts)} trials (hollow = stopped by the scheduler)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _short(v, digits: int = 3) -> str:
    """``digits`` decimals, or significant digits for values below 0.01 (a learning rate stays readable)."""
    if not isinstance(v, float):
        return str(v)
    return f"{v:.{digits}g}" if v and abs(v) < 0.01 else f"{v:.{digits}f}"

