"""Issue 17: how much of a reward's ceiling each candidate-set size holds.

The reward ceiling (``rl-align ranker eval --scorer …``) re-ranks the SFT policy's top 51 beams by
``log π + α · logit r``. An alignment run can only move items its rollout group contains, so this prints the same
ceiling restricted to the top G of one max(G)-beam search for several G (close to, not the same as, a G-beam
search: the width changes a few users' lists): the group size a tilted/GRPO update would need to reach it.

    python experiments/i17_ceiling_by_group.py runs/i17-rw-s0 --scorer ensemble --split valid --groups 10 16 32 51

``--sampled G …`` adds groups of G samples at temperature 1 under the trie (the `paper` preset's rollouts, history
banned, seeded per user). A sampled group is not the head of the list, so its ceiling is the list after one
perfect update on that group: inside the group, log π moves to ``log π + α · logit r`` renormalised to the group's
own mass (the tilted optimum restricted to the group, `rl.algo: tilted`'s target); every other candidate of the
max(G)-beam list keeps log π; HR@10 of the new order, best α.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from rl_align.config import load_config
from rl_align.eval.evaluate import eval_set
from rl_align.policy.data import build_prompts
from rl_align.policy.model import load_policy
from rl_align.ranker.evaluate import group_update_ceiling, policy_beam, rerank_ceiling
from rl_align.ranker.train import recent_history, score_slates
from rl_align.rewards.scorers import load_scorer, scorer_path
from rl_align.rollouts import GenerationRequest, build_engine
from rl_align.sid import SidCatalog
from rl_align.utils.io import load_npz, read_json


def _pad(items: np.ndarray, logp: np.ndarray, p: np.ndarray, width: int):
    """(E, G) arrays padded to at least ``width`` columns with empty slots (item -1, log-prob -inf)."""
    extra = width - items.shape[1]
    if extra <= 0:
        return items, logp, p
    e = items.shape[0]
    return (np.hstack([items, np.full((e, extra), -1, items.dtype)]),
            np.hstack([logp, np.full((e, extra), -np.inf)]), np.hstack([p, np.full((e, extra), 0.5, p.dtype)]))


def policy_samples(run: Path, es, g: int, seed: int = 0, batch: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """(E, g) items and sequence log-probs of g samples at T = 1 under the trie, history banned, seeded per user."""
    catalog = SidCatalog.load(run / "sids" / "catalog")
    engine = build_engine("torch", model=load_policy(run / "sft" / "best_policy", catalog), catalog=catalog)
    items, logp = [], []
    for s in range(0, es.targets.size, batch):
        sl = slice(s, s + batch)
        ids, mask = build_prompts(es.history[sl], catalog, es.users[sl])
        seeds = torch.from_numpy(es.users[sl].astype(np.int64) * 1000 + seed)
        res = engine.generate(GenerationRequest(ids, mask, n=g, mode="sample", constrained=True, temperature=1.0,
                                                banned_items=torch.from_numpy(es.seen[sl]), seeds=seeds))
        items.append(res.items.numpy())
        logp.append(res.seq_logprob.numpy())
    return np.concatenate(items), np.concatenate(logp)


def sampled_rows(run: Path, es, beam_items, beam_logp, model, hist, g: int) -> str:
    """One table row: the list after a perfect update on a group of g samples (union with the beam list)."""
    s_items, s_logp = policy_samples(run, es, g)
    E, C = beam_items.shape
    items = np.full((E, C + g), -1, np.int64)
    logp = np.full((E, C + g), -np.inf)
    group = np.zeros((E, C + g), bool)
    for e in range(E):
        cand = {int(i): float(lp) for i, lp in zip(beam_items[e], beam_logp[e]) if i >= 0}
        for i, lp in zip(s_items[e], s_logp[e]):
            if i >= 0:
                cand[int(i)] = float(lp)
        members = {int(i) for i in s_items[e] if i >= 0}
        ranked = sorted(cand.items(), key=lambda kv: -kv[1])
        items[e, : len(ranked)] = [i for i, _ in ranked]
        logp[e, : len(ranked)] = [lp for _, lp in ranked]
        group[e, : len(ranked)] = [i in members for i, _ in ranked]
    r = group_update_ceiling(items, logp, score_slates(model, es.users, hist, np.maximum(items, 0)), group, es.targets)
    recall = float(np.mean([t in set(row) for t, row in zip(es.targets, s_items)]))
    return (f"| {run.name} | {g} sampled ({group.sum(1).mean():.1f} distinct) | {r['policy']:.4f} | "
            f"{r['best_alpha']:g} | {r['best']:.4f} | — | {recall:.4f} | {r['gain']:.3f}× |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--scorer", default="ensemble")
    ap.add_argument("--split", default="valid", choices=["valid", "test"])
    ap.add_argument("--groups", type=int, nargs="+", default=[10, 16, 24, 32, 51])
    ap.add_argument("--sampled", type=int, nargs="*", default=[], help="sizes of sampled groups (T = 1, trie)")
    a = ap.parse_args()
    print("| run | G | policy HR@10 | best α | best HR@10 | gain | HR@G (recall inside the group) | "
          "one-update gain (group of G in the max(G)-beam list) |")
    print("|---|---|---|---|---|---|---|---|")
    for run in a.runs:
        rp = Path(run)
        cfg = load_config(rp / "config.yaml")
        es = eval_set(load_npz(rp / "data" / "split.npz"), a.split)
        items, logp = policy_beam(rp, es, max(a.groups), cfg.eval)
        model = load_scorer(scorer_path(rp, a.scorer), expect_items=read_json(rp / "data" / "items.json")["item_ids"])
        hist = recent_history(es.history, cfg.ranker.max_history)
        p = score_slates(model, es.users, hist, np.maximum(items, 0))
        for g in a.groups:
            it, lp, pp = _pad(items[:, :g], logp[:, :g], p[:, :g], 10)
            r = rerank_ceiling(it, lp, pp, es.targets, ks=(10, g) if g > 10 else (10,))
            rec = r["policy"].get(f"hr@{g}", r["policy"]["hr@10"])
            one = group_update_ceiling(items, logp, p, np.broadcast_to(np.arange(items.shape[1]) < g, items.shape),
                                       es.targets)
            print(f"| {rp.name} | {g} | {r['policy']['hr@10']:.4f} | {r['best_alpha']:g} | {r['best']:.4f} | "
                  f"{r['gain']:.3f}× | {rec:.4f} | {one['gain']:.3f}× |")
        for g in a.sampled:
            print(sampled_rows(rp, es, items, logp, model, hist, g))


if __name__ == "__main__":
    main()
