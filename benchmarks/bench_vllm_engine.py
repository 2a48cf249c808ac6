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
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "vllm_engine.json"))
    args = ap.parse_args()

    from rl_align.eval.evaluate import eval_set
    from rl_align.policy.data import build_prompts
    from rl_align.policy.model import load_policy
    from rl_align.rollouts import GenerationRequest, build_engine
    from rl_align.sid.catalog import SidCatalog
    from rl_align.utils.io import load_npz

    run = Path(args.run_dir)
    cat = SidCatalog.load(run / "sids" / "catalog")
    es = eval_set(load_npz(run / "data" / "split.npz"), "test", args.prompts)
    ids, mask = build_prompts(es.history, cat)
    policy = run / "sft" / "best_policy"
    t = time.perf_counter()
    v = build_engine("vllm", policy_dir=policy, catalog=cat)
    startup = time.perf_counter() - t
    te = build_engine("torch", model=load_policy(policy, cat), catalog=cat)
    torch.set_num_threads(1)  # vLLM keeps one of the two cores for itself; give torch the other one
    res = {"prompts": args.prompts, "n": args.n, "vllm_startup_s": startup}
    for name, eng in (("vllm", v), ("torch", te)):
        eng.generate(GenerationRequest(ids[:8], mask[:8], n=2, mode="sample"))  # warm-up
        t = time.perf_counter()
        out = eng.generate(GenerationRequest(ids, mask, n=args.n, mode="sample"))
        s = time.perf_counter() - t
        res[f"{name}_sample_seq_per_s"] = args.prompts * args.n / s
        res[f"{name}_sample_valid"] = float(out.valid.float().mean())
        b_ids, b_mask = ids[: args.beam_prompts], mask[: args.beam_prompts]
        t = time.perf_counter()
        bo = eng.generate(GenerationRequest(b_ids, b_mask, n=args.beams, mode="beam"))
        res[f"{name}_beam_prompts_per_s"] = args.beam_prompts / (time.perf_counter() - t)
        res[f"{name}_beam_valid"] = float(bo.valid.float().mean())
        res[f"{name}_beam_top1"] = bo.items[:, 0].tolist()
    res["beam_top1_agreement"] = sum(a == b for a, b in zip(res.pop("vllm_beam_top1"), res.pop("torch_beam_top1"))) \
        / args.beam_prompts
    res["sample_ratio_vllm_over_torch"] = res["vllm_sample_seq_per_s"] / res["torch_sample_seq_per_s"]
    res["beam_ratio_vllm_over_torch"] = res["vllm_beam_prompts_per_s"] / res["torch_beam_prompts_per_s"]
    Path(args.out).write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
