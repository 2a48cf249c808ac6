"""The squeezing effect: on multi-label prompts, how much probability the policy puts on *all* the user's positives
(y* and the next training events) before and after preference training — DPO vs RAD-DPO.

DPO pushes a negative down relative to one positive; the mass it frees can flow to that positive alone, squeezing the
other positives. RAD-DPO's MLGC contrasts every positive against the negatives and its SFT term lifts every
positive. For up to ``--prompts`` multi-label prompts of the run's preference table (training events only), we
report the mean over prompts of Σ_{positives} π(y|x) (the probability of generating any positive), of π(y*|x)
alone, and of the other positives, for the SFT policy and each tag's best policy; a PNG shows the distributions.

    python experiments/dpo_squeeze.py runs/i19-s0 --tags dpo sdpo rad_dpo --out docs/figures/dpo_squeeze.png
    python experiments/dpo_squeeze.py runs/i19-s0 --which final --tags dpo-lr0.0001 sdpo-lr0.0001 rad_dpo-lr0.0001
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from rl_align.policy.logprobs import item_logprobs
from rl_align.policy.model import load_policy
from rl_align.preferences import read_table
from rl_align.sid.catalog import SidCatalog
from rl_align.utils.io import load_npz


@torch.no_grad()
def positive_mass(policy_dir: Path, catalog: SidCatalog, split: dict, rows: np.ndarray, positives: np.ndarray,
                  batch: int = 128) -> np.ndarray:
    """(R, P) π(positive | prompt) for each positive slot (0 for empty slots)."""
    model = load_policy(policy_dir, catalog).eval()
    lp = item_logprobs(model, catalog, split["train_history"][rows], split["train_users"][rows], positives, batch)
    return np.exp(lp)   # exp(-inf) = 0 for empty slots


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--tags", nargs="+", default=["dpo", "sdpo", "rad_dpo"])
    ap.add_argument("--prompts", type=int, default=1000)
    ap.add_argument("--which", choices=["best", "final"], default="best", help="each tag's best-on-valid or final policy")
    ap.add_argument("--out", type=Path, default=None, help="PNG path (default: <run>/preferences/squeeze.png)")
    args = ap.parse_args(argv)
    table, _ = read_table(args.run / "preferences")
    multi = np.flatnonzero((table.positives >= 0).sum(1) > 1)[: args.prompts]
    rows, positives = table.rows[multi], table.positives[multi]
    catalog = SidCatalog.load(args.run / "sids" / "catalog")
    split = load_npz(args.run / "data" / "split.npz")
    policies = {"sft": args.run / "sft" / "best_policy"}
    pol = f"{args.which}_policy"
    policies.update({t: args.run / "rl" / t / pol for t in args.tags if (args.run / "rl" / t / pol).exists()})
    res = {}
    for name, d in policies.items():
        p = positive_mass(d, catalog, split, rows, positives)
        res[name] = {"all_positives": float(p.sum(1).mean()), "y_star": float(p[:, 0].mean()),
                     "other_positives": float(p[:, 1:].sum(1).mean()), "per_prompt": p.sum(1)}
    print(f"{multi.size} multi-label prompts (mean {float((positives >= 0).sum(1).mean()):.2f} positives)")
    print("| policy | Σ π(positives) | π(y*) | Σ π(other positives) |\n|---|---|---|---|")
    for name, r in res.items():
        print(f"| {name} | {r['all_positives']:.4f} | {r['y_star']:.4f} | {r['other_positives']:.4f} |")
    out = args.out or args.run / "preferences" / "squeeze.png"
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    names = list(res)
    ax[0].bar(names, [res[n]["y_star"] for n in names], label="π(y*)")
    ax[0].bar(names, [res[n]["other_positives"] for n in names], bottom=[res[n]["y_star"] for n in names],
              label="π(other positives)")
    ax[0].set_ylabel("mean probability mass")
    ax[0].set_title("mass on all positives, multi-label prompts")
    ax[0].legend(loc="lower right", fontsize=8)
    ax[0].tick_params(axis="x", rotation=20, labelsize=8)
    for n in names:
        ax[1].hist(np.log10(res[n]["per_prompt"] + 1e-9), bins=40, histtype="step", label=n)
    ax[1].set_xlabel("log10 Σ π(positives) per prompt")
    ax[1].legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    (out.with_suffix(".json")).write_text(json.dumps(
        {n: {k: v for k, v in r.items() if k != "per_prompt"} for n, r in res.items()}, indent=2))
    print(f"plot: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
