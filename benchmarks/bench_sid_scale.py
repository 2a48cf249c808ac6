#!/usr/bin/env python
"""Scale benchmark for Semantic IDs: 1M synthetic items × 384-d.

1. RQ-KMeans (ours, faiss k-means per level) vs faiss's own ``ResidualQuantizer`` (greedy, beam 1), L=3 levels ×
   K=256 codes, fit+encode. The main peer gets the **same inputs**: the same 65,536-row training sample ours fits
   on (K × max_points_per_centroid), the same k-means iterations and restarts (``cp.nredo`` = ``sid.kmeans_redo``)
   and chunked ``compute_codes`` (65,536 rows at a time, as our encoder). faiss as a user calls it by default
   (``train`` on all rows, one ``compute_codes`` over all rows, one k-means run per level) is reported beside it.
   Each fit runs in a fresh subprocess (peak RSS above the loaded data); ``--repeats`` alternate ours and the main
   peer; the report has median and range of each and the ratio of medians, plus reconstruction MSE.
2. The SID trie over the 1M codes: build time, bytes per item, and batched "allowed next tokens" throughput for
   4,096 prefixes, against a dict-of-dicts Python trie (LETTER/TIGER-style ``prefix_allowed_tokens_fn``).

Usage: python benchmarks/bench_sid_scale.py [--items 1000000] [--dim 384] [--repeats 3] [--out benchmarks/results/sid_scale.json]
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


def training_sample(n: int, k: int, seed: int = 0, max_points_per_centroid: int = 256) -> np.ndarray:
    """The rows RQKMeans.fit trains on (same rng and size), so faiss can be given the same sample."""
    m = min(n, k * max_points_per_centroid)
    return np.sort(np.random.default_rng(seed).choice(n, m, replace=False)) if m < n else np.arange(n)


def child(kind: str, path: str, levels: int, k: int, iters: int, redo: int, out: str) -> None:
    """Runs in a subprocess: fit+encode with one method, report time, peak RSS and MSE.

    kind: ``ours`` | ``faiss_same`` (same sample, restarts, chunked encode) | ``faiss_default`` (all rows, 1 run).
    """
    import faiss

    from rl_align.config import SidConfig
    from rl_align.sid.rq_kmeans import RQKMeans

    x = np.load(path)  # fully loaded, so every method starts from the same resident data
    base = _rss_mb()
    chunk = 65536
    with PeakRSS() as mem:
        t = time.perf_counter()
        if kind == "ours":
            tok = RQKMeans(SidConfig(levels=levels, codebook_size=k, kmeans_iters=iters, kmeans_redo=redo))
            codes = tok.fit_encode(x)
            secs = time.perf_counter() - t
        else:
            rq = faiss.ResidualQuantizer(x.shape[1], levels, int(np.log2(k)))
            rq.train_type = faiss.ResidualQuantizer.Train_default  # plain greedy level-wise k-means, like ours
            rq.max_beam_size = 1
            rq.cp.niter = iters
            if kind == "faiss_same":
                rq.cp.nredo = redo
                rq.train(np.ascontiguousarray(x[training_sample(x.shape[0], k)]))
                packed = np.concatenate([rq.compute_codes(x[s: s + chunk]) for s in range(0, x.shape[0], chunk)])
            else:
                rq.train(x)
                packed = rq.compute_codes(x)
            secs = time.perf_counter() - t
    recon = tok.reconstruct(codes) if kind == "ours" else rq.decode(packed)
    peak = mem.peak - base
    mse = float(((x - recon) ** 2).sum(1).mean())
    res = {"method": kind, "seconds": secs, "peak_mb_above_data": peak, "peak_rss_mb": mem.peak,
           "data_mb": x.nbytes / 2**20, "mse": mse}
    if kind == "ours":
        np.save(out + ".codes.npy", codes.codes)
    Path(out).write_text(json.dumps(res))


def run_child(kind: str, path: str, args, tmp: str) -> dict:
    out = os.path.join(tmp, f"{kind}.json")
    cmd = [sys.executable, __file__, "--child", kind, "--data", path, "--levels", str(args.levels), "--k",
           str(args.k), "--iters", str(args.iters), "--redo", str(args.redo), "--child-out", out]
    subprocess.run(cmd, check=True)
    return json.loads(Path(out).read_text())


def rq_section(path: str, args, tmp: str) -> dict:
    """Alternating repeats of ours vs faiss on the same sample, then faiss as called by default once."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from common import alternate, summary

    runs: dict[str, list[dict]] = {"ours": [], "faiss_same": []}

    def side(kind):
        def go() -> float:
            runs[kind].append(run_child(kind, path, args, tmp))
            return runs[kind][-1]["seconds"]
        return go

    secs = alternate({k: side(k) for k in runs}, args.repeats, lambda m: print(m, flush=True))
    default = run_child("faiss_default", path, args, tmp) if not args.skip_default else None
    sec = {k: summary(v) for k, v in secs.items()}
    peak = {k: summary([r["peak_mb_above_data"] for r in v]) for k, v in runs.items()}
    return {"ours": runs["ours"][-1], "faiss_same": runs["faiss_same"][-1], "faiss_default": default,
            "seconds": sec, "peak_mb_above_data": peak,
            "time_ratio_vs_faiss_same": sec["ours"]["median"] / sec["faiss_same"]["median"],
            "time_ratio_vs_faiss_default": (sec["ours"]["median"] / default["seconds"]) if default else None,
            "peak_rss_ratio_vs_faiss_same": runs["ours"][-1]["peak_rss_mb"] / runs["faiss_same"][-1]["peak_rss_mb"],
            "mse_ratio_vs_faiss_same": runs["ours"][-1]["mse"] / runs["faiss_same"][-1]["mse"]}


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
    ap.add_argument("--redo", type=int, default=5, help="k-means restarts per level (sid.kmeans_redo's default)")
    ap.add_argument("--repeats", type=int, default=3, help="alternating repeats of ours vs faiss (same sample)")
    ap.add_argument("--skip-default", action="store_true", help="skip faiss as called by default (all rows)")
    ap.add_argument("--child")
    ap.add_argument("--data")
    ap.add_argument("--child-out")
    args = ap.parse_args()
    if args.child:
        child(args.child, args.data, args.levels, args.k, args.iters, args.redo, args.child_out)
        return

    import torch

    from rl_align.data.synthetic import synthetic_embeddings
    from rl_align.sid import SidCatalog, SidCodes
    from rl_align.sid.collisions import append_level

    res: dict = {"items": args.items, "dim": args.dim, "levels": args.levels, "k": args.k, "iters": args.iters,
                 "redo": args.redo, "threads": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        x, _ = synthetic_embeddings(args.items, args.dim, n_clusters=1000, noise=0.6, seed=0)
        path = os.path.join(tmp, "x.npy")
        np.save(path, x)
        del x
        res["generate_seconds"] = time.perf_counter() - t
        res["rq"] = rq_section(path, args, tmp)
        codes = np.load(os.path.join(tmp, "ours.json.codes.npy"))

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
    write_md(res, Path(args.out).with_suffix(".md"))
    print(Path(args.out).with_suffix(".md").read_text())


def write_md(res: dict, path: Path) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from common import fmt_range

    r, tr = res["rq"], res["trie"]
    d = r["faiss_default"]
    md = [f"# Semantic IDs at scale: {res['items']:,} × {res['dim']}, {res['levels']} × {res['k']} codes, "
          f"{res['iters']} k-means iterations × {res['redo']} restarts ({r['seconds']['ours']['n']} alternating "
          "repeats; median (range))", "",
          "| | fit+encode s | peak RSS above data, MB | reconstruction MSE | time ratio |", "|---|---:|---:|---:|---:|",
          f"| rl-align RQ-KMeans ({min(res['items'], res['k'] * 256):,}-row sample, chunked encode) | {fmt_range(r['seconds']['ours'])} | "
          f"{fmt_range(r['peak_mb_above_data']['ours'], '.0f')} | {r['ours']['mse']:.4f} | 1.00× |",
          f"| faiss `ResidualQuantizer`, same sample, `nredo` {res['redo']}, chunked `compute_codes` | "
          f"{fmt_range(r['seconds']['faiss_same'])} | {fmt_range(r['peak_mb_above_data']['faiss_same'], '.0f')} | "
          f"{r['faiss_same']['mse']:.4f} | ours **{r['time_ratio_vs_faiss_same']:.2f}×** |"]
    if d:
        md.append(f"| faiss `ResidualQuantizer` as called by default (`train` on all rows, 1 run per level) | "
                  f"{d['seconds']:.1f} | {d['peak_mb_above_data']:.0f} | {d['mse']:.4f} | "
                  f"ours {r['time_ratio_vs_faiss_default']:.2f}× |")
    md += ["", f"Trie over the codes: build {tr['trie_build_seconds']:.2f} s, {tr['bytes_per_item']:.1f} bytes/item; "
           f"allowed-next for {tr['prefixes']:,} prefixes {tr['walk_plus_mask_ms']:.2f} ms "
           f"({tr['prefixes_per_s_walk_plus_mask']:,.0f} prefixes/s) vs a dict-of-dicts trie "
           f"{tr['python_dict_allowed_ms']:.1f} ms: **{tr['speedup_vs_python_dict']:.1f}×**."]
    path.write_text("\n".join(md) + "\n")

if __name__ == "__main__":
    main()
