"""Issues 17 and 24: the reward's ceiling on the list a policy with an item head actually serves.

The reward ceiling of the record (``rl-align ranker eval``) re-ranks the policy's own beam by
``log π + α · logit r``. A policy with an item head serves the *fused* list instead: the beam ∪ the head's best
unseen items, scored by ``log π + β · log softmax_head`` (β chosen on valid, :mod:`rl_align.eval.hybrid`), and
alignment moves only the log π part (the head rides along frozen). This measures, on the same users, how much the
reward can still add to that list: HR@10 of ``fused + α · logit r`` over the same candidates, per α, against the
fused order (α = 0), with the paired wins / losses. The split's β is the run's own (``eval/metrics.json``).

    python experiments/i17_fused_ceiling.py runs/i17-bag3-s{0,1,2} --scorer sasrec --split valid
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from rl_align.config import load_config
from rl_align.eval.evaluate import eval_set, rank_with_engine, target_ranks
from rl_align.eval.hybrid import fused_candidates
from rl_align.eval.run_eval import policy_dir
from rl_align.eval.significance import paired_hr
from rl_align.policy.item_head import load_item_head
from rl_align.policy.model import load_policy
from rl_align.ranker.evaluate import ranker_logit
from rl_align.ranker.train import recent_history, score_slates
from rl_align.rewards.scorers import load_scorer, scorer_path
from rl_align.rollouts.torch_engine import TorchEngine
from rl_align.sid.catalog import SidCatalog
from rl_align.utils.io import load_npz, read_json

ALPHAS = (0.1, 0.3, 1.0, 3.0, 10.0, 1e6)  # 1e6: the reward alone (ties by the fused order)


def fused_scores(rp: Path, split: str, stage: str = "sft"):
    """The fused list's candidates of one run and split, as the evaluator builds them (:func:`fused_candidates`):
    items (E, B + union) (-1 = none), their fused scores (E, B + union) at the run's β (-inf = none), the split's
    EvalSet and the run's config."""
    cfg = load_config(rp / "config.yaml")
    e = cfg.eval
    es = eval_set(load_npz(rp / "data" / "split.npz"), split)
    catalog = SidCatalog.load(rp / "sids" / "catalog")
    model = load_policy(policy_dir(rp, stage), catalog)
    head = load_item_head(policy_dir(rp, stage), catalog, model.get_input_embeddings().weight.shape[1])
    beta = float(read_json(rp / "eval" / "metrics.json")["item_head"]["beta"])
    beams = max(e.beams, max(e.ks))
    beam, beam_lp = rank_with_engine(TorchEngine(model, catalog), catalog, es, beams, e.exclude_history,
                                     e.batch_size)
    parts = [fused_candidates(model, head, catalog, es.history[sl], es.users[sl],
                              es.seen[sl] if e.exclude_history else None, beam[sl], beam_lp[sl], e.item_head_union,
                              beams, e.batch_size)
             for sl in (slice(s, s + e.batch_size) for s in range(0, es.targets.size, e.batch_size))]
    cand, lp, dc = (np.concatenate([p[k] for p in parts]) for k in range(3))
    score = np.where(cand >= 0, lp + beta * dc, -np.inf)
    return cand, score, es, cfg


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--scorer", default="sasrec")
    ap.add_argument("--split", default="valid", choices=["valid", "test"])
    a = ap.parse_args()
    base, by_alpha = [], {al: [] for al in ALPHAS}
    for rp in a.runs:
        cand, score, es, cfg = fused_scores(rp, a.split)
        model = load_scorer(scorer_path(rp, a.scorer), expect_items=read_json(rp / "data" / "items.json")["item_ids"])
        p = score_slates(model, es.users, recent_history(es.history, cfg.ranker.max_history), np.maximum(cand, 0))
        logit = ranker_logit(p)

        def ranks(s: np.ndarray) -> np.ndarray:
            order = np.argsort(-np.where(cand >= 0, s, -np.inf), 1, kind="stable")[:, :10]
            top = np.take_along_axis(cand, order, 1)
            return target_ranks(np.where(np.isfinite(np.take_along_axis(s, order, 1)), top, -1), es.targets)

        base.append(ranks(score))
        for al in ALPHAS:
            by_alpha[al].append(ranks(score + al * logit))
        print(f"{rp}: fused HR@10 {np.mean(base[-1] >= 0):.4f}; "
              + ", ".join(f"α {al:g}: {np.mean(by_alpha[al][-1] >= 0):.4f}" for al in ALPHAS))
    b = np.concatenate(base)
    print(f"\n{a.split}, {len(a.runs)} run(s), reward {a.scorer}: the fused list (beam ∪ head top "
          f"{cfg.eval.item_head_union}) re-scored by fused + α · logit r\n")
    print("| α | HR@10 | × fused | +won / −lost, p |\n|---|---|---|---|")
    print(f"| 0 (the fused list) | {np.mean(b >= 0):.4f} | 1 | |")
    for al in ALPHAS:
        r = paired_hr(b, np.concatenate(by_alpha[al]), n_boot=1)
        print(f"| {al:g} | {r['hr_b']:.4f} | {r['ratio']:.3f}× | +{r['wins']} / −{r['losses']}, p {r['p']:.3g} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
