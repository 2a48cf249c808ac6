"""RL step throughput: rl-align (Ray rollout worker + reward actor + DeepSpeed learner) vs TRL's ``GRPOTrainer``.

Both start from the same SFT policy of a run directory, take the same prompts (training histories), the same
group size G and prompts per step B, the same reward (the run's ranker, rank-normalised within the group) and
trie-constrained sampling at temperature 1 with β = 0, one optimizer step per batch of B·G samples (no gradient
accumulation on either side). TRL is set up the way its users do it for SIDs: a
word-level tokenizer over the SID vocabulary, the reward as a Python function, the trie as a logits processor
wrapped around ``model.generate`` (``generation_kwargs`` cannot carry one), everything in one process on CPU.

    .venv/bin/python benchmarks/bench_rl_trl.py [--run-dir runs/<a finished make run>] [--steps 8]

Writes benchmarks/results/rl_trl.{json,md}: median seconds per step after the first (warm-up) step, samples/s,
our phase breakdown (rollout / reward / learn / sync), and the ratio.
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def find_run(root: Path) -> Path:
    runs = sorted((p for p in root.glob("*") if (p / "ranker" / "model").exists() and (p / "sft" / "best_policy").exists()),
                  key=lambda p: p.stat().st_mtime)
    if not runs:
        raise SystemExit(f"no finished run with sft/best_policy and ranker/model under {root}: run `make run` first "
                         "or pass --run-dir")
    return runs[-1]


def run_ours(run: Path, algo: str, B: int, G: int, steps: int, extra: tuple = ()) -> dict:
    from rl_align.config import RunConfig, load_config
    from rl_align.driver.controller import Controller

    cfg = load_config(run / "config.yaml", RunConfig, overrides=[
        f"rl.algo={algo}", f"rl.group_size={G}", f"rl.prompts_per_step={B}", f"rl.steps={steps}",
        f"rl.tag=bench-{algo}", f"rl.eval_every={10 ** 6}", f"rl.checkpoint_every={10 ** 6}", "rl.eval_users=64",
        "rl.temperature=1.0", "rl.constrained=true", "rl.rollout_mode=sample", "rl.beta=0.0",
        f"rl.micro_batch_prompts={B}", "reward.functions={ranker: 1.0}", "wandb=false", *extra])
    ctl = Controller(cfg, run, resume=False)
    shutil.rmtree(ctl.out, ignore_errors=True)
    ctl.out.mkdir(parents=True)
    try:
        t = time.perf_counter()
        ctl.run_loop()
        wall = time.perf_counter() - t
    finally:
        ctl.shutdown()
    recs = [json.loads(x) for x in (ctl.out / "metrics.jsonl").read_text().splitlines()]
    recs = [r for r in recs if "step_s" in r][1:]
    shutil.rmtree(ctl.out, ignore_errors=True)
    med = {k: statistics.median(r[k] for r in recs) for k in ("step_s", "rollout_s", "reward_s", "learn_s", "sync_s")}
    return {**med, "samples_per_s": B * G / med["step_s"], "steps_per_s": 1.0 / med["step_s"],
            "sync_share": med["sync_s"] / med["step_s"], "wall_s_incl_setup_and_evals": wall}


class TrieLogits:
    """Trie constraint for ``generate`` as a logits processor: tokens outside the catalog's prefix tree get -inf."""

    def __init__(self, trie: dict, vocab: int) -> None:
        self.trie, self.vocab, self.start, self.last = trie, vocab, 0, 10 ** 9

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        L = input_ids.shape[1]
        if L <= self.last:          # a new generate() call: what is there now is the prompt
            self.start = L
        self.last = L
        mask = torch.full_like(scores, float("-inf"))
        for i, row in enumerate(input_ids[:, self.start:].tolist()):
            node = self.trie
            for t in row:
                node = node.get(t, {})
            mask[i, list(node) or [0]] = 0.0
        return scores + mask


def step_timer(trainer) -> list[float]:
    """A list the HF ``trainer`` appends each optimizer step's wall seconds to (a TrainerCallback)."""
    from transformers import TrainerCallback

    times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.t = time.perf_counter()

        def on_step_end(self, *a, **k):
            times.append(time.perf_counter() - self.t)

    trainer.add_callback(Timer())
    return times


