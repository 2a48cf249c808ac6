"""Compare alignment objectives from one SFT policy: NLL only, GRPO only, fixed NLL + λ·GRPO mixtures and
AdaGRPO — same run dir, seed, prompts, rollouts, reward and budget — then rewrite the run's report (table +
``report/rl_curves.png``).

    .venv/bin/python experiments/rl_compare.py experiments/configs/quick.yaml --run-dir runs/<a make run dir> \\
        [--lams 0.1 0.5 1.0] [--set rl.steps=60 ...]

Every variant is ``rl-align rl CONFIG --run-dir RUN --set rl.algo=… --set rl.tag=…`` (finished tags are
skipped, interrupted ones resume from their last checkpoint), in one Python process sharing one Ray.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def variants(lams: list[float]) -> list[tuple[str, list[str]]]:
    out = [("nll", ["rl.algo=nll"]), ("grpo", ["rl.algo=grpo"])]
    out += [(f"mixture-lam{lam:g}", ["rl.algo=mixture", f"rl.lam={lam}"]) for lam in lams]
    out += [("adagrpo", ["rl.algo=adagrpo"])]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", help="YAML run config (its rl/reward sections are the shared settings)")
    ap.add_argument("--run-dir", required=True, help="run directory with a finished SFT (and ranker)")
    ap.add_argument("--lams", type=float, nargs="+", default=[0.1, 0.5, 1.0], help="λ grid of the fixed mixtures")
    ap.add_argument("--only", nargs="+", help="run only these variant tags")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="extra overrides for every variant")
    ap.add_argument("--suffix", default="", help="append this to every variant's tag (e.g. -recent3), so a second "
                                                  "comparison with other --set values lives beside the first")
    a = ap.parse_args(argv)
    from rl_align.cli import main as cli
    from rl_align.report import write_report

    for tag, sets in variants(a.lams):
        if a.only and tag not in a.only:
            continue
        tag += a.suffix
        args = ["rl", a.config, "--run-dir", a.run_dir]
        for kv in [*a.overrides, *sets, f"rl.tag={tag}"]:
            args += ["--set", kv]
        print(f"== {tag}: rl-align {' '.join(args[1:])}", flush=True)
        rc = cli(args)
        if rc:
            print(f"{tag}: failed (exit {rc})", file=sys.stderr)
            return rc
    print(f"report: {write_report(a.run_dir)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
