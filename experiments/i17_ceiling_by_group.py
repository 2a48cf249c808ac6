"""Issue 17: how much of a reward's ceiling each candidate-set size holds.

The reward ceiling (``rl-align ranker eval --scorer …``) re-ranks the SFT policy's top 51 beams by
``log π + α · logit r``. An alignment run can only move items its rollout group contains, so this prints the same
ceiling restricted to the top G of one max(G)-beam search for several G (close to, not the same as, a G-beam
search: the width changes a few users' lists): the group size a tilted/GRPO update would need to reach it.

    python experiments/i17_ceiling_by_group.py runs/i17-rw-s0 --scorer ensemble --split valid --groups 10 16 32 51
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from rl_align.config import load_config
from rl_align.eval.evaluate import eval_set
from rl_align.ranker.evaluate import policy_beam, rerank_ceiling
from rl_align.ranker.train import recent_history, score_slates
from rl_align.rewards.scorers import load_scorer, scorer_path
from rl_align.utils.io import load_npz, read_json


def _pad(items: np.ndarray, logp: np.ndarray, p: np.ndarray, width: int):
    """(E, G) arrays padded to at least ``width`` columns with empty slots (item -1, log-prob -inf)."""
    extra = width - items.shape[1]
    if extra <= 0:
        return items, logp, p
    e = items.shape[0]
    return (np.hstack([items, np.full((e, extra), -1, items.dtype)]),
            np.hstack([logp, np.full((e, extra), -np.inf)]), np.hstack([p, np.full((e, extra), 0.5, p.dtype)]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--scorer", default="ensemble")
    ap.add_argument("--split", default="valid", choices=["valid", "test"])
    ap.add_argument("--groups", type=int, nargs="+", default=[10, 16, 24, 32, 51])
    a = ap.parse_args()
    print("| run | G | policy HR@10 | best α | best HR@10 | gain | HR@G (recall inside the group) |")
    print("|---|---|---|---|---|---|---|")
    for run in a.runs:
        rp = Path(run)
        cfg = load_config(rp / "config.yaml")
        es = eval_set(load_npz(rp / "data" / "split.npz"), a.split)
        items, logp = policy_beam(rp, es, max(a.groups), cfg.eval)
        model = load_scorer(scorer_path(rp, a.scorer), expect_items=read_json(rp / "data" / "items.json")["item_ids"])
        p = score_slates(model, es.users, recent_history(es.history, cfg.ranker.max_history), np.maximum(items, 0))
        for g in a.groups:
            it, lp, pp = _pad(items[:, :g], logp[:, :g], p[:, :g], 10)
            r = rerank_ceiling(it, lp, pp, es.targets, ks=(10, g) if g > 10 else (10,))
            rec = r["policy"].get(f"hr@{g}", r["policy"]["hr@10"])
            print(f"| {rp.name} | {g} | {r['policy']['hr@10']:.4f} | {r['best_alpha']:g} | {r['best']:.4f} | "
                  f"{r['gain']:.3f}× | {rec:.4f} |")


if __name__ == "__main__":
    main()
