"""Issue 17: the reward ceiling when the reward model may also propose candidates.

Every alignment update so far could only re-order items the policy itself produced (beams or samples). The reward
ceiling of a 32-beam group is 1.066× on test, and AdaGRPO captured about a fifth of it. A reward model that knows
more than the policy also knows items the policy ranks below its beam: SASRec alone ranks above the SID policy.
This measures, before building anything, how much a rollout group would hold if the reward model added its own
top-k items (over the whole catalog, seen and already-beamed items excluded) to the policy's top-G beams:

    union = top-G beams ∪ reward top-k;  order by  log π(y|x) + α · logit r(y|x),  best α (as ``rerank_ceiling``)

log π of a proposed item is the policy's raw sequence log-prob (teacher-forced, the definition the beams carry), so
the order is the KL-regularised optimum over the union: what a policy trained on such groups would converge to.

    python experiments/i17_proposed_ceiling.py runs/i17-rw-s{0,1,2} --split valid --beams 32 --proposed 0 8 16 32
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from rl_align.config import load_config
from rl_align.eval.evaluate import eval_set
from rl_align.policy.logprobs import item_logprobs
from rl_align.policy.model import load_policy
from rl_align.ranker.evaluate import policy_beam, rerank_ceiling
from rl_align.ranker.train import recent_history, score_slates
from rl_align.rewards.scorers import load_scorer, scorer_path
from rl_align.sid import SidCatalog
from rl_align.utils.io import load_npz, read_json


def catalog_scores(model, es, hist: np.ndarray, n_items: int, batch: int = 64) -> np.ndarray:
    """(E, n_items) reward click probabilities of every item for every user."""
    out = np.empty((es.users.size, n_items), np.float32)
    every = np.arange(n_items, dtype=np.int64)
    for s in range(0, es.users.size, batch):
        sl = slice(s, s + batch)
        shown = np.broadcast_to(every, (es.users[sl].size, n_items)).copy()
        out[sl] = score_slates(model, es.users[sl], hist[sl], shown)
    return out


def proposals(p_all: np.ndarray, es, beam_items: np.ndarray, k: int) -> np.ndarray:
    """(E, k) the reward's k best items per user that are neither seen nor in the beam (-1 padded)."""
    p = p_all.astype(np.float64).copy()
    for e in range(p.shape[0]):
        banned = np.concatenate([es.seen[e], beam_items[e]])
        p[e, banned[banned >= 0]] = -np.inf
    top = np.argsort(-p, axis=1, kind="stable")[:, :k]
    return np.where(np.take_along_axis(p, top, 1) > -np.inf, top, -1)


def run_rows(rp: Path, split: str, scorer: str, beams: int, ks: list[int]) -> list[str]:
    """One table row per k for one run."""
    cfg = load_config(rp / "config.yaml")
    es = eval_set(load_npz(rp / "data" / "split.npz"), split)
    b_items, b_logp = policy_beam(rp, es, beams, cfg.eval)
    catalog = SidCatalog.load(rp / "sids" / "catalog")
    policy = load_policy(rp / "sft" / "best_policy", catalog).eval()
    model = load_scorer(scorer_path(rp, scorer), expect_items=read_json(rp / "data" / "items.json")["item_ids"])
    hist = recent_history(es.history, cfg.ranker.max_history)
    p_all = catalog_scores(model, es, hist, catalog.n_items)
    rows = np.arange(es.users.size)[:, None]
    b_p = p_all[rows, np.maximum(b_items, 0)]
    base = rerank_ceiling(b_items, b_logp, b_p, es.targets)
    out = []
    for k in ks:
        if k == 0:
            r = base
        else:
            prop = proposals(p_all, es, b_items, k)
            items = np.hstack([b_items, prop])
            logp = np.hstack([b_logp, item_logprobs(policy, catalog, es.history, es.users, prop)])
            p = np.hstack([b_p, p_all[rows, np.maximum(prop, 0)]])
            r = rerank_ceiling(items, logp, p, es.targets)
            r["recall"] = float(np.mean((items == es.targets[:, None]).any(1)))
        recall = r.get("recall", float(np.mean((b_items == es.targets[:, None]).any(1))))
        gain = r["best"] / base["policy"]["hr@10"]
        out.append(f"| {rp.name} | {split} | {beams} + {k} | {base['policy']['hr@10']:.4f} | {r['best_alpha']:g} | "
                   f"{r['best']:.4f} | {gain:.3f}× | {recall:.4f} |")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--scorer", default="ensemble")
    ap.add_argument("--split", default="valid", choices=["valid", "test"])
    ap.add_argument("--beams", type=int, default=32)
    ap.add_argument("--proposed", type=int, nargs="+", default=[0, 8, 16, 32])
    a = ap.parse_args()
    print("| run | split | beams + proposed | policy HR@10 (beam) | best α | best HR@10 | gain | y* in the union |")
    print("|---|---|---|---|---|---|---|---|")
    for run in a.runs:
        for line in run_rows(Path(run), a.split, a.scorer, a.beams, a.proposed):
            print(line, flush=True)


if __name__ == "__main__":
    main()
