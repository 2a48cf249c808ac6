#!/usr/bin/env python
"""CPU ↔ CUDA parity and speed of the pure-torch core that GPU workers run (engines, log-probs, SFT loss).

Users launch rl-align with ``sft.use_gpu``, ``rl.rollout_gpus`` and learner GPUs; the Ray layers only place
these same torch functions on a device. This script runs each of them on ``cpu`` and on ``--device`` (cuda) from
the same weights and inputs, and checks that they agree, then times both:

1. constrained beam search (:class:`TorchEngine`, seen items excluded, B beams): share of users whose top-10
   items are identical, and max |Δ sequence log-prob| over the beams both devices returned;
2. seeded constrained sampling (n per prompt, T = 1; the Gumbel noise is drawn on the CPU per prompt seed):
   share of identical sampled items;
3. teacher-forced log-probs (:func:`continuation_logprobs`, what the learner recomputes) of the CPU engine's
   beams, on the device, against the CPU engine's stored per-token log-probs: max |Δ| (so the learner's first
   importance ratio is 1 across devices);
4. the item head's fused ranking (:func:`hybrid_rankings`) when the policy has a head: identical lists;
5. the SFT loss (:func:`rl_align.sft.loss.sft_loss`, the worker's objective: NLL + the item head's term) on a batch:
   |Δ| before and after one AdamW step on each device.

Speed: beam-search prompts/s and SFT windows/s (fp32 and bf16 autocast on the device) at a small and a large
batch: the preset policies are small, so the large batch is where an accelerator pays.

Usage: python benchmarks/bench_device.py RUN_DIR [--device cuda] [--users 512] [--repeats 3]
(RUN_DIR: a run with data/split.npz, sids/catalog and sft/best_policy.) Writes benchmarks/results/device.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rl_align.eval.evaluate import eval_set, rank_with_engine  # noqa: E402
from rl_align.eval.hybrid import hybrid_rankings  # noqa: E402
from rl_align.policy.data import build_prompts, events_to_items, windows_to_batch  # noqa: E402
from rl_align.policy.item_head import load_item_head, target_items  # noqa: E402
from rl_align.policy.logprobs import continuation_logprobs  # noqa: E402
from rl_align.policy.model import disable_dropout, load_policy  # noqa: E402
from rl_align.rollouts.base import GenerationRequest  # noqa: E402
from rl_align.rollouts.torch_engine import TorchEngine  # noqa: E402
from rl_align.sft.loss import sft_loss  # noqa: E402
from rl_align.sft.schedule import epoch_events  # noqa: E402
from rl_align.sid.catalog import SidCatalog  # noqa: E402
from rl_align.utils.io import load_npz  # noqa: E402


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def _timed(fn, dev: torch.device, repeats: int) -> tuple[float, list[float]]:
    """Median seconds of ``repeats`` calls after one warm-up (and every call's time)."""
    fn()
    times = []
    for _ in range(repeats):
        _sync(dev)
        t = time.perf_counter()
        fn()
        _sync(dev)
        times.append(time.perf_counter() - t)
    return statistics.median(times), times


class Side:
    """The run's policy (and item head) on one device."""

    def __init__(self, run: Path, catalog: SidCatalog, dev: torch.device) -> None:
        self.dev = dev
        pol = run / "sft" / "best_policy"
        self.model = load_policy(pol, catalog, dev)
        self.head = load_item_head(pol, catalog, self.model.config.hidden_size, dev)
        self.engine = TorchEngine(self.model, catalog, dev)


def _beam_checks(cpu: Side, acc: Side, catalog, es, beams: int) -> dict:
    ranked_c, scores_c = rank_with_engine(cpu.engine, catalog, es, beams, True)
    ranked_a, scores_a = rank_with_engine(acc.engine, catalog, es, beams, True)
    same10 = float(np.mean([np.array_equal(a[:10], b[:10]) for a, b in zip(ranked_c, ranked_a)]))
    diffs = []
    for ic, sc, ia, sa in zip(ranked_c, scores_c, ranked_a, scores_a):
        common = {int(i): s for i, s in zip(ic, sc) if i >= 0}
        diffs += [abs(common[int(i)] - s) for i, s in zip(ia, sa) if int(i) in common]
    out = {"beam_top10_identical": same10, "beam_max_abs_dlogp": float(max(diffs)), "beam_pairs": len(diffs)}
    if cpu.head is not None:
        fc, _ = hybrid_rankings(cpu.model, cpu.head, catalog, es, ranked_c, scores_c, 50, [2.0])
        fa, _ = hybrid_rankings(acc.model, acc.head, catalog, es, ranked_a, scores_a, 50, [2.0])
        out["fused_identical"] = float(np.mean([np.array_equal(a[:10], b[:10]) for a, b in zip(fc[2.0], fa[2.0])]))
    return out


def _prompts(catalog, es, n: int):
    ids, mask = build_prompts(es.history[:n], catalog, es.users[:n])
    return ids, mask, torch.from_numpy(es.seen[:n])


def _sample_and_logprob_checks(cpu: Side, acc: Side, catalog, es, n_samples: int) -> dict:
    ids, mask, banned = _prompts(catalog, es, min(256, es.targets.size))
    seeds = torch.arange(ids.shape[0], dtype=torch.int64) + 1234
    req = dict(n=n_samples, mode="sample", constrained=True, temperature=1.0, banned_items=banned, seeds=seeds)
    sc = cpu.engine.generate(GenerationRequest(ids, mask, **req))
    sa = acc.engine.generate(GenerationRequest(ids, mask, **req))
    beam = cpu.engine.generate(GenerationRequest(ids, mask, n=10, mode="beam", constrained=True, banned_items=banned))
    N, B, T = beam.sequences.shape
    rep = torch.arange(N).repeat_interleave(B)
    with torch.no_grad():
        lp, m = continuation_logprobs(acc.model, ids[rep].to(acc.dev), mask[rep].to(acc.dev),
                                      beam.sequences.reshape(N * B, T).to(acc.dev))
    d = (lp.cpu() - beam.token_logprobs.reshape(N * B, T)).abs() * m.cpu()
    return {"sample_items_identical": float((sc.items == sa.items).float().mean()),
            "teacher_forced_vs_engine_max_abs_dlogp": float(d.max()),
            "first_ratio_max_abs_dev": float((torch.exp(d.max()) - 1).abs())}


def _sft_batch(catalog, split, window: int, bs: int, seed: int = 0):
    events, n_target = epoch_events(split, window, seed, 0)
    events, n_target = events[:bs], n_target[:bs]
    items = events_to_items(events, split["seq_items"])
    return windows_to_batch(items, catalog, n_target), target_items(items, n_target)


def _sft_loss(side: Side, catalog, batch: dict, targets, bf16: bool = False) -> torch.Tensor:
    """The SFT worker's objective (:func:`sft_loss`, item-head weight 1) on ``side``'s device."""
    with torch.autocast(side.dev.type, dtype=torch.bfloat16, enabled=bf16):
        return sft_loss(side.model, {k: v.to(side.dev) for k, v in batch.items()}, catalog, side.head, targets)


def _params(side: Side) -> list:
    return list(side.model.parameters()) + (list(side.head.parameters()) if side.head is not None else [])


def _sft_checks(cpu: Side, acc: Side, catalog, split, window: int) -> dict:
    batch, targets = _sft_batch(catalog, split, window, 64)
    out = {}
    for side in (cpu, acc):
        side.model.train()
        torch.manual_seed(0)
        opt = torch.optim.AdamW(_params(side), lr=1e-3)
        side.model.config.use_cache = False
        disable_dropout(side.model)  # the two devices draw different dropout masks (attention's too)
        l0 = _sft_loss(side, catalog, batch, targets)
        opt.zero_grad()
        l0.backward()
        opt.step()
        with torch.no_grad():
            l1 = _sft_loss(side, catalog, batch, targets)
        out[side.dev.type] = (l0.item(), l1.item())
    (c0, c1), (a0, a1) = out["cpu"], out[acc.dev.type]
    return {"sft_loss_cpu": c0, "sft_loss_after_step_cpu": c1, "sft_loss_abs_diff": abs(c0 - a0),
            "sft_loss_after_step_abs_diff": abs(c1 - a1)}


def _sft_speed(side: Side, catalog, split, window: int, bs: int, repeats: int, bf16: bool = False) -> float:
    batch, targets = _sft_batch(catalog, split, window, bs)
    opt = torch.optim.AdamW(_params(side), lr=1e-4)
    side.model.train()

    def step():
        loss = _sft_loss(side, catalog, batch, targets, bf16)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    med, _ = _timed(step, side.dev, repeats)
    return batch["input_ids"].shape[0] / med


def _beam_speed(side: Side, catalog, es, n: int, beams: int, repeats: int) -> float:
    ids, mask, banned = _prompts(catalog, es, n)
    req = GenerationRequest(ids, mask, n=beams, mode="beam", constrained=True, banned_items=banned)
    side.model.eval()
    med, _ = _timed(lambda: side.engine.generate(req), side.dev, repeats)
    return ids.shape[0] / med


CHECKS = {  # figure: (limit, "min" or "max")
    "beam_top10_identical": (0.99, "min"), "beam_max_abs_dlogp": (1e-3, "max"),
    "fused_identical": (0.99, "min"), "sample_items_identical": (0.99, "min"),
    "teacher_forced_vs_engine_max_abs_dlogp": (1e-3, "max"), "sft_loss_abs_diff": (1e-4, "max"),
    "sft_loss_after_step_abs_diff": (1e-3, "max"),
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run_dir")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--users", type=int, default=512)
    ap.add_argument("--beams", type=int, default=20)
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "device"))
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 parity: TF32 would round the device's products
    run = Path(args.run_dir)
    catalog = SidCatalog.load(run / "sids" / "catalog")
    split = load_npz(run / "data" / "split.npz")
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    window = int(cfg["sft"].get("window_items") or cfg["data"]["max_history"] + 1)
    es = eval_set(split, "valid", args.users)
    cpu, acc = Side(run, catalog, torch.device("cpu")), Side(run, catalog, torch.device(args.device))
    res = {"run_dir": str(run), "device": args.device, "users": int(es.targets.size), "beams": args.beams,
           "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
           "torch": torch.__version__, "cpu_threads": torch.get_num_threads(), "item_head": cpu.head is not None}
    res.update(_beam_checks(cpu, acc, catalog, es, args.beams))
    res.update(_sample_and_logprob_checks(cpu, acc, catalog, es, args.samples))
    res.update(_sft_checks(cpu, acc, catalog, split, window))
    res["passed"] = {k: (res[k] >= lim if how == "min" else res[k] <= lim) for k, (lim, how) in CHECKS.items()
                     if k in res}
    speed = {}
    for n in sorted({min(128, es.targets.size), min(1024, es.targets.size)}):
        speed[f"beam_prompts_per_s_n{n}"] = {s.dev.type: _beam_speed(s, catalog, es, n, args.beams, args.repeats)
                                             for s in (cpu, acc)}
    for bs in (64, 1024):
        speed[f"sft_windows_per_s_bs{bs}"] = {
            "cpu": _sft_speed(cpu, catalog, split, window, bs, args.repeats),
            args.device: _sft_speed(acc, catalog, split, window, bs, args.repeats),
            f"{args.device}_bf16": _sft_speed(acc, catalog, split, window, bs, args.repeats, bf16=True)}
    res["speed"] = speed
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=1))
    out.with_suffix(".md").write_text(_table(res))
    print(_table(res))
    return 0 if all(res["passed"].values()) else 1


def _table(res: dict) -> str:
    lines = [f"CPU ({res['cpu_threads']} threads) vs {res['device']} ({res['gpu']}), torch {res['torch']}, "
             f"{res['users']} valid users of `{res['run_dir']}`, item head: {res['item_head']}", "",
             "| parity check | figure | limit | pass |", "|---|---|---|---|"]
    for k, (lim, how) in CHECKS.items():
        if k in res:
            lines.append(f"| {k} | {res[k]:.6g} | {'≥' if how == 'min' else '≤'} {lim:g} | {res['passed'][k]} |")
    lines += ["", "| speed (median of repeats) | per second |", "|---|---|"]
    for k, v in res["speed"].items():
        lines.append(f"| {k} | " + ", ".join(f"{d} {x:,.0f}" for d, x in v.items()) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
