#!/usr/bin/env python
"""Scale benchmark for Semantic IDs: 1M synthetic items × 384-d.

1. RQ-KMeans (ours, faiss k-means per level) vs faiss's own ResidualQuantizer on
   the same data, L=3 levels × K=256 codes: fit+encode wall time, peak memory
   (each in a fresh subprocess, RSS high-water mark above the loaded data) and
   reconstruction MSE — reported as ratios in one run.
2. The SID trie over the 1M codes: build time, bytes per item, and batched
   "allowed next tokens" throughput for 4,096 prefixes, against a dict-of-dicts
   Python trie (LETTER/TIGER-style ``prefix_allowed_tokens_fn``).

Usage: python benchmarks/bench_sid_scale.py [--items 1000000] [--dim 384] [--out benchmarks/results/sid_scale.json]
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


def _rss_mb() -> float:
    """Current resident set size in MB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class PeakRSS:
    """Samples RSS every 5 ms in a thread; ``peak`` is the high-water mark while running."""

    def __init__(self) -> None:
        import threading

        self.peak = _rss_mb()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_mb())
            time.sleep(0.005)

    def __enter__(self) -> "PeakRSS":
        self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, _rss_mb())


def child(kind: str, path: str, levels: int, k: int, iters: int, out: str) -> None:
    """Runs in a subprocess: fit+encode with one method, report time, peak RSS and MSE."""
    import faiss

    from rl_align.config import SidConfig
    from rl_align.sid.rq_kmeans import RQKMeans

    x = np.load(path)  # fully loaded, so both methods start from the same resident data
    base = _rss_mb()
    with PeakRSS() as mem:
        t = time.perf_counter()
        if kind == "ours":
            tok = RQKMeans(SidConfig(levels=levels, codebook_size=k, kmeans_iters=iters))
            codes = tok.fit_encode(x)
            secs = time.perf_counter() - t
            codes_arr = codes.codes
        else:
            rq = faiss.ResidualQuantizer(x.shape[1], levels, int(np.log2(k)))
            rq.train_type = faiss.ResidualQuantizer.Train_default  # plain greedy level-wise k-means, like ours
            rq.max_beam_size = 1 if kind == "faiss_beam1" else 5
            rq.cp.niter = iters
            rq.train(x)
            packed = rq.compute_codes(x)
            secs = time.perf_counter() - t
            codes_arr = None
    recon = tok.reconstruct(codes) if kind == "ours" else rq.decode(packed)
    peak = mem.peak - base
    mse = float(((x - recon) ** 2).sum(1).mean())
    res = {"method": kind, "seconds": secs, "peak_mb_above_data": peak, "peak_rss_mb": mem.peak,
           "data_mb": x.nbytes / 2**20, "mse": mse}
    if codes_arr is not None:
        np.save(out + ".codes.npy", codes_arr)
    Path(out).write_text(json.dumps(res))


def run_child(kind: str, path: str, args, tmp: str) -> dict:
    out = os.path.join(tmp, f"{kind}.json")
    cmd = [sys.executable, __file__, "--child", kind, "--data", path, "--levels", str(args.levels), "--k",
           str(args.k), "--iters", str(args.iters), "--child-out", out]
    subprocess.run(cmd, check=True)
    return json.loads(Path(out).read_text())


