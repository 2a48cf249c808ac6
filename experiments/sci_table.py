#!/usr/bin/env python
"""SCI on ML-100K: the plain dual tower vs + symmetric alignment, each with exact search, faiss IVF-PQ and the
dual-view index; mean ± sd over seeds and a paired test (HR@50, pooled exact McNemar over seeds, same users).

Usage: python experiments/sci_table.py --plain runs/sci-l0-s{0,1,2} --aligned runs/sci-l1-s{0,1,2} [--split test]
       → Markdown on stdout
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _rows(run: Path, split: str) -> dict:
    res = json.loads((run / "retrieval" / "metrics.json").read_text())
    return {(r["index"], r["nprobe"]): r for r in res[split]}


def _ms(vals) -> str:
    a = np.asarray(vals, float)
    return f"{a.mean():.4f} ± {a.std(ddof=1) if a.size > 1 else 0:.4f}"


def main() -> None:
    from rl_align.eval.significance import mcnemar_exact

    ap = argparse.ArgumentParser()
    ap.add_argument("--plain", nargs="+", required=True)
    ap.add_argument("--aligned", nargs="+", required=True)
    ap.add_argument("--split", default="test")
    args = ap.parse_args()
    groups = {"plain (λ = 0)": [_rows(Path(r), args.split) for r in args.plain],
              "symmetric (λ = 1)": [_rows(Path(r), args.split) for r in args.aligned]}
    keys = list(groups["plain (λ = 0)"][0])
    print("| model | index | nprobe | HR@10 | HR@50 | HR@100 | NDCG@10 | recall@100 vs exact | distance computations |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, runs in groups.items():
        for k in keys:
            rs = [r[k] for r in runs]
            cells = " | ".join(_ms([r[m] for r in rs]) for m in ("hr@10", "hr@50", "hr@100", "ndcg@10", "recall@100"))
            npb = "—" if k[0] == "exact" else k[1]
            print(f"| {name} | {k[0]} | {npb} | {cells} | {np.mean([r['distance_computations'] for r in rs]):.0f} |")
    print()
    print("| index | nprobe | HR@50 symmetric ÷ plain | users won / lost (pooled over seeds) | McNemar p |")
    print("|---|---|---|---|---|")
    for k in keys:
        wins = losses = 0
        for a, b in zip(groups["plain (λ = 0)"], groups["symmetric (λ = 1)"]):
            ha = (np.array(a[k]["target_rank"]) >= 0) & (np.array(a[k]["target_rank"]) < 50)
            hb = (np.array(b[k]["target_rank"]) >= 0) & (np.array(b[k]["target_rank"]) < 50)
            wins, losses = wins + int((hb & ~ha).sum()), losses + int((ha & ~hb).sum())
        ratio = (np.mean([r[k]["hr@50"] for r in groups["symmetric (λ = 1)"]])
                 / np.mean([r[k]["hr@50"] for r in groups["plain (λ = 0)"]]))
        npb = "—" if k[0] == "exact" else k[1]
        print(f"| {k[0]} | {npb} | {ratio:.3f}× | +{wins} / −{losses} | {mcnemar_exact(wins, losses):.3g} |")


if __name__ == "__main__":
    main()
