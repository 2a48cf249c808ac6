"""Issue 17: where does the reward's re-ranking help, by how sure the policy is of its own group?

AdaGRPO's difficulty tests either need y* (``gt_rank``) or read the spread of the group's *items* (``entropy``),
which is 1 for every beam group (G distinct items). On a serving prompt (no y*) the gate therefore always passes,
and AdaGRPO is the fixed mixture there. A test that needs no y* and works for beams is the entropy of the
policy's own distribution over its group, softmax(log π) over the G beams, normalised by log G: the gate's
``policy_entropy`` test (rl_align/algos/gates.py), whose statistic this computes. It measures whether that statistic
separates the prompts where the reward's order helps from those where it hurts (the reward-ceiling habit, and the
place to read h_d from): per tercile of that entropy, HR@10 of the policy's beam order against the order
``log π + α · logit r`` (the KL-regularised optimum, α = 1 as the ceiling chose), with the paired wins / losses.

    python experiments/i17_entropy_strata.py runs/i17-bag3-s{0,1,2} --scorer sasrec --split valid --beams 32

``--by bag`` bins by the reward's own doubt instead, a test that needs no y* either: over the group's beams, the
mean standard deviation of the bag members' log p(item | history) (a bagged sequence reward, ``bag`` ≥ 2) after
each member's group mean is removed, i.e. how much the members disagree on the group's *order*.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from rl_align.algos.gates import policy_entropy
from rl_align.config import load_config
from rl_align.eval.evaluate import eval_set, target_ranks
from rl_align.eval.significance import paired_hr
from rl_align.ranker.evaluate import policy_beam, ranker_logit
from rl_align.ranker.train import recent_history, score_slates
from rl_align.rewards.scorers import load_scorer, scorer_path
from rl_align.utils.io import load_npz, read_json


def bag_disagreement(model, history: np.ndarray, items: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(E,) mean over each row's valid beams of the std across the bag's members of log p(item | history), each
    member's row mean over the valid beams removed first (disagreement on the order, not the level)."""
    if not hasattr(model, "bag") or len(model.bag) == 0:
        raise SystemExit("--by bag needs a bagged sequence reward (ranker.sequence_seeds ≥ 2)")
    with torch.no_grad():
        lp = model.member_log_probs(torch.from_numpy(history), torch.from_numpy(items)).numpy()  # (K, E, G)
    w = valid[None].astype(np.float64)
    centred = lp - (lp * w).sum(2, keepdims=True) / np.maximum(w.sum(2, keepdims=True), 1)
    return (centred.std(0) * valid).sum(1) / np.maximum(valid.sum(1), 1)


def run_arrays(rp: Path, split: str, scorer: str, beams: int, alpha: float, bins: int, by: str = "entropy"):
    """Per user of one run: the stratifying statistic (``entropy`` of the policy over its group, or ``bag``
    disagreement), its bin (quantiles within the run), and the 0-based rank of y* in the policy's beam order and
    in the re-ranked order (-1 = absent)."""
    cfg = load_config(rp / "config.yaml")
    es = eval_set(load_npz(rp / "data" / "split.npz"), split)
    items, logp = policy_beam(rp, es, beams, cfg.eval)
    model = load_scorer(scorer_path(rp, scorer), expect_items=read_json(rp / "data" / "items.json")["item_ids"])
    hist = recent_history(es.history, cfg.ranker.max_history)
    p = score_slates(model, es.users, hist, np.maximum(items, 0))
    valid = items >= 0
    score = np.where(valid, logp + alpha * ranker_logit(p), -np.inf)
    reranked = np.take_along_axis(items, np.argsort(-score, axis=1, kind="stable"), 1)
    if by == "entropy":   # the gate's own statistic (invalid beams carry item -1 and are left out)
        h = policy_entropy(torch.from_numpy(logp), torch.from_numpy(np.where(valid, items, -1))).numpy()
    else:
        h = bag_disagreement(model, hist, items, valid)
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
    ap.add_argument("--by", default="entropy", choices=["entropy", "bag"],
                    help="entropy: the policy's over its group; bag: the bagged reward's members' disagreement")
    a = ap.parse_args()
    h, b, pol, rer = (np.concatenate(x) for x in zip(*(run_arrays(rp, a.split, a.scorer, a.beams, a.alpha, a.bins,
                                                                  a.by) for rp in a.runs)))
    print(f"{a.split}, {len(a.runs)} run(s), {a.beams} beams, reward {a.scorer}, α = {a.alpha:g}, by {a.by}\n")
    what = ("entropy bin (normalised H of softmax log π over the beams)" if a.by == "entropy"
            else "bag disagreement bin (mean std of the members' centred log p over the beams)")
    print(f"| {what} | users | range | policy HR@10 | re-ranked "
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
