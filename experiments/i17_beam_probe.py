"""Issue 17: what an alignment run did to a policy's beam on one split's prompts, against the reward.

For each policy (``sft``, ``rl:<tag>``, ``rl-final:<tag>``) of a run, on the split's users:
- the policy's own HR@10 on its beam with seen items banned (the evaluator's list), and the share of users whose
  y* is anywhere in that beam (`--beams`, 20 by default);
- the reward's ceiling on that beam (``log π + α · logit r`` for α in 1, 3 and the reward alone) and the overlap of
  the re-ranked top 10 with the policy's own top 10 (1 = the policy already serves the reward's order);
- on the *unbanned* beam (what rollouts with ``rl.exclude_seen: false`` draw from): the share of its items the
  user has already seen, the share of users whose last history item is in its top 10, and where the reward puts
  seen and unseen items in the group (mean share of the group's items the reward scores below them).

    python experiments/i17_beam_probe.py runs/i17-full-bag3-s1 --split test \
        --stages sft rl-final:paper-sasrecbag3-adagrpo-full-refit
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from rl_align.config import load_config
from rl_align.eval.evaluate import eval_set, rank_with_engine, target_ranks
from rl_align.eval.run_eval import policy_dir
from rl_align.policy.model import load_policy
from rl_align.ranker.evaluate import ranker_logit
from rl_align.ranker.train import recent_history, score_slates
from rl_align.rewards.scorers import load_scorer, scorer_path
from rl_align.rollouts.torch_engine import TorchEngine
from rl_align.sid.catalog import SidCatalog
from rl_align.utils.io import load_npz, read_json

ALPHAS = (1.0, 3.0, 1e6)  # 1e6: the reward alone (ties by the policy's order)


def top10(cand: np.ndarray, score: np.ndarray) -> np.ndarray:
    """(N, 10) items of the 10 best finite scores per row (-1 where fewer). cand, score: (N, B)."""
    s = np.where(cand >= 0, score, -np.inf)
    order = np.argsort(-s, 1, kind="stable")[:, :10]
    return np.where(np.isfinite(np.take_along_axis(s, order, 1)), np.take_along_axis(cand, order, 1), -1)


def below_share(logit: np.ndarray, cand: np.ndarray, seen: np.ndarray) -> tuple[float, float]:
    """Mean share of each group's valid items that the reward scores below a seen / an unseen item.
    logit, cand: (N, B); seen: (N, S) -1 padded."""
    out = ([], [])
    for lg, c, s in zip(logit, cand, seen):
        lg, c = lg[c >= 0], c[c >= 0]
        below = (lg[None, :] < lg[:, None]).sum(1) / max(c.size - 1, 1)
        is_seen = np.isin(c, s[s >= 0])
        out[0].extend(below[is_seen]), out[1].extend(below[~is_seen])
    return float(np.mean(out[0])), float(np.mean(out[1]))


def probe(run: Path, split: str, stage: str, scorer: str, beams: int = 20) -> str:
    cfg = load_config(run / "config.yaml")
    es = eval_set(load_npz(run / "data" / "split.npz"), split)
    catalog = SidCatalog.load(run / "sids" / "catalog")
    engine = TorchEngine(load_policy(policy_dir(run, stage), catalog), catalog)
    cand, lp = rank_with_engine(engine, catalog, es, beams, True, cfg.eval.batch_size)
    reward = load_scorer(scorer_path(run, scorer), expect_items=read_json(run / "data" / "items.json")["item_ids"])
    hist = recent_history(es.history, cfg.ranker.max_history)
    logit = ranker_logit(score_slates(reward, es.users, hist, np.maximum(cand, 0)))
    own = top10(cand, lp)
    h0 = (target_ranks(own, es.targets) >= 0).mean()
    cells = [f"{h0:.4f}", f"{(cand == es.targets[:, None]).any(1).mean():.4f}"]
    for a in ALPHAS:
        t = top10(cand, lp + a * logit)
        overlap = np.mean([np.isin(x[x >= 0], y[y >= 0]).sum() for x, y in zip(t, own)]) / 10
        cells.append(f"{(target_ranks(t, es.targets) >= 0).mean() / h0:.3f}× / {overlap:.3f}")
    raw, _ = rank_with_engine(engine, catalog, es, beams, False, cfg.eval.batch_size)
    seen = np.mean([np.isin(r[r >= 0], s[s >= 0]).mean() for r, s in zip(raw, es.seen)])
    last = np.mean([np.isin(h[h >= 0][-1:], r[:10]).any() for r, h in zip(raw, es.history)])
    pref = below_share(ranker_logit(score_slates(reward, es.users, hist, np.maximum(raw, 0))), raw, es.seen)
    return (f"| {run.name} | {stage} | " + " | ".join(cells + [f"{seen:.3f}", f"{last:.3f}"])
            + f" | {pref[0]:.2f} / {pref[1]:.2f} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--split", default="test", choices=["valid", "test"])
    ap.add_argument("--stages", nargs="+", default=["sft"])
    ap.add_argument("--scorer", default="sasrec")
    ap.add_argument("--beams", type=int, default=20, help="beam width (20: the evaluator's; 32: the rollouts')")
    a = ap.parse_args()
    print(f"| run | policy | {a.split} HR@10 | y* in the beam | "
          + " | ".join(f"α = {x:g}: ceiling / top-10 overlap" for x in ALPHAS)
          + " | unbanned beam: seen share | last history item in its top 10 | reward: share of the group below a "
          "seen / an unseen item |")
    print("|---" * (7 + len(ALPHAS)) + "|")
    for run in a.runs:
        for stage in a.stages:
            print(probe(run, a.split, stage, a.scorer, a.beams), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
