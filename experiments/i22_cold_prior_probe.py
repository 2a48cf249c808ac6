"""Issue 22: cold-start HR@10 by the cold expansion's α, chosen on held-out cold items, reported on the others.

Every issue-22 cold figure uses α = the run's measured share of interactions that go to new items, the same rule
for every tokenizer. A tokenizer whose new items compete with trained items inside a shared code (SA²CRQ buckets)
may want another α than one whose new items sit under a parent prefix (RQ-KMeans). There is no cold valid set, so
this makes one: the cold cases are split by their target item into two halves (item index parity); α is chosen on
one half and reported on the other, both ways. Reads the metrics files of

    rl-align eval RUN --split all --cold-expansion --cold-prior A      (one per α, eval/metrics_sft_cold-expansion_priorA.json)

    python experiments/i22_cold_prior_probe.py --group "RQ-KMeans" runs/i22f-rqk-s0 \
        --group "SA²CRQ bucket" runs/i22f-bucket-s0 --priors 0.01 0.035 0.07 0.15 0.3
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from rl_align.eval.evaluate import eval_set
from rl_align.utils.io import load_npz


def hits(run: Path, prior: float) -> dict:
    """Per case hit@10 on cold (with its target items), and valid / test HR@10, at cold prior ``prior``."""
    m = json.loads((run / "eval" / f"metrics_sft_cold-expansion_prior{prior:g}.json").read_text())
    r = np.array(m["cold"]["target_rank"])
    return {"cold": (r >= 0) & (r < 10), "valid": m["valid"]["policy"]["hr@10"], "test": m["test"]["policy"]["hr@10"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--group", nargs="+", action="append", required=True, metavar="NAME RUN",
                    help="a row name, then its run dirs (one per seed)")
    ap.add_argument("--priors", nargs="+", type=float, required=True)
    a = ap.parse_args()
    print("| tokenizer | α | valid HR@10 | test HR@10 | cold HR@10, half A (even items) | half B (odd items) |")
    print("|---|---|---|---|---|---|")
    chosen = {}
    for name, *runs in a.group:
        halves = [(eval_set(load_npz(Path(r) / "data" / "split.npz"), "cold").targets % 2) for r in runs]
        table = {}
        for p in a.priors:
            hs = [hits(Path(r), p) for r in runs]
            hr = [np.mean(np.concatenate([h["cold"][hv == k] for h, hv in zip(hs, halves)])) for k in (0, 1)]
            table[p] = hr
            print(f"| {name} | {p:g} | {np.mean([h['valid'] for h in hs]):.4f} | {np.mean([h['test'] for h in hs]):.4f}"
                  f" | {hr[0]:.4f} | {hr[1]:.4f} |")
        best = [max(table, key=lambda p: table[p][k]) for k in (0, 1)]      # α chosen on each half
        chosen[name] = [(best[k], table[best[k]][1 - k]) for k in (0, 1)]  # … reported on the other
    print("\n| tokenizer | α chosen on A → HR@10 on B | α chosen on B → HR@10 on A | mean |")
    print("|---|---|---|---|")
    for name, ((pa, hb), (pb, ha)) in chosen.items():
        print(f"| {name} | {pa:g} → {hb:.4f} | {pb:g} → {ha:.4f} | {(hb + ha) / 2:.4f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
