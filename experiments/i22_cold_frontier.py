"""Issue 22: the cold-start trade-off of tokenizers as a frontier — overall test HR@10 against cold HR@10 over the
cold expansion's prior α, one line per tokenizer (mean over seeds), so tokenizers are compared along the curve and
not at one operating point.

    python experiments/i22_cold_frontier.py --out docs/figures/i22_cold_frontier.png \
        --group "RQ-KMeans 3×32" runs/i22t-rqk-s{0,1,2} --group "SA²CRQ preset" runs/i22h-hybrid-s{0,1,2} \
        --point "α measured" metrics_sft_cold-expansion_all-routes.json \
        --point "α 0.1" metrics_sft_cold-expansion_prior0.1_all-routes.json \
        --point "α 0.3" metrics_sft_cold-expansion_prior0.3_all-routes.json

Each point reads ``RUN/eval/FILE`` of every run of a group (``rl-align eval RUN --split all --cold-expansion
[--cold-prior α] [--cold-routes all]``) and prints a table: per group and point, mean valid / test / cold HR@10, and
each group's test and cold HR@10 over the first group's at the same point.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def _point(runs: list[str], name: str) -> dict:
    """Mean valid, test and cold HR@10 of ``RUN/eval/name`` over the runs."""
    ms = [json.loads((Path(r) / "eval" / name).read_text()) for r in runs]
    if any("cold" not in m for m in ms):
        raise ValueError(f"{name}: no cold split in every run (rl-align eval RUN --split all --cold-expansion)")
    return {k: float(np.mean([m[k]["policy"]["hr@10"] for m in ms])) for k in ("valid", "test", "cold")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--group", nargs="+", action="append", required=True, metavar=("LABEL", "RUN"))
    ap.add_argument("--point", nargs=2, action="append", required=True, metavar=("LABEL", "FILE"))
    ap.add_argument("--out", help="PNG of the frontier")
    a = ap.parse_args()
    table = {g[0]: {p[0]: _point(g[1:], p[1]) for p in a.point} for g in a.group}
    ref = table[a.group[0][0]]
    print("| tokenizer | point | valid HR@10 | test HR@10 | cold HR@10 | × first: test / cold |")
    print("|---|---|---|---|---|---|")
    for label, pts in table.items():
        for p, v in pts.items():
            r = ref[p]
            print(f"| {label} | {p} | {v['valid']:.4f} | {v['test']:.4f} | {v['cold']:.4f} | "
                  f"{v['test'] / r['test']:.3f}× / {v['cold'] / r['cold']:.3f}× |")
    if a.out:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4.5))
        for label, pts in table.items():
            xs, ys = [v["cold"] for v in pts.values()], [v["test"] for v in pts.values()]
            ax.plot(xs, ys, "o-", label=label)
            for p, x, y in zip(pts, xs, ys):
                ax.annotate(p, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        ax.set_xlabel("cold HR@10 (targets without training interactions)")
        ax.set_ylabel("test HR@10 (all test users)")
        ax.set_title("cold-start frontier over the cold prior α (mean of seeds)")
        ax.legend()
        fig.tight_layout()
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(a.out, dpi=120)
        print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
