#!/usr/bin/env python
"""SCI's dual-view index against faiss's own IVF-PQ on a synthetic 1M-item catalog, in one run.

Data (seeded, stated so anyone can regenerate it): item-view vectors ``iv`` are unit vectors around 4,096 random
topic centres (noise 0.6 per dimension / √d); query-view item vectors ``qv`` = normalise(iv · A + 0.2 noise), A a fixed
random near-identity map — the two towers' views of the same items, close but not equal, as an untied dual tower
gives them. Queries: the query view of random items plus noise (what the query tower outputs for a user about to
pick that item).

Both indexes get the same vectors, nlist, PQ (m × nbits), training sample (``--train-sample`` rows for coarse
k-means and for PQ), threads and nprobe. faiss runs its own ``IVF{nlist},PQ{m}x{nbits}`` search (item-view
centroids route the query); ours routes with query-view centroids and scans with faiss's IVFPQ scanner.
Recall@100 = |top-100 ∩ exact top-100| / 100, exact = brute-force inner product on the item view (faiss
``IndexFlatIP``). Repeats alternate the two sides; median and range of search QPS; ratios are ours ÷ faiss.

Usage: python benchmarks/bench_sci_index.py [--n 1000000] [--nprobes 8 16 32] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import faiss
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def make_data(n: int, d: int, n_queries: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = _unit(rng.normal(size=(4096, d)))
    iv = np.empty((n, d), np.float32)
    amap = (np.eye(d) + 0.3 * rng.normal(size=(d, d)) / np.sqrt(d)).astype(np.float32)
    qv = np.empty((n, d), np.float32)
    for s in range(0, n, 200_000):
        m = min(n, s + 200_000) - s
        x = _unit(centres[rng.integers(0, 4096, m)] + 0.6 * rng.normal(size=(m, d)).astype(np.float32) / np.sqrt(d))
        iv[s: s + m] = x
        qv[s: s + m] = _unit(x @ amap + 0.2 * rng.normal(size=(m, d)).astype(np.float32) / np.sqrt(d))
    pick = rng.integers(0, n, n_queries)
    q = _unit(qv[pick] + 0.2 * rng.normal(size=(n_queries, d)).astype(np.float32) / np.sqrt(d))
    return qv, iv, q


def recall(ids: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(a.tolist()) & set(b.tolist())) / exact.shape[1] for a, b in zip(ids, exact)]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--nlist", type=int, default=1024)
    ap.add_argument("--m", type=int, default=16)
    ap.add_argument("--nbits", type=int, default=8)
    ap.add_argument("--train-sample", type=int, default=131_072)
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--nprobes", type=int, nargs="+", default=[8, 16, 32])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "sci_index.json"))
    args = ap.parse_args()

    from rl_align.retrieval.index import DualViewIndex, IvfPqIndex

    faiss.omp_set_num_threads(args.threads)
    t = time.perf_counter()
    qv, iv, q = make_data(args.n, args.d, args.queries, 0)
    print(f"data {time.perf_counter() - t:.1f}s", flush=True)
    flat = faiss.IndexFlatIP(args.d)
    flat.add(iv)
    t = time.perf_counter()
    _, exact = flat.search(q, 100)
    exact_s = time.perf_counter() - t
    del flat
    builds = {}
    t = time.perf_counter()
    ours = DualViewIndex(qv, iv, args.nlist, args.m, args.nbits, seed=0, train_sample=args.train_sample)
    builds["dual_view"] = time.perf_counter() - t
    t = time.perf_counter()
    peer = IvfPqIndex(iv, args.nlist, args.m, args.nbits, seed=0, train_sample=args.train_sample)
    builds["faiss_ivfpq"] = time.perf_counter() - t
    mem = {"dual_view": faiss.serialize_index(ours.ivf).nbytes + 4 * args.nlist * args.d,
           "faiss_ivfpq": faiss.serialize_index(peer.ivf).nbytes}
    print(f"build dual_view {builds['dual_view']:.1f}s faiss {builds['faiss_ivfpq']:.1f}s", flush=True)
    rows = []
    for npb in args.nprobes:
        times = {"dual_view": [], "faiss_ivfpq": []}
        res = {}
        for r in range(args.repeats):
            order = [("dual_view", ours), ("faiss_ivfpq", peer)]
            for name, ix in (order if r % 2 == 0 else order[::-1]):
                t = time.perf_counter()
                if name == "faiss_ivfpq":  # faiss's own search path: its quantizer routes
                    ix.ivf.nprobe = npb
                    _, ids = ix.ivf.search(q, 100)
                    _, lists = ix.ivf.quantizer.search(q, npb)
                    dc = ix._scanned(lists)
                else:
                    _, ids, dc = ix.search(q, 100, npb)
                times[name].append(time.perf_counter() - t)
                res[name] = (recall(ids, exact), float(dc.mean()))
        row = {"nprobe": npb}
        for name in times:
            ts = np.array(times[name])
            row[name] = {"qps_median": args.queries / float(np.median(ts)), "qps_range": [args.queries / ts.max(),
                                                                                       args.queries / ts.min()],
                         "recall@100": res[name][0], "distance_computations": res[name][1]}
        row["qps_ratio"] = row["dual_view"]["qps_median"] / row["faiss_ivfpq"]["qps_median"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    out = {"n": args.n, "d": args.d, "nlist": args.nlist, "pq": f"{args.m}x{args.nbits}",
           "train_sample": args.train_sample, "queries": args.queries, "threads": args.threads,
           "repeats": args.repeats, "exact_search_qps": args.queries / exact_s, "build_seconds": builds,
           "build_ratio": builds["dual_view"] / builds["faiss_ivfpq"], "index_bytes": mem,
           "memory_ratio": mem["dual_view"] / mem["faiss_ivfpq"], "rows": rows}
    Path(args.out).write_text(json.dumps(out, indent=2))
    md = [f"SCI dual-view index vs faiss IVF-PQ, {args.n:,} synthetic items, d={args.d}, nlist {args.nlist}, "
          f"PQ {args.m}x{args.nbits}, {args.threads} threads, {args.queries} queries, median of {args.repeats}",
          "", f"build: ours {builds['dual_view']:.1f} s vs faiss {builds['faiss_ivfpq']:.1f} s "
          f"({out['build_ratio']:.2f}×); index bytes {mem['dual_view']:,} vs {mem['faiss_ivfpq']:,} "
          f"({out['memory_ratio']:.3f}×); exact search {out['exact_search_qps']:.0f} QPS", "",
          "| nprobe | recall@100 ours / faiss | distance computations ours / faiss | QPS ours / faiss (range) | QPS ratio |",
          "|---|---|---|---|---|"]
    for r in rows:
        a, b = r["dual_view"], r["faiss_ivfpq"]
        md.append(f"| {r['nprobe']} | {a['recall@100']:.3f} / {b['recall@100']:.3f} | {a['distance_computations']:.0f}"
                  f" / {b['distance_computations']:.0f} | {a['qps_median']:.0f} ({a['qps_range'][0]:.0f}–"
                  f"{a['qps_range'][1]:.0f}) / {b['qps_median']:.0f} ({b['qps_range'][0]:.0f}–{b['qps_range'][1]:.0f})"
                  f" | {r['qps_ratio']:.2f}× |")
    Path(args.out).with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
