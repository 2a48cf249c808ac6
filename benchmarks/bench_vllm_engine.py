#!/usr/bin/env python
"""vLLM engine vs torch engine on the same policy and prompts (run in the vLLM venv).

Constrained sampling (n per prompt) and constrained beam search; throughput,
SID validity, and for beams the agreement of the top-1 item.

Usage: .venv-vllm/bin/python benchmarks/bench_vllm_engine.py RUN_DIR [--prompts 256] [--n 16] [--beams 10]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir")
    ap.add_argument("--prompts", type=int, default=256)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--beams", type=int, default=10)
    ap.add_argument("--beam-prompts", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3, help="alternating repeats; medians and ranges reported")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "vllm_engine.json"))
    args = ap.parse_args()

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from common import alternate, summary

    from rl_align.eval.evaluate import eval_set
    from rl_align.policy.data import build_prompts
    from rl_align.policy.model import load_policy
    from rl_align.rollouts import GenerationRequest, build_engine
    from rl_align.sid.catalog import SidCatalog
    from rl_align.utils.io import load_npz

    run = Path(args.run_dir)
    cat = SidCatalog.load(run / "sids" / "catalog")
    es = eval_set(load_npz(run / "data" / "split.npz"), "test", args.prompts)
    ids, mask = build_prompts(es.history, cat, es.users)
    policy = run / "sft" / "best_policy"
    t = time.perf_counter()
    v = build_engine("vllm", policy_dir=policy, catalog=cat)
    startup = time.perf_counter() - t
    te = build_engine("torch", model=load_policy(policy, cat), catalog=cat)
    torch.set_num_threads(1)  # vLLM keeps one of the two cores for itself; give torch the other one
    res = {"prompts": args.prompts, "n": args.n, "vllm_startup_s": startup, "repeats": args.repeats}
    engines = {"vllm": v, "torch": te}
    b_ids, b_mask = ids[: args.beam_prompts], mask[: args.beam_prompts]
    top1 = {}

    def sample(name):
        def go() -> float:
            t = time.perf_counter()
            out = engines[name].generate(GenerationRequest(ids, mask, n=args.n, mode="sample"))
            s = time.perf_counter() - t
            res[f"{name}_sample_valid"] = float(out.valid.float().mean())
            return args.prompts * args.n / s
        return go

    def beam(name):
        def go() -> float:
            t = time.perf_counter()
            bo = engines[name].generate(GenerationRequest(b_ids, b_mask, n=args.beams, mode="beam"))
            s = time.perf_counter() - t
            res[f"{name}_beam_valid"] = float(bo.valid.float().mean())
            top1[name] = bo.items[:, 0].tolist()
            return args.beam_prompts / s
        return go

    for eng in engines.values():
        eng.generate(GenerationRequest(ids[:8], mask[:8], n=2, mode="sample"))  # warm-up
    rates = alternate({"vllm_sample": sample("vllm"), "torch_sample": sample("torch"),
                       "vllm_beam": beam("vllm"), "torch_beam": beam("torch")}, args.repeats)
    for k, v_ in rates.items():
        name, mode = k.split("_")
        unit = "seq_per_s" if mode == "sample" else "prompts_per_s"
        res[f"{name}_{mode}_{unit}"] = summary(v_)["median"]
        res[f"{name}_{mode}_{unit}_range"] = [min(v_), max(v_)]
    res["beam_top1_agreement"] = sum(a == b for a, b in zip(top1["vllm"], top1["torch"])) / args.beam_prompts
    res["sample_ratio_vllm_over_torch"] = res["vllm_sample_seq_per_s"] / res["torch_sample_seq_per_s"]
    res["beam_ratio_vllm_over_torch"] = res["vllm_beam_prompts_per_s"] / res["torch_beam_prompts_per_s"]
    Path(args.out).write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
