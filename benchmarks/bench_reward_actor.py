#!/usr/bin/env python
"""Reward serving: RewardPool (1 and 2 Ray replicas) vs calling the same ranker in-process, in one run.

The ranker is the ML-100K DIN model (item id + genres + year, user id + age +
gender + occupation; default RankerConfig), freshly initialised unless
``--ranker-dir`` points at a trained one (speed does not depend on training).
Each request holds batch/G groups of G candidates with a 20-item history.
Reported per batch size: pairs/s, p50/p99 latency per request, and the actor
overhead of 1 replica = p50(pool, 1 replica) / p50(in-process) − 1. The
in-process caller and the single replica get the same torch threads (2); the
two replicas get 1 each (this machine has 2 cores).

Usage: .venv/bin/python benchmarks/bench_reward_actor.py [--ranker-dir DIR] [--repeats 30]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def build_ml100k_ranker(directory: Path) -> None:
    import torch

    from rl_align.config import DataConfig, RankerConfig
    from rl_align.data import load_dataset
    from rl_align.ranker.features import auto_specs, encode
    from rl_align.ranker.model import DinRanker, save_ranker

    data = load_dataset(DataConfig())
    ispecs = auto_specs(data.item_features, data.n_items)
    uspecs = auto_specs(data.user_features, data.n_users)
    torch.manual_seed(0)
    m = DinRanker(data.n_items, data.n_users, RankerConfig(), ispecs, uspecs,
                  {s.name: torch.from_numpy(encode(s, data.item_features[s.name])) for s in ispecs},
                  {s.name: torch.from_numpy(encode(s, data.user_features[s.name])) for s in uspecs})
    save_ranker(m, directory)


def request(pairs: int, G: int, n_items: int, n_users: int, seed: int):
    rng = np.random.default_rng(seed)
    B = pairs // G
    return (rng.integers(0, n_users, B), rng.integers(0, n_items, (B, 20)), rng.integers(0, n_items, (B, G)),
            rng.integers(0, n_items, B))


def timed(fn, req, repeats: int) -> np.ndarray:
    for _ in range(3):
        fn(*req)
    lat = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn(*req)
        lat.append(time.perf_counter() - t)
    return np.array(lat)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ranker-dir")
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--group", type=int, default=16, help="candidates per context (G)")
    ap.add_argument("--batches", default="256,1024,4096,8192", help="pairs per request")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "reward_actor.json"))
    args = ap.parse_args()

    import ray
    import torch

    from rl_align.algos.batch import StepBatch
    from rl_align.config import RewardConfig
    from rl_align.ranker.model import load_ranker
    from rl_align.rewards.actor import RewardPool, RewardScorer

    tmp = tempfile.TemporaryDirectory()
    rdir = Path(args.ranker_dir) if args.ranker_dir else Path(tmp.name) / "ranker"
    if not args.ranker_dir:
        build_ml100k_ranker(rdir)
    model, _ = load_ranker(rdir)
    n_items, n_users = model.n_items, model.n_users
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    sizes = [int(x) for x in args.batches.split(",")]
    rows = []
    torch.set_num_threads(2)
    inproc = RewardScorer(rdir, RewardConfig(functions={"ranker": 1.0}))
    base = {s: timed(inproc.score, request(s, args.group, n_items, n_users, s), args.repeats) for s in sizes}
    for replicas in (1, 2):
        cfgs = {s: RewardConfig(functions={"ranker": 1.0}, replicas=replicas, cpus_per_replica=2 / replicas,
                                chunk_size=max(args.group, s // replicas), max_inflight=2) for s in sizes}
        pool = RewardPool(cfgs[sizes[0]], rdir)
        for s in sizes:
            pool.cfg = cfgs[s]  # same replicas, chunking per batch size
            users, hist, items, targets = request(s, args.group, n_items, n_users, s)
            batch = StepBatch(users=users, history=hist, rollout_items=items, targets=targets)
            lat = timed(lambda b: pool.score(b, with_target_scores=False), (batch,), args.repeats)
            b = base[s]
            rows.append({"pairs": s, "replicas": replicas,
                         "pool_pairs_per_s": s / lat.mean(), "inproc_pairs_per_s": s / b.mean(),
                         "pool_p50_ms": 1e3 * np.percentile(lat, 50), "pool_p99_ms": 1e3 * np.percentile(lat, 99),
                         "inproc_p50_ms": 1e3 * np.percentile(b, 50), "inproc_p99_ms": 1e3 * np.percentile(b, 99),
                         "overhead": np.percentile(lat, 50) / np.percentile(b, 50) - 1})
            print(json.dumps(rows[-1]), flush=True)
        pool.shutdown()
    ray.shutdown()
    res = {"group": args.group, "history": 20, "repeats": args.repeats, "n_items": n_items, "rows": rows,
           "cpu_count": os.cpu_count(), "torch": torch.__version__, "ray": ray.__version__}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2))
    md = ["| pairs/request | replicas | pool pairs/s | in-process pairs/s | pool p50 / p99 ms | in-process p50 / p99 ms "
          "| overhead (p50) |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['pairs']} | {r['replicas']} | {r['pool_pairs_per_s']:,.0f} | {r['inproc_pairs_per_s']:,.0f} | "
                  f"{r['pool_p50_ms']:.1f} / {r['pool_p99_ms']:.1f} | {r['inproc_p50_ms']:.1f} / {r['inproc_p99_ms']:.1f}"
                  f" | {100 * r['overhead']:+.1f}% |")
    Path(args.out).with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