def run_trl(run: Path, B: int, G: int, steps: int, lr: float, seed: int) -> dict:
    from bench_decoder import dict_trie
    from datasets import Dataset
    from transformers import AutoTokenizer, LogitsProcessorList
    from trl import GRPOConfig, GRPOTrainer

    from rl_align.config import RewardConfig
    from rl_align.driver.controller import prompt_order
    from rl_align.policy.data import build_prompts
    from rl_align.policy.model import load_policy
    from rl_align.rewards.actor import RewardScorer
    from rl_align.sid.catalog import PAD, SidCatalog
    from rl_align.utils.io import load_npz

    catalog = SidCatalog.load(run / "sids" / "catalog")
    split = load_npz(run / "data" / "split.npz")
    policy_dir = run / "sft" / "best_policy"
    model = load_policy(policy_dir, catalog).train()
    tok = AutoTokenizer.from_pretrained(str(policy_dir), local_files_only=True)
    names = catalog.layout.token_names()
    n = split["train_targets"].shape[0]
    rows = np.concatenate([prompt_order(n, seed, s, B) for s in range(steps)])
    ids, _ = build_prompts(split["train_history"][rows], catalog)
    texts = [" ".join(names[t] for t in r if t != PAD) for r in ids.tolist()]
    ds = Dataset.from_dict({"prompt": texts, "row": rows.tolist()})
    scorer = RewardScorer(run / "ranker" / "model", RewardConfig(functions={"ranker": 1.0}))

    def ranker_reward(prompts, completions, completion_ids, row, **_):
        items = catalog.decode(np.array([(c + [PAD] * catalog.max_sid_len)[: catalog.max_sid_len]
                                         for c in completion_ids]))
        r = np.asarray(row).reshape(-1, G)[:, 0]
        out = scorer.score(split["train_users"][r], split["train_history"][r], items.reshape(-1, G),
                           split["train_targets"][r])
        return out["rewards"].reshape(-1).tolist()

    out = Path(tempfile.mkdtemp(prefix="trl-bench-"))
    args = GRPOConfig(output_dir=str(out), use_cpu=True, per_device_train_batch_size=B * G,
                      gradient_accumulation_steps=1, num_generations=G, max_completion_length=catalog.max_sid_len,
                      temperature=1.0, beta=0.0, learning_rate=lr, max_steps=steps, logging_steps=1, report_to=[],
                      save_strategy="no", shuffle_dataset=False, seed=seed, bf16=False, dataloader_num_workers=0)
    trainer = GRPOTrainer(model=model, reward_funcs=ranker_reward, args=args, train_dataset=ds, processing_class=tok)
    trainer.model.generate = functools.partial(
        trainer.model.generate, logits_processor=LogitsProcessorList([TrieLogits(dict_trie(catalog), catalog.vocab_size)]))
    times = step_timer(trainer)
    t = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - t
    shutil.rmtree(out, ignore_errors=True)
    med = statistics.median(times[1:])
    return {"step_s": med, "samples_per_s": B * G / med, "steps_per_s": 1.0 / med, "wall_s": wall,
            "torch_threads": torch.get_num_threads()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run-dir", help="a finished run (default: the newest under runs/ with a ranker)")
    ap.add_argument("--steps", type=int, default=8, help="steps per framework (the first is warm-up)")
    ap.add_argument("--prompts", type=int, default=32, help="prompts per step B")
    ap.add_argument("--group-size", type=int, default=8, help="rollouts per prompt G")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "rl_trl"))
    a = ap.parse_args()
    run = Path(a.run_dir) if a.run_dir else find_run(ROOT / "runs")
    from rl_align.config import RunConfig, load_config

    lr = load_config(run / "config.yaml", RunConfig).rl.lr
    res = {"run": str(run), "B": a.prompts, "G": a.group_size, "steps": a.steps, "lr": lr}
    print(f"run {run}: B={a.prompts} G={a.group_size}, {a.steps} steps each")
    res["trl_grpo"] = run_trl(run, a.prompts, a.group_size, a.steps, lr, seed=0)
    print("TRL GRPOTrainer:", res["trl_grpo"])
    for algo in ("grpo", "adagrpo"):
        res[f"ours_{algo}"] = run_ours(run, algo, a.prompts, a.group_size, a.steps)
        print(f"rl-align {algo}:", res[f"ours_{algo}"])
    # ablation: the learner without the shared prompt KV cache (every rollout re-encodes its prompt, as TRL does)
    res["ours_grpo_no_shared_prefix"] = run_ours(run, "grpo", a.prompts, a.group_size, a.steps,
                                                 ("rl.shared_prefix=false",))
    print("rl-align grpo, shared_prefix off:", res["ours_grpo_no_shared_prefix"])
    for algo in ("grpo", "adagrpo", "grpo_no_shared_prefix"):
        res[f"ratio_{algo}_vs_trl"] = res[f"ours_{algo}"]["samples_per_s"] / res["trl_grpo"]["samples_per_s"]
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=2))
    o, t = res["ours_grpo"], res["trl_grpo"]
    md = [f"# RL step throughput vs TRL GRPOTrainer (B={a.prompts}, G={a.group_size}, CPU)", "",
          "| | s/step | samples/s | ratio |", "|---|---:|---:|---:|",
          f"| TRL GRPOTrainer (in-process, {t['torch_threads']} threads) | {t['step_s']:.2f} | "
          f"{t['samples_per_s']:.0f} | 1.00× |"]
    for algo, label in (("grpo", "grpo"), ("adagrpo", "adagrpo"), ("grpo_no_shared_prefix", "grpo, shared_prefix off")):
        r = res[f"ours_{algo}"]
        md.append(f"| rl-align {label} (Ray) | {r['step_s']:.2f} | {r['samples_per_s']:.0f} | "
                  f"{res[f'ratio_{algo}_vs_trl']:.2f}× |")
    md += ["", f"rl-align grpo phases (median s): rollout {o['rollout_s']:.3f}, reward {o['reward_s']:.3f}, "
           f"learn {o['learn_s']:.3f}, weight sync {o['sync_s']:.3f} ({100 * o['sync_share']:.1f}% of a step)"]
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
