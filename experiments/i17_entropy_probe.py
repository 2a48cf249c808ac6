"""Issue 17: where the reward can teach, by the policy's own uncertainty (the ``policy_entropy`` gate statistic).

For every valid user of a run: the SFT policy's constrained beam of G over the serving prompt (seen items banned, as
the evaluator does), its normalised entropy (``rl_align.algos.gates.policy_entropy``), and whether the valid target is
in the top 10 of (a) the beam's own order and (b) the order ``log π + α · logit r`` under the run's reward model.
Per entropy quantile bin it prints both hit rates: the reward ceiling split by the gate's statistic. Valid only
(this chooses h_d; test is never read).

  python experiments/i17_entropy_probe.py runs/i17-codes-bag3-s0 --set reward.scorer=sasrec [--beams 32 --bins 4]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from rl_align.algos.gates import policy_entropy
from rl_align.checks import load_checked
from rl_align.data.prompts import serving_prompts
from rl_align.driver.controller import reward_embeddings
from rl_align.policy.data import build_prompts
from rl_align.policy.model import load_policy
from rl_align.rewards.actor import RewardScorer
from rl_align.rewards.scorers import scorer_path
from rl_align.rollouts.base import GenerationRequest
from rl_align.rollouts.torch_engine import TorchEngine
from rl_align.sid.catalog import SidCatalog
from rl_align.utils.io import load_npz


@torch.no_grad()
def probe(run: Path, overrides: list[str], beams: int, batch: int = 64) -> dict[str, np.ndarray]:
    """(n,) entropy, (n, G) items, log-probs and reward logits, (n,) valid targets."""
    cfg = load_checked(run / "config.yaml", overrides)
    catalog = SidCatalog.load(run / "sids" / "catalog")
    split = load_npz(run / "data" / "split.npz")
    sp = serving_prompts(split, "valid")
    targets = split["valid_targets"].astype(np.int64)
    model = load_policy(run / "sft" / "best_policy", catalog).eval()
    engine = TorchEngine(model, catalog)
    scorer = RewardScorer(scorer_path(run, cfg.reward.scorer), cfg.reward, reward_embeddings(cfg, run),
                          n_items=catalog.n_items)
    out = {"items": [], "logp": [], "logit": []}
    for s in range(0, len(targets), batch):
        sl = slice(s, s + batch)
        ids, mask = build_prompts(sp["history"][sl], catalog, sp["users"][sl])
        res = engine.generate(GenerationRequest(ids, mask, n=beams, mode="beam", constrained=True,
                                                banned_items=torch.from_numpy(sp["seen"][sl])))
        items = res.items.numpy()
        p = scorer.score(sp["users"][sl], sp["history"][sl], items, np.full(len(items), -1))["ranker_scores"]
        p = np.clip(np.nan_to_num(p, nan=1e-6), 1e-6, 1 - 1e-6)
        out["items"].append(items)
        out["logp"].append(res.seq_logprob.numpy())
        out["logit"].append(np.log(p) - np.log1p(-p))
    res = {k: np.concatenate(v) for k, v in out.items()}
    res["entropy"] = policy_entropy(torch.from_numpy(res["logp"]), torch.from_numpy(res["items"])).numpy()
    res["targets"] = targets
    return res


def hits(items: np.ndarray, order_score: np.ndarray, targets: np.ndarray, k: int = 10) -> np.ndarray:
    top = np.take_along_axis(items, np.argsort(-order_score, 1, kind="stable")[:, :k], 1)
    return (top == targets[:, None]).any(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--set", action="append", default=[], dest="overrides")
    ap.add_argument("--beams", type=int, default=32)
    ap.add_argument("--bins", type=int, default=4)
    ap.add_argument("--alphas", type=float, nargs="+", default=[0.25, 0.5, 1.0, 2.0])
    a = ap.parse_args()
    r = probe(a.run, a.overrides, a.beams)
    logp = np.where(r["items"] >= 0, r["logp"], -np.inf)
    base = hits(r["items"], logp, r["targets"])
    cuts = np.quantile(r["entropy"], np.linspace(0, 1, a.bins + 1)[1:-1])
    b = np.searchsorted(cuts, r["entropy"], side="right")
    print(f"{a.run}: {len(base)} valid users, beam HR@10 {base.mean():.4f}; entropy quantile cuts "
          + ", ".join(f"{c:.3f}" for c in cuts))
    print("| entropy bin | users | mean entropy | beam HR@10 | " + " | ".join(f"α={x:g}" for x in a.alphas) + " |")
    print("|---" * (4 + len(a.alphas)) + "|")
    rer = {x: hits(r["items"], logp + x * r["logit"], r["targets"]) for x in a.alphas}
    for i in range(a.bins):
        m = b == i
        print(f"| {i + 1} | {m.sum()} | {r['entropy'][m].mean():.3f} | {base[m].mean():.4f} | "
              + " | ".join(f"{rer[x][m].mean():.4f}" for x in a.alphas) + " |")
    print(f"| all | {len(base)} | {r['entropy'].mean():.3f} | {base.mean():.4f} | "
          + " | ".join(f"{rer[x].mean():.4f}" for x in a.alphas) + " |")


if __name__ == "__main__":
    main()
