#!/usr/bin/env python
"""The distillation teacher as a recommender: each SASRec of a bag alone and the bag (the softmax of the members'
mean next-item log-probabilities, what ``sft.distill_bag`` distils), ranked by the framework's evaluator on valid and
test (full catalog, seen items masked), so a distilled policy can be read against its teacher too.

    python experiments/i24_teacher_bag_eval.py runs/i24-w64-ihead-s{0,1,2}

Every run must hold ``baselines/sasrec`` and share one split (ML-100K's leave-one-out split is the same at every
seed; the script checks).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rl_align.baselines.train import load_baseline  # noqa: E402
from rl_align.eval.evaluate import eval_set, metrics, top_unseen  # noqa: E402
from rl_align.policy.data import last_items  # noqa: E402
from rl_align.utils.io import load_npz  # noqa: E402


@torch.no_grad()
def bag_rank(models: list, es, k: int = 10, batch: int = 512) -> np.ndarray:
    """(N, k) top-k items of the bag's mean log-softmax, seen items masked."""
    out = []
    for s in range(0, es.targets.size, batch):
        seen = es.seen[s: s + batch]
        lp = torch.stack([torch.log_softmax(m.score_last(last_items(seen, m.hparams["max_len"])).float(), -1)
                          for m in models]).mean(0)
        out.append(top_unseen(lp, seen, k)[0].numpy())
    return np.concatenate(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+")
    a = ap.parse_args()
    splits = [load_npz(Path(r) / "data" / "split.npz") for r in a.runs]
    if any(not np.array_equal(s["seq_items"], splits[0]["seq_items"]) for s in splits[1:]):
        sys.exit("the runs do not share one split")
    models = [load_baseline(Path(r) / "baselines" / "sasrec").eval() for r in a.runs]
    print("| teacher | valid HR@10 | valid NDCG@10 | test HR@10 | test NDCG@10 |\n|---|---|---|---|---|")
    rows = [(f"SASRec of {r}", [m]) for r, m in zip(a.runs, models)] + [(f"bag of {len(models)}", models)]
    for name, ms in rows:
        cells = []
        for part in ("valid", "test"):
            es = eval_set(splits[0], part)
            m = metrics(bag_rank(ms, es), es.targets, [10])
            cells += [f"{m['hr@10']:.4f}", f"{m['ndcg@10']:.4f}"]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
