"""DPO training throughput: rl-align's learner (Ray + DeepSpeed, a prompt's candidates packed on one prompt encoding)
vs TRL's ``DPOTrainer`` on the same policy, the same pairs and the same CPU threads.

Pairs: the run's preference table (``rl-align dpo build-pairs``) with y* as the only positive and 3 negatives per
prompt, i.e. 3 (chosen, rejected) pairs per prompt. TRL gets them as 3 rows of (prompt, chosen, rejected) text over
the policy's own word-level SID tokenizer (asserted to give the same token ids), sigmoid DPO loss with β = 0.1, a
reference model forward every step (``precompute_ref_log_probs=False``, as ours), ``gradient_checkpointing=False``
(TRL's default is True; we do not checkpoint), dropout off on both sides, fp32, one optimizer step per B prompts.
Repeats alternate the sides; each repeat reports the median seconds per step after the first (warm-up) step.

    .venv/bin/python benchmarks/bench_dpo_trl.py --run-dir runs/i19-s0 [--prompts 32] [--steps 6] [--repeats 3]

Writes benchmarks/results/dpo_trl.{json,md}: pairs/s of TRL, ours packed and ours unpacked (``rl.shared_prefix=
false``: each candidate re-encodes its prompt, as TRL does), medians and ranges over repeats, and the ratios.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
NEG = 3


def run_ours(run: Path, B: int, steps: int, packed: bool) -> float:
    """Median seconds per step (after the first) of ``dpo`` on the Ray learner group, 2 threads."""
    from rl_align.config import RunConfig, load_config
    from rl_align.driver.controller import run_fresh

    cfg = load_config(run / "config.yaml", RunConfig, overrides=[
        "rl.algo=dpo", f"rl.prompts_per_step={B}", f"rl.micro_batch_prompts={B}", f"rl.steps={steps}",
        f"rl.tag=bench-dpo-{int(packed)}", f"rl.eval_every={10 ** 6}", f"rl.checkpoint_every={10 ** 6}",
        "rl.eval_users=16", "rl.cpus_per_learner=2", "rl.lr=0.00005", f"rl.shared_prefix={str(packed).lower()}",
        "rl.preference.positives_window=1", f"rl.preference.negatives={NEG}", "rl.preference.beta=0.1",
        "rl.preference.sft_weight=0", "rl.recent_prompts=3", "wandb=false"])
    out = run_fresh(cfg, run)
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return statistics.median([r["step_s"] for r in recs if "step_s" in r][1:])


def trl_dataset(run: Path, B: int, steps: int):
    """(prompt, chosen, rejected) text rows for the first B·steps prompts of the table, and our token ids of them."""
    from datasets import Dataset

    from rl_align.config import RunConfig, load_config
    from rl_align.driver.controller import prompt_order
    from rl_align.policy.data import build_prompts
    from rl_align.preferences import read_table
    from rl_align.sid.catalog import PAD, SidCatalog
    from rl_align.utils.io import load_npz

    cfg = load_config(run / "config.yaml", RunConfig)
    catalog = SidCatalog.load(run / "sids" / "catalog")
    split = load_npz(run / "data" / "split.npz")
    table, _ = read_table(run / "preferences")
    names = catalog.layout.token_names()
    idx = np.concatenate([prompt_order(table.rows.size, cfg.rl.seed, s, B) for s in range(steps)])
    ids, _ = build_prompts(split["train_history"][table.rows[idx]], catalog, split["train_users"][table.rows[idx]])
    text = lambda toks: " ".join(names[t] for t in toks if t != PAD)  # noqa: E731
    rows = {"prompt": [], "chosen": [], "rejected": []}
    for i, k in enumerate(idx):
        chosen = text(catalog.tokens[table.positives[k, 0]])
        for n in table.negatives[k][:NEG]:
            rows["prompt"].append(text(ids[i].tolist()))
            rows["chosen"].append(chosen)
            rows["rejected"].append(text(catalog.tokens[n]))
    return Dataset.from_dict(rows), catalog


def run_trl(run: Path, B: int, steps: int) -> float:
    from bench_rl_trl import step_timer
    from transformers import AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from rl_align.policy.model import load_policy

    ds, catalog = trl_dataset(run, B, steps)
    policy_dir = run / "sft" / "best_policy"
    tok = AutoTokenizer.from_pretrained(str(policy_dir), local_files_only=True)
    assert tok(ds[0]["chosen"], add_special_tokens=False)["input_ids"] == [
        int(t) for t in tok.convert_tokens_to_ids(ds[0]["chosen"].split())], "TRL sees other token ids than ours"
    out = Path(tempfile.mkdtemp(prefix="trl-dpo-"))
    args = DPOConfig(output_dir=str(out), use_cpu=True, per_device_train_batch_size=B * NEG,
                     gradient_accumulation_steps=1, max_steps=steps, learning_rate=5e-5, beta=0.1,
                     loss_type=["sigmoid"], gradient_checkpointing=False, precompute_ref_log_probs=False,
                     report_to=[], save_strategy="no", logging_steps=1, seed=0, bf16=False,
                     dataloader_num_workers=0, disable_dropout=True)
    trainer = DPOTrainer(model=load_policy(policy_dir, catalog).train(), args=args, train_dataset=ds,
                         processing_class=tok)
    times = step_timer(trainer)
    trainer.train()
    shutil.rmtree(out, ignore_errors=True)
    return statistics.median(times[1:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run-dir", required=True, help="a run with sft/best_policy and exposure logs (runs/i19-s0)")
    ap.add_argument("--prompts", type=int, default=32, help="prompts per step B (3 pairs each)")
    ap.add_argument("--steps", type=int, default=6, help="steps per side and repeat (the first is warm-up)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "dpo_trl"))
    a = ap.parse_args()
    torch.set_num_threads(2)
    work = Path(tempfile.mkdtemp(prefix="dpo-bench-")) / "run"
    shutil.copytree(a.run_dir, work, ignore=shutil.ignore_patterns("rl", "ray_train", "wandb"))
    from rl_align.config import RunConfig, load_config
    from rl_align.preferences import load_or_build
    from rl_align.ray_utils import init_ray

    init_ray()
    load_or_build(load_config(work / "config.yaml", RunConfig, overrides=[
        "rl.preference.positives_window=1", f"rl.preference.negatives={NEG}", "rl.recent_prompts=3"]), work)
    sides = {"trl": lambda: run_trl(work, a.prompts, a.steps),
             "ours_packed": lambda: run_ours(work, a.prompts, a.steps, True),
             "ours_unpacked": lambda: run_ours(work, a.prompts, a.steps, False)}
    secs: dict[str, list[float]] = {k: [] for k in sides}
    for rep in range(a.repeats):
        order = list(sides) if rep % 2 == 0 else list(sides)[::-1]      # alternate which side runs first
        for k in order:
            secs[k].append(sides[k]())
            print(f"repeat {rep}: {k} {secs[k][-1]:.3f} s/step", flush=True)
    pairs = a.prompts * NEG
    res = {"run": a.run_dir, "prompts_per_step": a.prompts, "pairs_per_step": pairs, "steps": a.steps,
           "repeats": a.repeats, "threads": 2, "seconds_per_step": secs}
    for k, v in secs.items():
        res[k] = {"median_pairs_per_s": pairs / statistics.median(v), "min": pairs / max(v), "max": pairs / min(v)}
    res["ratio_packed_vs_trl"] = res["ours_packed"]["median_pairs_per_s"] / res["trl"]["median_pairs_per_s"]
    res["ratio_unpacked_vs_trl"] = res["ours_unpacked"]["median_pairs_per_s"] / res["trl"]["median_pairs_per_s"]
    res["ratio_packed_vs_unpacked"] = (res["ours_packed"]["median_pairs_per_s"]
                                       / res["ours_unpacked"]["median_pairs_per_s"])
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=2))
    md = [f"# DPO throughput vs TRL DPOTrainer ({a.prompts} prompts × {NEG} pairs per step, 2 CPU threads, "
          f"{a.repeats} alternating repeats)", "", "| | pairs/s median (range) | ratio vs TRL |", "|---|---:|---:|"]
    for k, label in (("trl", "TRL DPOTrainer (sigmoid, ref forward, no grad. checkpointing)"),
                     ("ours_packed", "rl-align dpo, packed (shared prompt KV)"),
                     ("ours_unpacked", "rl-align dpo, unpacked")):
        r = res[k]
        md.append(f"| {label} | {r['median_pairs_per_s']:.1f} ({r['min']:.1f}–{r['max']:.1f}) | "
                  f"{r['median_pairs_per_s'] / res['trl']['median_pairs_per_s']:.2f}× |")
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    shutil.rmtree(work.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
