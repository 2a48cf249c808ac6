"""Choose the within-bucket scorer of a bucket-SID run on valid, without retraining: one beam search per split,
then the buckets are expanded under each scorer / temperature and HR@10 / NDCG@10 overall and HR@10 on tail
targets (the 80% least-interacted items) are reported for valid and test.

    python experiments/bucket_scorer_choice.py runs/i22-bucket-s0 [--temperatures 0.03 0.1 0.3 1] \
        [--reward-models sasrec din sasrec+content --reward-temperatures 0.3 1 3]

``--reward-models``: the run's trained reward models (the ranker stage with ``ranker.scorers`` listing them) as
the within-bucket scorer (``rl_align/rewards/bucket_scorer.py``), each at every ``--reward-temperatures``;
``MODEL+content`` adds the model's term to the run's saved content scorer.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from rl_align.data.split import train_popularity
from rl_align.eval.evaluate import bucketed, eval_set, metrics
from rl_align.policy.data import build_prompts
from rl_align.policy.model import load_policy
from rl_align.rewards.bucket_scorer import reward_bucket_scorer
from rl_align.rollouts.base import GenerationRequest
from rl_align.rollouts.torch_engine import TorchEngine
from rl_align.sid.buckets import rebuild_scorer
from rl_align.sid.catalog import SidCatalog
from rl_align.utils.io import load_npz


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run")
    ap.add_argument("--temperatures", type=float, nargs="+", default=[0.03, 0.1, 0.3, 1.0])
    ap.add_argument("--beams", type=int, default=20)
    ap.add_argument("--reward-models", nargs="*", default=[])
    ap.add_argument("--reward-temperatures", type=float, nargs="+", default=[0.3, 1.0, 3.0])
    a = ap.parse_args()
    run = Path(a.run)
    cat = SidCatalog.load(run / "sids" / "catalog")
    split = load_npz(run / "data" / "split.npz")
    pop = train_popularity(split, cat.n_items)
    saved = cat.buckets.scorer                       # the catalog's own scorer; attach() below replaces it
    if saved is None:
        raise SystemExit(f"{run}: not a bucket catalog with a saved within-bucket scorer (sid.collision: bucket)")
    engine = TorchEngine(load_policy(run / "sft" / "best_policy", cat), cat)
    beams = {}
    for part in ("valid", "test"):
        es = eval_set(split, part)
        items, scores = [], []
        for s in range(0, es.targets.size, 128):
            ids, mask = build_prompts(es.history[s: s + 128], cat, es.users[s: s + 128])
            res = engine.generate(GenerationRequest(ids, mask, n=a.beams, mode="beam", constrained=True,
                                                    banned_items=torch.from_numpy(es.seen[s: s + 128])))
            items.append(res.items.numpy())
            scores.append(res.seq_logprob.numpy())
        beams[part] = (es, np.concatenate(items), np.concatenate(scores))
    settings = [("popularity", None)] + ([("content", t) for t in a.temperatures] if saved.vectors is not None else [])
    settings += [(f"reward:{m}", t) for m in a.reward_models for t in a.reward_temperatures]
    print("| scorer | valid HR@10 | valid NDCG@10 | valid tail HR@10 | test HR@10 | test NDCG@10 | test tail HR@10 |")
    print("|---|---|---|---|---|---|---|")
    for name, t in settings:
        model, _, over = name.partition(":")[2].partition("+")
        cat.buckets.attach(reward_bucket_scorer(run, model, t, over or None) if name.startswith("reward:")
                           else rebuild_scorer(saved, name, t))
        row = []
        for part in ("valid", "test"):
            es, items, scores = beams[part]
            ranked = np.concatenate([cat.buckets.expand(items[s: s + 128], scores[s: s + 128], es.history[s: s + 128],
                                                        a.beams, es.seen[s: s + 128], users=es.users[s: s + 128])[0]
                                     for s in range(0, es.targets.size, 128)])
            m = metrics(ranked, es.targets, [10])
            row += [m["hr@10"], m["ndcg@10"], bucketed(ranked, es.targets, pop, [10], 0.2)["tail"]["hr@10"]]
        label = name if t is None else f"{name}, T = {t}"
        print(f"| {label} | " + " | ".join(f"{v:.4f}" for v in row) + " |")


if __name__ == "__main__":
    main()
