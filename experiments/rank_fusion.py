#!/usr/bin/env python
"""How much two rankers' test lists hold together: each alone, an equal-weight reciprocal-rank fusion, and the
union of their top 10 — from exported lists only, so anyone can recompute it.

    python experiments/rank_fusion.py --a runs/X-s{0,1,2}/eval/predictions_test.jsonl \
        --b runs/Y-s{0,1,2}/baselines/sasrec/predictions_test.jsonl --split runs/X-s{0,1,2} [--names A B]

The i-th files are one seed; ``--split`` names the run dirs whose ``data/`` gives the test targets (the last
event of each user). Fusion score of an item: Σ over the two lists of 0.5 / (60 + rank) (RRF, k = 60, weights fixed
in advance: nothing is tuned on test). A diagnostic of what combining the two models' knowledge (e.g. by
distillation) could reach; not a model.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _lists(path: str) -> dict[str, list[str]]:
    return {r["user_id"]: r["items"] for r in map(json.loads, Path(path).read_text().splitlines())}


def _targets(run: str) -> dict[str, str]:
    from rl_align.utils.io import load_npz, read_json

    split = load_npz(Path(run) / "data" / "split.npz")
    items = read_json(Path(run) / "data" / "items.json")["item_ids"]
    users = read_json(Path(run) / "data" / "users.json")["user_ids"]
    off, seq = split["seq_offsets"], split["seq_items"]
    return {users[u]: items[seq[off[u + 1] - 1]] for u in range(off.size - 1)}


def fuse(a: list[str], b: list[str], k: int = 60) -> list[str]:
    """Equal-weight reciprocal-rank fusion of two ranked lists, best first."""
    score: dict[str, float] = {}
    for lst in (a, b):
        for r, i in enumerate(lst):
            score[i] = score.get(i, 0.0) + 0.5 / (k + r)
    return sorted(score, key=lambda i: -score[i])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--a", nargs="+", required=True)
    ap.add_argument("--b", nargs="+", required=True)
    ap.add_argument("--split", nargs="+", required=True)
    ap.add_argument("--names", nargs=2, default=["A", "B"])
    args = ap.parse_args(argv)
    if not len(args.a) == len(args.b) == len(args.split):
        ap.error("--a, --b and --split need one entry per seed each")
    print(f"| seed | {args.names[0]} HR@10 | {args.names[1]} HR@10 | RRF fusion HR@10 | union of both top 10 |")
    print("|---|---|---|---|---|")
    rows = []
    for s, (pa, pb, run) in enumerate(zip(args.a, args.b, args.split)):
        la, lb, tgt = _lists(pa), _lists(pb), _targets(run)
        users = sorted(set(la) & set(lb))
        hit = {n: np.mean([tgt[u] in f(u)[:10] for u in users]) for n, f in
               {"a": la.get, "b": lb.get, "fused": lambda u: fuse(la[u], lb[u])}.items()}
        union = np.mean([tgt[u] in la[u][:10] or tgt[u] in lb[u][:10] for u in users])
        rows.append([hit["a"], hit["b"], hit["fused"], union])
        print(f"| {s} | {hit['a']:.4f} | {hit['b']:.4f} | {hit['fused']:.4f} | {union:.4f} |")
    m = np.mean(rows, 0)
    print(f"| mean | {m[0]:.4f} | {m[1]:.4f} | {m[2]:.4f} ({m[2] / m[1]:.3f}× {args.names[1]}) | {m[3]:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
