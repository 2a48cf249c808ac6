"""Add per-user ranks to a run's test evaluations made before they were stored, then rewrite the report, so that
its alignment section gets the paired table (exact McNemar, bootstrap CI of the HR@10 ratio) for every tag.

    .venv/bin/python experiments/paired_eval.py runs/<run> [--tags adagrpo nll ...]

Re-decodes the SFT policy and each tag's best and final policies on the test users (beam search is
deterministic: the re-computed HR/NDCG must equal the stored ones, or the script stops without writing).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _merge(stored: dict, fresh: dict, what: str) -> None:
    for k, v in stored["policy"].items():
        if abs(fresh["policy"][k] - v) > 1e-9:
            raise SystemExit(f"{what}: re-computed {k} {fresh['policy'][k]:.6f} ≠ stored {v:.6f}; not writing")
    stored["target_rank"] = fresh["target_rank"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--tags", nargs="+", help="only these rl/<tag> (default: every finished tag)")
    a = ap.parse_args(argv)
    from rl_align.config import RunConfig, load_config
    from rl_align.eval.run_eval import evaluate_run
    from rl_align.report import write_report
    from rl_align.utils.io import read_json, write_json

    run = Path(a.run_dir)
    cfg = load_config(run / "config.yaml", RunConfig)
    path = run / "eval" / "metrics.json"
    m = read_json(path)
    if "target_rank" not in m["test"]:
        _merge(m["test"], evaluate_run(run, cfg.eval, ("test",), "sft")["test"], "sft")
        write_json(path, m)
    for d in sorted((run / "rl").glob("*/test_metrics.json")):
        tag = d.parent.name
        if a.tags and tag not in a.tags:
            continue
        tm = read_json(d)
        for kind in ("rl", "rl-final"):
            if "target_rank" not in tm[kind]["test"]:
                _merge(tm[kind]["test"], evaluate_run(run, cfg.eval, ("test",), f"{kind}:{tag}")["test"],
                       f"{kind}:{tag}")
        write_json(d, tm)
        print(f"{tag}: per-user ranks stored", flush=True)
    print(f"report: {write_report(run)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
