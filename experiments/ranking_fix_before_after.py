#!/usr/bin/env python
"""The same policy ranked with the pre-fix exclusion (seen items banned only at <eos>) and with the current
prefix-level exclusion: list lengths, seen items ranked and HR/NDCG@K, paired on the same users.

The pre-fix engine is read from git history (commit PRE_FIX, the last one before the fix), registered under
another name and run on the same prompts, so the comparison needs a git checkout of this repository.

Usage: python experiments/ranking_fix_before_after.py RUN_DIR [RUN_DIR ...] [--split test] [--beams 20]
Prints one JSON object per run (and writes it to RUN_DIR/eval/ranking_fix.json).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PRE_FIX = "97cbba0"


def legacy_engine_class():
    """The torch engine as of PRE_FIX, loaded as a module of its own and registered as 'torch-prefix-bug'."""
    src = subprocess.run(["git", "-C", str(ROOT), "show", f"{PRE_FIX}:rollouts/torch_engine.py"], check=True,
                         capture_output=True, text=True).stdout
    src = src.replace("from rollouts", "from rl_align.rollouts")  # the package moved under rl_align since
    src = src.replace('@ENGINES.register("torch")', '@ENGINES.register("torch-prefix-bug")')
    path = Path(tempfile.mkdtemp()) / "legacy_torch_engine.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("legacy_torch_engine", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.TorchEngine


def summarise(ranked: np.ndarray, es, ks) -> dict:
    from rl_align.eval.evaluate import metrics

    lens = (ranked >= 0).sum(1)
    seen = ((ranked[:, :, None] == es.seen[:, None, :]) & (ranked[:, :, None] >= 0)).sum()
    return {"full_lists": float((lens == ranked.shape[1]).mean()), "under_10": int((lens < 10).sum()),
            "single_item": int((lens == 1).sum()), "mean_length": float(lens.mean()), "seen_ranked": int(seen),
            **metrics(ranked, es.targets, ks)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--split", default="test")
    ap.add_argument("--beams", type=int, default=20)
    ap.add_argument("--stage", default="sft")
    args = ap.parse_args()
    import torch

    from rl_align.eval.evaluate import eval_set, rank_with_engine, target_ranks
    from rl_align.eval.run_eval import policy_dir
    from rl_align.eval.significance import mcnemar_exact
    from rl_align.policy.model import load_policy
    from rl_align.rollouts.torch_engine import TorchEngine
    from rl_align.sid.catalog import SidCatalog
    from rl_align.utils.io import load_npz, write_json

    torch.set_num_threads(2)
    Legacy = legacy_engine_class()
    for run in map(Path, args.runs):
        catalog = SidCatalog.load(run / "sids" / "catalog")
        model = load_policy(policy_dir(run, args.stage), catalog)
        es = eval_set(load_npz(run / "data" / "split.npz"), args.split)
        out = {"run": str(run), "split": args.split, "beams": args.beams}
        ranks = {}
        for name, eng in (("before", Legacy(model, catalog)), ("after", TorchEngine(model, catalog))):
            ranked, _ = rank_with_engine(eng, catalog, es, args.beams, exclude_history=True)
            out[name] = summarise(ranked, es, [1, 5, 10, 20])
            ranks[name] = target_ranks(ranked, es.targets)
        hb, ha = (ranks["before"] >= 0) & (ranks["before"] < 10), (ranks["after"] >= 0) & (ranks["after"] < 10)
        out["hr@10_users_won_lost"] = [int((ha & ~hb).sum()), int((hb & ~ha).sum())]
        out["hr@10_mcnemar_p"] = mcnemar_exact(int((ha & ~hb).sum()), int((hb & ~ha).sum()))
        write_json(run / "eval" / "ranking_fix.json", out)
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
