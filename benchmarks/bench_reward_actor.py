#!/usr/bin/env python
"""Reward serving: RewardPool (1 and 2 Ray replicas) vs calling the same ranker in-process, in one run.

The ranker is the ML-100K DIN model (item id + genres + year, user id + age +
gender + occupation; default RankerConfig), freshly initialised unless
``--ranker-dir`` points at a trained one (speed does not depend on training).
Each request holds batch/G groups of G candidates with a 20-item history.
Reported per batch size: pairs/s, p50/p99 latency per request, and the actor
overhead of 1 replica = p50(pool, 1 replica) / p50(in-process) − 1. In-process and pool calls are
interleaved (alternating order every repeat), so drift of the machine hits every caller alike. The
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
    from rl_align.data.features import auto_specs, encode
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


def interleaved(fns: dict, req_of: dict, repeats: int, gap_s: float = 0.05) -> dict[str, np.ndarray]:
    """Latencies (s) per caller, calls interleaved: each repeat calls every caller once, alternating the order.

    Three untimed warm-up calls each first. Interleaving puts slow phases of the machine on every side alike. An
    untimed pause of ``gap_s`` before each call lets the previous caller's torch/OpenMP worker threads stop
    spin-waiting (on 2 cores they would otherwise steal CPU from whichever caller runs next).
    """
    for k, fn in fns.items():
        for _ in range(3):
            fn(*req_of[k])
    lat: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    for rep in range(repeats):
        for k in (names if rep % 2 == 0 else names[::-1]):
            time.sleep(gap_s)
            t = time.perf_counter()
            fns[k](*req_of[k])
            lat[k].append(time.perf_counter() - t)
    return {k: np.array(v) for k, v in lat.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ranker-dir")
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--group", type=int, default=16, help="candidates per context (G)")
    ap.add_argument("--batches", default="256,1024,4096,8192", help="pairs per request")
    ap.add_argument("--gap-ms", type=float, default=50.0, help="untimed pause before each call (spinning threads settle)")
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
    # 4 logical CPUs: the 1-replica pool (2 CPUs) and the 2-replica pool (1 each) live side by side so that their
    # calls interleave with the in-process ones; only one caller computes at any moment, on this machine's 2 cores
    ray.init(num_cpus=4, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    sizes = [int(x) for x in args.batches.split(",")]
    rows = []
    torch.set_num_threads(2)
    inproc = RewardScorer(rdir, RewardConfig(functions={"ranker": 1.0}))
    pools = {r: RewardPool(RewardConfig(functions={"ranker": 1.0}, replicas=r, cpus_per_replica=2 / r,
                                        chunk_size=max(args.group, sizes[0] // r), max_inflight=2), rdir)
             for r in (1, 2)}
    for s in sizes:
        users, hist, items, targets = request(s, args.group, n_items, n_users, s)
        batch = StepBatch(users=users, history=hist, rollout_items=items, targets=targets)
        fns, reqs = {"inproc": inproc.score}, {"inproc": (users, hist, items, targets)}
        for r, pool in pools.items():
            pool.cfg = RewardConfig(functions={"ranker": 1.0}, replicas=r, cpus_per_replica=2 / r,
                                    chunk_size=max(args.group, s // r), max_inflight=2)
            fns[f"pool{r}"] = lambda b, pool=pool: pool.score(b, with_target_scores=False)
            reqs[f"pool{r}"] = (batch,)
        lat = interleaved(fns, reqs, args.repeats, args.gap_ms / 1e3)
        b = lat["inproc"]
        for r in pools:
            x = lat[f"pool{r}"]
            rows.append({"pairs": s, "replicas": r,
                         "pool_pairs_per_s": s / np.median(x), "inproc_pairs_per_s": s / np.median(b),
                         "pool_p50_ms": 1e3 * np.percentile(x, 50), "pool_p99_ms": 1e3 * np.percentile(x, 99),
                         "inproc_p50_ms": 1e3 * np.percentile(b, 50), "inproc_p99_ms": 1e3 * np.percentile(b, 99),
                         "overhead": np.percentile(x, 50) / np.percentile(b, 50) - 1,
                         # noise floor: how far apart two halves of the in-process calls' medians are
                         "inproc_half_spread": abs(np.median(b[::2]) / np.median(b[1::2]) - 1)})
            print(json.dumps(rows[-1]), flush=True)
    for pool in pools.values():
        pool.shutdown()
    ray.shutdown()
    res = {"group": args.group, "history": 20, "repeats": args.repeats, "n_items": n_items, "rows": rows,
           "cpu_count": os.cpu_count(), "torch": torch.__version__, "ray": ray.__version__}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2))
    md = [f"# Reward serving: RewardPool vs in-process ranker (G = {args.group}, {args.repeats} interleaved calls "
          "per caller, alternating order; pairs/s from median latency)", "",
          "| pairs/request | replicas | pool pairs/s | in-process pairs/s | pool p50 / p99 ms | in-process p50 / p99 ms "
          "| overhead (p50) | in-process noise (half vs half) |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['pairs']} | {r['replicas']} | {r['pool_pairs_per_s']:,.0f} | {r['inproc_pairs_per_s']:,.0f} | "
                  f"{r['pool_p50_ms']:.1f} / {r['pool_p99_ms']:.1f} | {r['inproc_p50_ms']:.1f} / {r['inproc_p99_ms']:.1f}"
                  f" | {100 * r['overhead']:+.1f}% | ±{100 * r['inproc_half_spread']:.1f}% |")
    Path(args.out).with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
