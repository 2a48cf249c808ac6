#!/usr/bin/env python
"""How often a run's reward passes AdaGRPO's sanity test on training prompts, with the sanity items drawn uniformly
or by training popularity (``rl.adagrpo.sanity_draw``), at several thresholds ``sanity_a``.

Usage: python experiments/i17_sanity_draw_probe.py runs/i17m-s0 [--scorer sasrec] [--prompts 1024] [-K 32]
           [--set ranker.sequence_max_len=20 …]   → a Markdown table on stdout
The prompts are drawn as the alignment draws them (each user's ``rl.recent_prompts`` latest training examples).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rl_align.algos.diagnostics import discriminability  # noqa: E402
from rl_align.algos.gates import random_negatives  # noqa: E402
from rl_align.checks import load_checked  # noqa: E402
from rl_align.data.prompts import recent_examples  # noqa: E402
from rl_align.data.split import train_popularity  # noqa: E402
from rl_align.rewards.actor import RewardScorer  # noqa: E402
from rl_align.rewards.scorers import scorer_path  # noqa: E402
from rl_align.utils.io import load_npz  # noqa: E402


def pass_rates(run: Path, scorer: str, overrides: list[str], n: int, k: int, thresholds: list[float],
               seed: int = 0) -> dict[str, list[float]]:
    """{draw: share of ``n`` training prompts whose y* the reward scores above ≥ a of K sanity items, per a}."""
    cfg = load_checked(run / "config.yaml", [f"reward.scorer={scorer}", *overrides])
    split = load_npz(run / "data" / "split.npz")
    rows = recent_examples(split["train_users"], split["train_positions"], cfg.rl.recent_prompts)
    rows = np.random.default_rng(seed).choice(rows, min(n, rows.size), replace=False)
    sc = RewardScorer(scorer_path(run, scorer), cfg.reward, None)
    users, hist = split["train_users"][rows], split["train_history"][rows]
    t = split["train_targets"][rows].astype(np.int64)
    out = {}
    for draw, w in (("uniform", None), ("popularity", train_popularity(split, sc.n_items))):
        negs = random_negatives(t, sc.n_items, k, seed + 7, weights=w)
        s = sc.score(users, hist, np.zeros((rows.size, 1), np.int64), t, with_target_scores=True, sanity_items=negs)
        v = discriminability(torch.from_numpy(s["target_scores"]).double(),
                             torch.from_numpy(s["sanity_scores"]).double()).frac_below.numpy()
        out[draw] = [float((v >= a).mean()) for a in thresholds]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--scorer", default="sasrec")
    ap.add_argument("--prompts", type=int, default=1024)
    ap.add_argument("-K", type=int, default=32, help="sanity items per prompt")
    ap.add_argument("--a", type=float, nargs="+", default=[0.5, 0.75, 0.9], help="thresholds sanity_a")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config overrides")
    a = ap.parse_args()
    if not (a.run / "config.yaml").is_file():
        print(f"i17_sanity_draw_probe: {a.run / 'config.yaml'}: missing (not a run directory)", file=sys.stderr)
        return 2
    rates = pass_rates(a.run, a.scorer, a.set, a.prompts, a.K, a.a)
    print("| sanity draw | " + " | ".join(f"y* above ≥ {x:g} of them" for x in a.a) + " |")
    print("|---|" + "---|" * len(a.a))
    for draw, r in rates.items():
        print(f"| {draw} | " + " | ".join(f"{100 * x:.1f}%" for x in r) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
