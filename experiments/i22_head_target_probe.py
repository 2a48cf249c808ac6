"""Issue 22: where a bucket catalog loses HR@10 — on targets with a code of their own or on bucket targets — and at
which SID level the policy's log π of the target falls.

For each run: test HR@10 from its exported list (``eval/predictions_test.jsonl``), split by whether the target's
code is shared in the bucket catalog ``--buckets-from`` (the same items are compared across tokenizers), and the
policy's teacher-forced log π(token | prompt, earlier tokens) of the target's SID, averaged per position over the
targets with a code of their own.

    python experiments/i22_head_target_probe.py --buckets-from runs/i22-syn-bucket-s1 \
        runs/i22-syn-rqk-s1 runs/i22-syn-bucket-s1 [--users 2000]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rl_align.eval.evaluate import eval_set  # noqa: E402
from rl_align.policy.data import build_prompts  # noqa: E402
from rl_align.policy.logprobs import continuation_logprobs  # noqa: E402
from rl_align.policy.model import load_policy  # noqa: E402
from rl_align.sid.catalog import SidCatalog  # noqa: E402
from rl_align.utils.io import load_npz  # noqa: E402


def list_hits(run: Path, catalog: SidCatalog, targets: np.ndarray) -> np.ndarray:
    """(N,) bool: the target is in the run's exported top 10 (rows in test-user order)."""
    idx = {iid: i for i, iid in enumerate(catalog.item_ids)}
    rows = [json.loads(line) for line in open(run / "eval" / "predictions_test.jsonl")]
    top = np.array([[idx[x] for x in r["items"][:10]] for r in rows])
    return (top == targets[:, None]).any(1)


@torch.no_grad()
def per_position_logp(run: Path, catalog: SidCatalog, users: int, batch: int = 250) -> tuple[np.ndarray, np.ndarray]:
    """(N, T) teacher-forced log π of each test target's SID tokens (+ <eos>), 0 past its end; and the (N,) targets."""
    model = load_policy(run / "sft" / "best_policy", catalog)
    es = eval_set(load_npz(run / "data" / "split.npz"), "test", users)
    out = []
    for s in range(0, es.targets.size, batch):
        ids, mask = build_prompts(es.history[s:s + batch], catalog, es.users[s:s + batch])
        cont = torch.from_numpy(catalog.tokens[es.targets[s:s + batch]].astype(np.int64))
        lp, m = continuation_logprobs(model, ids, mask, cont)
        out.append((lp * m).numpy())
    return np.concatenate(out), es.targets


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--buckets-from", required=True, help="the bucket run whose shared codes split the targets")
    ap.add_argument("--users", type=int, default=2000, help="test users for the log π part (HR uses all)")
    a = ap.parse_args()
    ref = SidCatalog.load(Path(a.buckets_from) / "sids" / "catalog")
    shared = ref.buckets.sizes[ref.buckets.bucket_of] > 1
    print("| run | HR@10, own-code targets | HR@10, bucket targets | mean log π per SID position, own-code targets "
          "| sequence log π |\n|---|---|---|---|---|")
    for r in map(Path, a.runs):
        cat = SidCatalog.load(r / "sids" / "catalog")
        targets = load_npz(r / "data" / "split.npz")["test_targets"]
        hit = list_hits(r, cat, targets)
        lp, t = per_position_logp(r, cat, a.users)
        own = ~shared[t]
        pos = " / ".join(f"{x:.3f}" for x in lp[own].mean(0))
        print(f"| {r.name} | {hit[~shared[targets]].mean():.4f} (n {int((~shared[targets]).sum())}) | "
              f"{hit[shared[targets]].mean():.4f} (n {int(shared[targets].sum())}) | {pos} | "
              f"{lp[own].sum(1).mean():.3f} |")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
