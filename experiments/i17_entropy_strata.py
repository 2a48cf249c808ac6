"""Issue 17: where does the reward's re-ranking help, by how sure the policy is of its own group?

AdaGRPO's difficulty tests either need y* (``gt_rank``) or read the spread of the group's *items* (``entropy``),
which is 1 for every beam group (G distinct items). On a serving prompt (no y*) the gate therefore always passes,
and AdaGRPO is the fixed mixture there. A test that needs no y* and works for beams is the entropy of the
policy's own distribution over its group, softmax(log π) over the G beams, normalised by log G. Before building it
(the reward-ceiling habit), this measures whether it separates the prompts where the reward's order helps from
those where it hurts: per tercile of that entropy, HR@10 of the policy's beam order against the order
``log π + α · logit r`` (the KL-regularised optimum, α = 1 as the ceiling chose), with the paired wins / losses.

    python experiments/i17_entropy_strata.py runs/i17-bag3-s{0,1,2} --scorer sasrec --split valid --beams 32
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from rl_align.config import load_config
from rl_align.eval.evaluate import eval_set, target_ranks
from rl_align.eval.significance import paired_hr
from rl_align.ranker.evaluate import policy_beam, ranker_logit
from rl_align.ranker.train import recent_history, score_slates
from rl_align.rewards.scorers import load_scorer, scorer_path
from rl_align.utils.io import load_npz, read_json


def group_logp_entropy(logp: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(E,) entropy of softmax(log π) over each row's valid beams, divided by log(number of valid beams)."""
    lp = np.where(valid, logp, -np.inf)
    p = np.exp(lp - lp.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    h = -(p * np.log(np.where(p > 0, p, 1.0))).sum(1)
    return h / np.log(np.maximum(valid.sum(1), 2))


def run_arrays(rp: Path, split: str, scorer: str, beams: int, alpha: float, bins: int):
    """Per user of one run: the entropy, its bin (quantiles within the run), and the 0-based rank of y* in the
    policy's beam order and in the re-ranked order (-1 = absent)."""
    cfg = load_config(rp / "config.yaml")
    es = eval_set(load_npz(rp / "data" / "split.npz"), split)
    items, logp = policy_beam(rp, es, beams, cfg.eval)
    model = load_scorer(scorer_path(rp, scorer), expect_items=read_json(rp / "data" / "items.json")["item_ids"])
    p = score_slates(model, es.users, recent_history(es.history, cfg.ranker.max_history), np.maximum(items, 0))
    valid = items >= 0
    score = np.where(valid, logp + alpha * ranker_logit(p), -np.inf)
    reranked = np.take_along_axis(items, np.argsort(-score, axis=1, kind="stable"), 1)
    h = group_logp_entropy(logp, valid)
    b = np.searchsorted(np.quantile(h, np.linspace(0, 1, bins + 1)[1:-1]), h, side="right")
    return h, b, target_ranks(items, es.targets), target_ranks(reranked, es.targets)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--scorer", default="sasrec")
    ap.add_argument("--split", default="valid", choices=["valid", "test"])
    ap.add_argument("--beams", type=int, default=32)
    ap.add_argument("--alpha", type=float, default=1.0)
    ap.add_argument("--bins", type=int, default=3)
    a = ap.parse_args()
    h, b, pol, rer = (np.concatenate(x) for x in zip(*(run_arrays(rp, a.split, a.scorer, a.beams, a.alpha, a.bins)
                                                        for rp in a.runs)))
    print(f"{a.split}, {len(a.runs)} run(s), {a.beams} beams, reward {a.scorer}, α = {a.alpha:g}\n")
    print("| entropy bin (normalised H of softmax log π over the beams) | users | H range | policy HR@10 | re-ranked "
          "HR@10 | gain | re-ranked vs policy: +won / −lost, p |")
    print("|---|---|---|---|---|---|---|")
    for k in range(a.bins):
        m = b == k
        r = paired_hr(pol[m], rer[m], n_boot=1)
        print(f"| {k + 1} of {a.bins} | {m.sum()} | {h[m].min():.2f}–{h[m].max():.2f} | {r['hr_a']:.4f} | "
              f"{r['hr_b']:.4f} | {r['ratio']:.3f}× | +{r['wins']} / −{r['losses']}, p {r['p']:.3g} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
