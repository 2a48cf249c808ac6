#!/usr/bin/env python
"""SA²CRQ vs RQ-KMeans: fit+encode time and peak memory on 1M synthetic items (Zipf popularity).

Same data, L=3 levels × K=256 head codes (+64 tail codes, the K/4 default, for SA²CRQ's curriculum), 20 k-means iterations; each
tokenizer in a fresh subprocess (RSS high-water mark above the loaded data). Also reports SA²CRQ's code-length
distribution by popularity (head 20% vs tail 80%) and both collision rates before resolution.

    .venv/bin/python benchmarks/bench_sa2crq.py [--items 1000000] [--dim 384]

Writes benchmarks/results/sa2crq_scale.{json,md}. Goal: SA²CRQ ≤ 2× RQ-KMeans' time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def child(kind: str, data: str, pop: str, levels: int, k: int, iters: int, tau: float, out: str) -> None:
    """Subprocess: fit+encode with one tokenizer; time, peak RSS, lengths and collisions."""
    from bench_sid_scale import PeakRSS, _rss_mb

    from rl_align.config import Sa2crqConfig, SidConfig
    from rl_align.sid import build_tokenizer
    from rl_align.utils.popularity import head_mask

    x, p = np.load(data), np.load(pop)
    base = _rss_mb()
    cfg = SidConfig(tokenizer=kind, levels=levels, codebook_size=k, kmeans_iters=iters, sa2crq=Sa2crqConfig(tau=tau))
    with PeakRSS() as mem:
        t = time.perf_counter()
        codes = build_tokenizer(cfg).fit_encode(x, p)
        secs = time.perf_counter() - t
    head = head_mask(p, 0.2)
    res = {"tokenizer": kind, "seconds": secs, "peak_mb_above_data": mem.peak - base, "peak_rss_mb": mem.peak,
           "mean_len": float(codes.lengths.mean()), "mean_len_head20": float(codes.lengths[head].mean()),
           "mean_len_tail80": float(codes.lengths[~head].mean()),
           "length_hist": {int(a): int(b) for a, b in zip(*np.unique(codes.lengths, return_counts=True))},
           "collision_rate_before_resolution": codes.collision_stats()["collision_rate"]}
    Path(out).write_text(json.dumps(res))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--levels", type=int, default=3)
    ap.add_argument("--k", type=int, default=256)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--tau", type=float, default=2e-6,
                    help="SA²CRQ stop threshold (prefix share; ~2 head items' worth at 1M items)")
    ap.add_argument("--repeats", type=int, default=3, help="alternating repeats, each tokenizer in a fresh process")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "sa2crq_scale"))
    ap.add_argument("--child")
    ap.add_argument("--data")
    ap.add_argument("--pop")
    ap.add_argument("--child-out")
    a = ap.parse_args()
    if a.child:
        child(a.child, a.data, a.pop, a.levels, a.k, a.iters, a.tau, a.child_out)
        return
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from common import alternate, fmt_range, summary

    from rl_align.data.synthetic import synthetic_embeddings

    res: dict = {"items": a.items, "dim": a.dim, "levels": a.levels, "k": a.k, "iters": a.iters, "tau": a.tau}
    with tempfile.TemporaryDirectory() as tmp:
        x, _ = synthetic_embeddings(a.items, a.dim, n_clusters=1000, noise=0.6, seed=0)
        pop = np.minimum(np.random.default_rng(0).zipf(1.2, a.items), 10 ** 6).astype(np.float64)
        data, popf = os.path.join(tmp, "x.npy"), os.path.join(tmp, "pop.npy")
        np.save(data, x)
        np.save(popf, pop)
        del x
        def side(kind):
            def go() -> float:
                out = os.path.join(tmp, kind + ".json")
                subprocess.run([sys.executable, __file__, "--child", kind, "--data", data, "--pop", popf,
                                "--levels", str(a.levels), "--k", str(a.k), "--iters", str(a.iters), "--tau",
                                str(a.tau), "--child-out", out], check=True)
                res[kind] = json.loads(Path(out).read_text())
                return res[kind]["seconds"]
            return go

        secs = alternate({k: side(k) for k in ("rq_kmeans", "sa2crq")}, a.repeats)
    res["seconds"] = {k: summary(v) for k, v in secs.items()}
    res["repeats"] = a.repeats
    res["time_ratio"] = res["seconds"]["sa2crq"]["median"] / res["seconds"]["rq_kmeans"]["median"]
    res["peak_rss_ratio"] = res["sa2crq"]["peak_rss_mb"] / res["rq_kmeans"]["peak_rss_mb"]
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=2))
    r, s = res["rq_kmeans"], res["sa2crq"]
    md = [f"# SA²CRQ vs RQ-KMeans, {a.items:,} items × {a.dim}-d, {a.levels} levels × {a.k} codes, τ = {a.tau:g}", "",
          "| tokenizer | fit+encode s, median (range) | peak MB above data | mean length (head 20% / tail 80%) | collisions before resolution |",
          "|---|---:|---:|---|---:|",
          f"| rq_kmeans | {fmt_range(res['seconds']['rq_kmeans'])} | {r['peak_mb_above_data']:.0f} | {r['mean_len']:.2f} | "
          f"{r['collision_rate_before_resolution']:.2%} |",
          f"| sa2crq | {fmt_range(res['seconds']['sa2crq'])} | {s['peak_mb_above_data']:.0f} | {s['mean_len']:.2f} "
          f"({s['mean_len_head20']:.2f} / {s['mean_len_tail80']:.2f}) | {s['collision_rate_before_resolution']:.2%} |",
          "", f"time ratio SA²CRQ / RQ-KMeans: **{res['time_ratio']:.2f}×** (goal ≤ 2×); peak RSS ratio "
          f"{res['peak_rss_ratio']:.2f}×"]
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