def python_trie(seqs: list[list[int]]) -> dict:
    """dict-of-dicts trie, as LETTER's generation_trie / TIGER reproductions build it."""
    root: dict = {}
    for s in seqs:
        node = root
        for t in s:
            node = node.setdefault(t, {})
    return root


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--levels", type=int, default=3)
    ap.add_argument("--k", type=int, default=256)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--prefixes", type=int, default=4096)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "sid_scale.json"))
    ap.add_argument("--with-beam5", action="store_true",
                    help="also run faiss RQ with its default beam 5 (slower, ~14 GB peak at 1M items)")
    ap.add_argument("--child")
    ap.add_argument("--data")
    ap.add_argument("--child-out")
    args = ap.parse_args()
    if args.child:
        child(args.child, args.data, args.levels, args.k, args.iters, args.child_out)
        return

    import torch

    from rl_align.data.synthetic import synthetic_embeddings
    from rl_align.sid import SidCatalog, SidCodes
    from rl_align.sid.collisions import append_level

    res: dict = {"items": args.items, "dim": args.dim, "levels": args.levels, "k": args.k, "iters": args.iters,
                 "threads": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        x, _ = synthetic_embeddings(args.items, args.dim, n_clusters=1000, noise=0.6, seed=0)
        path = os.path.join(tmp, "x.npy")
        np.save(path, x)
        del x
        res["generate_seconds"] = time.perf_counter() - t
        ours = run_child("ours", path, args, tmp)
        faiss1 = run_child("faiss_beam1", path, args, tmp)
        faiss5 = run_child("faiss_beam5", path, args, tmp) if args.with_beam5 else None
        codes = np.load(os.path.join(tmp, "ours.json.codes.npy"))
    res["rq"] = {"ours": ours, "faiss_rq_beam1": faiss1, "faiss_rq_beam5": faiss5,
                 "time_ratio_vs_faiss_beam1": ours["seconds"] / faiss1["seconds"],
                 "peak_rss_ratio_vs_faiss_beam1": ours["peak_rss_mb"] / faiss1["peak_rss_mb"]}

    # ---- trie
    sid = SidCodes.fixed(codes, [args.k] * args.levels)
    before = sid.collision_stats()
    sid = append_level(sid, np.zeros(sid.n))
    t = time.perf_counter()
    cat = SidCatalog([str(i) for i in range(sid.n)], sid)
    build_s = time.perf_counter() - t
    trie = cat.trie
    t = time.perf_counter()
    _ = trie.__class__.build(cat.tokens, cat.token_lengths, cat.vocab_size)
    trie_only_s = time.perf_counter() - t
    rng = np.random.default_rng(0)
    items = rng.integers(0, sid.n, args.prefixes)
    depth = rng.integers(0, cat.token_lengths[items])  # a proper prefix of each item's tokens
    prefixes = torch.from_numpy(cat.tokens[items])
    plen = torch.from_numpy(depth)
    torch.set_num_threads(1)

    def timeit(fn, reps=20):
        fn()
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        return (time.perf_counter() - t0) / reps

    states = trie.walk(prefixes, plen)
    logits = torch.randn(args.prefixes, cat.vocab_size)
    t_walk_mask = timeit(lambda: trie.allowed_mask(trie.walk(prefixes, plen)))
    t_mask = timeit(lambda: trie.allowed_mask(states))
    t_logits = timeit(lambda: trie.mask_logits(logits, states))
    t_step = timeit(lambda: trie.step(states, prefixes[:, 0]))
    # dict-of-dicts peer
    seqs = [cat.item_tokens(i) for i in range(sid.n)]
    t = time.perf_counter()
    pt = python_trie(seqs)
    py_build = time.perf_counter() - t
    pref_lists = [cat.tokens[i, :d].tolist() for i, d in zip(items, depth)]

    def py_allowed():
        mask = torch.zeros(args.prefixes, cat.vocab_size, dtype=torch.bool)
        for r, p in enumerate(pref_lists):
            node = pt
            for tok in p:
                node = node[tok]
            mask[r, list(node.keys())] = True
        return mask

    t_py = timeit(py_allowed, reps=3)
    assert torch.equal(py_allowed(), trie.allowed_mask(states)), "tries disagree"
    res["trie"] = {
        "collision_rate_before": before["collision_rate"],
        "catalog_build_seconds": build_s, "trie_build_seconds": trie_only_s,
        "nodes": trie.n_nodes, "edges": trie.n_edges, "bytes": trie.nbytes(),
        "bytes_per_item": trie.nbytes() / sid.n,
        "prefixes": args.prefixes,
        "walk_plus_mask_ms": t_walk_mask * 1e3, "mask_from_states_ms": t_mask * 1e3,
        "mask_logits_ms": t_logits * 1e3, "step_ms": t_step * 1e3,
        "prefixes_per_s_walk_plus_mask": args.prefixes / t_walk_mask,
        "python_dict_trie_build_seconds": py_build, "python_dict_allowed_ms": t_py * 1e3,
        "speedup_vs_python_dict": t_py / t_walk_mask,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2))
    r, tr = res["rq"], res["trie"]
    print(f"| RQ-KMeans fit+encode, {args.items:,}×{args.dim}, {args.levels}×{args.k} | ours {r['ours']['seconds']:.1f}s "
          f"/ faiss RQ (beam 1) {r['faiss_rq_beam1']['seconds']:.1f}s | {r['time_ratio_vs_faiss_beam1']:.2f}× time |")
    print(f"| peak RSS (data {r['ours']['data_mb']:.0f} MB) | ours {r['ours']['peak_rss_mb']:.0f} MB "
          f"(+{r['ours']['peak_mb_above_data']:.0f}) / faiss {r['faiss_rq_beam1']['peak_rss_mb']:.0f} MB "
          f"(+{r['faiss_rq_beam1']['peak_mb_above_data']:.0f}) | {r['peak_rss_ratio_vs_faiss_beam1']:.2f}× |")
    b5 = r["faiss_rq_beam5"]
    extra = f" / faiss beam 5 {b5['mse']:.4f} ({b5['seconds']:.1f}s)" if b5 else ""
    print(f"| reconstruction MSE | ours {r['ours']['mse']:.4f} / faiss beam 1 {r['faiss_rq_beam1']['mse']:.4f}{extra} | "
          f"{r['ours']['mse'] / r['faiss_rq_beam1']['mse']:.3f}× |")
    print(f"| trie build / size | {tr['trie_build_seconds']:.2f}s, {tr['bytes_per_item']:.1f} bytes/item | |")
    print(f"| allowed-next, {args.prefixes} prefixes | {tr['walk_plus_mask_ms']:.2f} ms walk+mask "
          f"({tr['prefixes_per_s_walk_plus_mask']:,.0f} prefixes/s); dict trie {tr['python_dict_allowed_ms']:.1f} ms "
          f"| {tr['speedup_vs_python_dict']:.1f}× faster |")


if __name__ == "__main__":
    main()
