#!/usr/bin/env python
"""Two settings of an item-ID baseline on the same test users, seed by seed: mean ± sd and paired tests.

    python experiments/baseline_pair.py --model sasrec --a runs/X-s{0,1,2} --b runs/Y-s{0,1,2} [--names A B]

Each DIR holds ``baselines/<model>/metrics.json`` (its stored per-user test ranks of y*); the i-th A and B dirs are
one seed. Prints a Markdown table: test HR@10 and NDCG@10 of each, B ÷ A, users won/lost and the exact McNemar p
per seed, and the p of the discordant users pooled over seeds.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _load(d: str, model: str) -> dict:
    return json.loads((Path(d) / "baselines" / model / "metrics.json").read_text())


def main(argv: list[str] | None = None) -> int:
    from rl_align.eval.significance import mcnemar_exact, paired_hr

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="sasrec")
    ap.add_argument("--a", nargs="+", required=True)
    ap.add_argument("--b", nargs="+", required=True)
    ap.add_argument("--names", nargs=2, default=["A", "B"])
    args = ap.parse_args(argv)
    if len(args.a) != len(args.b):
        ap.error(f"--a has {len(args.a)} dirs and --b {len(args.b)}: one of each per seed")
    ms = {n: [_load(d, args.model) for d in dirs] for n, dirs in zip(args.names, (args.a, args.b))}
    pairs = [paired_hr(a["test"]["target_rank"], b["test"]["target_rank"]) for a, b in zip(*ms.values())]
    w, lo = sum(p["wins"] for p in pairs), sum(p["losses"] for p in pairs)
    print(f"| {args.model} (seeds: {len(pairs)}) | valid HR@10 | test HR@10 | test NDCG@10 | best epochs |")
    print("|---|---|---|---|---|")
    for n, rows in ms.items():
        cells = [[r[s]["policy"][m] for r in rows] for s, m in (("valid", "hr@10"), ("test", "hr@10"),
                                                                 ("test", "ndcg@10"))]
        stats = " | ".join(f"{np.mean(c):.4f} ± {np.std(c, ddof=1) if len(c) > 1 else 0.0:.4f}" for c in cells)
        print(f"| {n} | {stats} | {[r['best_epoch'] for r in rows]} |")
    per = "; ".join(f"+{p['wins']}/−{p['losses']}, p {p['p']:.3f}" for p in pairs)
    ratio = np.mean([p["hr_b"] for p in pairs]) / np.mean([p["hr_a"] for p in pairs])
    print(f"\n{args.names[1]} ÷ {args.names[0]}: HR@10 {ratio:.3f}×; per seed {per}; pooled +{w}/−{lo}, "
          f"p {mcnemar_exact(w, lo):.3g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
