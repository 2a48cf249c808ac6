#!/usr/bin/env python
"""Ray Tune overhead: one `rl-align tune` sweep vs the same trials run one after another with `rl-align rl`.

Both start from the same prepared run (data → SFT → ranker) and run every grid combination of the spec to the
end (the sweep with the FIFO scheduler, so both do the same work); the ratio is sweep wall time / sequential
wall time. What a user would otherwise do is one `rl-align rl` process per setting.

Usage: python benchmarks/bench_tune.py SPEC --prepared-run RUN [--out benchmarks/results/tune.json]
       [--tune-seconds S --tune-dir DIR]   # reuse a finished sweep of this spec in which no trial was stopped
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("spec")
    ap.add_argument("--prepared-run", required=True)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "tune.json"))
    ap.add_argument("--tune-seconds", type=float, help="wall time of a finished sweep of this spec (skip rerunning it)")
    ap.add_argument("--tune-dir", help="with --tune-seconds: that sweep's dir (checked: every trial ran to the end)")
    args = ap.parse_args()

    from rl_align.tune import SHARED, _link_prepared, load_spec

    spec, cfg_path = load_spec(args.spec)
    grid = {k: next(iter(d.values())) for k, d in spec.space.items() if "grid" in d}
    if len(grid) != len(spec.space):
        raise SystemExit("bench_tune: the spec's space must be all grid keys (the same trials both ways)")
    combos = [dict(zip(grid, vals)) for vals in itertools.product(*grid.values())]
    work = Path(tempfile.mkdtemp(prefix="bench_tune_"))
    env = {**os.environ, "WANDB_MODE": "disabled"}
    # the sweep, FIFO: every trial to the end
    raw = yaml.safe_load(Path(args.spec).read_text())
    raw.update(scheduler="fifo", config=str(cfg_path.resolve()))
    fifo = work / "spec_fifo.yaml"
    fifo.write_text(yaml.safe_dump(raw))
    if args.tune_seconds:
        trials = json.loads((Path(args.tune_dir) / "trials.json").read_text())["trials"]
        if len(trials) != len(combos) or any(t["stopped_early"] or t["error"] for t in trials):
            raise SystemExit("bench_tune: --tune-dir must hold every trial of the spec, each run to the end")
        tune_s = args.tune_seconds
    else:
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "rl_align", "tune", str(fifo), "--sweep-dir", str(work / "sweep"),
                        "--prepared-run", args.prepared_run], check=True, env=env)
        tune_s = time.perf_counter() - t
    # the same trials, one `rl-align rl` process each
    t = time.perf_counter()
    for i, combo in enumerate(combos):
        run = work / "seq" / f"trial{i}"
        _link_prepared(Path(args.prepared_run), run)
        sets = [a for k, v in {**dict(o.split("=", 1) for o in spec.overrides), **combo}.items()
                for a in ("--set", f"{k}={v}")]
        subprocess.run([sys.executable, "-m", "rl_align", "run", str(cfg_path), *sets, "--set", "stages=[rl]",
                        "--run-dir", str(run)], check=True, env=env)
    seq_s = time.perf_counter() - t
    res = {"trials": len(combos), "tune_fifo_s": tune_s, "sequential_rl_s": seq_s, "ratio": tune_s / seq_s,
           "cpu_count": os.cpu_count(), "shared": list(SHARED), "spec": args.spec}
    Path(args.out).write_text(json.dumps(res, indent=2))
    md = (f"| trials | `rl-align tune` (FIFO) | {len(combos)} × `rl-align rl` | ratio |\n|---|---|---|---|\n"
          f"| {len(combos)} | {tune_s:.0f} s | {seq_s:.0f} s | {tune_s / seq_s:.2f}× |\n")
    Path(args.out).with_suffix(".md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
