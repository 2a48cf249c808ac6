#!/usr/bin/env python
"""Every cold route's log-prob for every prompt (``eval.cold_routes: all``): tree attention against teacher forcing.

The cold-start mixture needs log π(route | prompt) for each of R routes (the SID parents, or the bucket codes, that
hold new items) and each evaluation prompt. Three ways, same model, prompts, routes, threads and precision (fp32):
- **hf**: what a Hugging Face user writes: each (prompt + route) sequence teacher-forced in one causal forward,
  R sequences a prompt, in chunks;
- **grouped**: the prompt encoded once and its KV cache repeated R times, the R routes on top
  (:func:`rl_align.policy.logprobs.sequence_logprobs`; rl-align's own path until 2026-12-07);
- **tree**: the routes' distinct prefixes fed once on top of the prompt's cache, each attending to the prompt and its
  ancestors under a custom 4D mask (:func:`rl_align.policy.tree_logprobs.tree_logprobs`).
All three must agree (max |Δ| is reported); prompts/s is the median and range of ``--repeats`` alternating repeats.

Usage: python benchmarks/bench_cold_routes.py RUN_DIR [RUN_DIR ...] [--prompts 64] [--threads 2] [--repeats 3]
(RUN_DIR: a run with sids/catalog and sft/best_policy; trained with the cold-start protocol, its routes are the
cold mixture's; without it (``make run``), every SID parent of the catalog, or every bucket code.)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def hf_logprobs(model, catalog, history: np.ndarray, users: np.ndarray, routes: np.ndarray,
                max_sequences: int = 2048) -> np.ndarray:
    """(N, R) log π(route | prompt): each prompt + route sequence in one plain causal forward, no cache."""
    from rl_align.policy.data import build_prompts
    from rl_align.policy.logprobs import continuation_logprobs

    ids, mask = build_prompts(history, catalog, users)
    N, R = ids.shape[0], routes.shape[0]
    out = np.empty((N, R))
    rows = max(1, max_sequences // R)
    cont = torch.from_numpy(routes)
    with torch.no_grad():
        for s in range(0, N, rows):
            b = min(rows, N - s)
            lp, m = continuation_logprobs(model, ids[s: s + b].repeat_interleave(R, 0),
                                          mask[s: s + b].repeat_interleave(R, 0), cont.repeat(b, 1))
            out[s: s + b] = (lp * m).sum(1).double().reshape(b, R).numpy()
    return out


def bench_run(run: Path, n_prompts: int, repeats: int) -> dict:
    from common import alternate, fmt_range, rate_summary

    from rl_align.config import EvalConfig, RunConfig, load_config
    from rl_align.data.split import train_popularity
    from rl_align.eval.cold_expand import ColdIndex, ColdRoutes, cold_route_items
    from rl_align.eval.evaluate import eval_set
    from rl_align.policy.logprobs import sequence_logprobs
    from rl_align.policy.model import load_policy
    from rl_align.policy.tree_logprobs import tree_logprobs
    from rl_align.sid.catalog import SidCatalog
    from rl_align.utils.io import load_npz

    catalog = SidCatalog.load(run / "sids" / "catalog")
    split = load_npz(run / "data" / "split.npz")
    pop = train_popularity(split, catalog.n_items)
    routes = ColdRoutes.build(catalog, ColdIndex.build(catalog, cold_route_items(catalog, pop,
                                                                                 EvalConfig().bucket_cold_parents)))
    what = "routes to new items"
    if routes.n == 0:      # a run without the cold-start protocol (``make run``): every SID parent, or every code
        what = "every code (no new items)" if catalog.has_buckets else "every SID parent (no new items)"
        routes = (ColdRoutes(catalog.tokens[catalog.buckets.members[catalog.buckets.offsets[:-1]]].astype(np.int64))
                  if catalog.has_buckets else ColdRoutes.build(catalog, ColdIndex.build(catalog,
                                                                                      np.arange(catalog.n_items))))
    model = load_policy(run / "sft" / "best_policy", catalog).eval()
    es = eval_set(split, "valid", limit=n_prompts)
    h, u = es.history, es.users
    conts = np.broadcast_to(routes.tokens, (h.shape[0],) + routes.tokens.shape)
    sides = {"hf": lambda: hf_logprobs(model, catalog, h, u, routes.tokens),
             "grouped": lambda: sequence_logprobs(model, catalog, h, u, conts, max(1, 4096 // routes.n)),
             "tree": lambda: tree_logprobs(model, catalog, h, u, routes.tree)}
    values = {k: f() for k, f in sides.items()}                       # warm-up, and the agreement check

    def timed(f):
        def go() -> float:
            t = time.perf_counter()
            f()
            return time.perf_counter() - t
        return go

    secs = alternate({k: timed(f) for k, f in sides.items()}, repeats)
    rates = {k: rate_summary(v, h.shape[0]) for k, v in secs.items()}
    res = {"run": str(run), "catalog": "buckets" if catalog.has_buckets else "unique codes", "routes": routes.n,
           "routes_are": what, "dataset": load_config(run / "config.yaml", RunConfig).data.dataset,
           "route_tokens": int(routes.tokens.shape[1]), "tree_nodes": int(routes.tree.token.size),
           "tree_fed": int(routes.tree.feed.size), "prompts": int(h.shape[0]),
           "max_abs_diff": {k: float(np.abs(values[k] - values["tree"]).max()) for k in ("hf", "grouped")},
           "prompts_per_s": rates,
           "ratio": {k: rates["tree"]["median"] / rates[k]["median"] for k in ("hf", "grouped")}}
    print(f"{run}: {routes.n} routes ({what}), tree {res['tree_nodes']} nodes ({res['tree_fed']} fed); prompts/s "
          + ", ".join(f"{k} {fmt_range(r)}" for k, r in rates.items())
          + f"; tree ×{res['ratio']['hf']:.1f} hf, ×{res['ratio']['grouped']:.1f} grouped; max |Δ| "
          + f"{max(res['max_abs_diff'].values()):.1e}")
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "cold_routes"))
    a = ap.parse_args()
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from common import fmt_range, machine

    torch.set_num_threads(a.threads)
    rows = [bench_run(Path(r), a.prompts, a.repeats) for r in a.runs]
    Path(a.out + ".json").write_text(json.dumps({"machine": machine(), "threads": a.threads, "runs": rows},
                                                indent=2))
    md = ["| run | catalog | routes | tree nodes (fed) | prompts/s: hf | grouped | tree | tree × hf | tree × grouped "
          "| max abs Δ |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        p = r["prompts_per_s"]
        md.append(f"| {Path(r['run']).name} | {r['catalog']} | {r['routes']} | {r['tree_nodes']} ({r['tree_fed']}) "
                  f"| {fmt_range(p['hf'])} | {fmt_range(p['grouped'])} | {fmt_range(p['tree'])} "
                  f"| {r['ratio']['hf']:.1f}× | {r['ratio']['grouped']:.1f}× "
                  f"| {max(r['max_abs_diff'].values()):.1e} |")
    Path(a.out + ".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
