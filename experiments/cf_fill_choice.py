"""Choose ``embed.cf_fill_neighbours`` on training data only: how well do k text neighbours predict an item's
collaborative vector?

Cold items have no training interaction, so their collaborative half is the mean collaborative vector of their
k nearest items by text (``rl_align/embed/collaborative.py::fill_from_neighbours``). To pick k without touching a
cold, valid or test event, hide the collaborative vectors of random *warm tail* items (items cold items resemble:
few interactions), fill them from their text neighbours, and score the mean cosine to the hidden vectors.

    python experiments/cf_fill_choice.py RUN_DIR [--ks 1 3 5 10 20 50] [--repeats 5]

RUN_DIR: a run with the data and embed stages done and ``embed.cf_dim`` > 0 (e.g. ``rl-align run
experiments/configs/sa2crq_bucket.yaml --set 'stages=[data,embed]' --run-dir runs/cf-fill``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from rl_align.config import RunConfig, load_config
from rl_align.embed.collaborative import cf_vectors, fill_from_neighbours
from rl_align.pipeline import load_split_arrays, training_pairs
from rl_align.utils.popularity import head_mask


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--ks", type=int, nargs="+", default=[1, 3, 5, 10, 20, 50])
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    cfg = load_config(a.run_dir / "config.yaml", RunConfig)
    if cfg.embed.cf_dim < 1:
        raise SystemExit(f"{a.run_dir}/config.yaml: embed.cf_dim: expected ≥ 1 (no collaborative view to fill)")
    split = load_split_arrays(a.run_dir)
    emb = np.load(a.run_dir / "embed" / "item_emb.npy", allow_pickle=False)
    text = emb[:, : emb.shape[1] - cfg.embed.cf_dim]                 # the blend's text half (cosine ignores its scale)
    it, us = training_pairs(split["seq_items"], split["seq_offsets"])
    cf = cf_vectors(it, us, emb.shape[0], split["seq_offsets"].size - 1, cfg.embed.cf_dim, cfg.seed)
    pop = split["item_popularity"]
    tail = np.flatnonzero(~head_mask(pop, 0.2) & (pop > 0))
    n_hide = max(1, int(round(0.1 * tail.size)))
    print(f"{tail.size} warm tail items; {n_hide} hidden per repeat, {a.repeats} repeats")
    print("| k | cosine(filled, own vector) |\n|---|---|")
    for k in a.ks:
        rng = np.random.default_rng(0)                                   # same hidden sets for every k
        scores = []
        for _ in range(a.repeats):
            hide = rng.choice(tail, n_hide, replace=False)
            masked = cf.copy()
            masked[hide] = 0.0
            filled, _ = fill_from_neighbours(text, masked, k)
            scores.append(float((filled[hide] * cf[hide]).sum(axis=1).mean()))
        print(f"| {k} | {np.mean(scores):.3f} ± {np.std(scores):.3f} |")


if __name__ == "__main__":
    main()
