"""RL step throughput: rl-align (Ray rollout worker + reward actor + DeepSpeed learner) vs TRL's ``GRPOTrainer``.

Both start from the same SFT policy of a run directory and take the same prompts: the run's prompt pool
(``rl.recent_prompts``, each user's latest training events) in the controller's seeded order, the same group size
G and prompts per step B, the same reward (the run's ranker, rank-normalised within the group) and trie-constrained
sampling at temperature 1 with β = 0, one optimizer step per batch of B·G samples (no gradient accumulation on
either side). TRL is set up at its best for this job: ``gradient_checkpointing=False`` (its default is True, ~20%
slower; we do not checkpoint), fp32 as ours, 2 torch threads; a word-level tokenizer over the SID vocabulary, the
reward as a Python function, the trie as a logits processor wrapped around ``model.generate``
(``generation_kwargs`` cannot carry one), everything in one process on CPU. Every TRL completion is checked to be a
catalog item (if the patched ``generate`` stopped applying, the run fails). Our three phases (rollout, reward,
learn) run one after another, each with 2 torch threads (Ray is started with 6 logical CPUs so that each actor can
hold 2): the same 2 threads at any moment as TRL.

Repeats alternate the sides (TRL, ours grpo, ours adagrpo, ours grpo without the shared prompt cache); each repeat
gives the median seconds per step after the first (warm-up) step; the report has median and range over repeats and
the ratio of medians, for each policy size in ``--sizes`` (``preset``: the run's policy; ``30m``: a ~30M-parameter
Llama, freshly initialised over the same catalog, with ``--prompts-30m`` prompts per step).

    .venv/bin/python benchmarks/bench_rl_trl.py [--run-dir runs/<a finished make run>] [--steps 6] [--repeats 3]

Writes benchmarks/results/rl_trl.{json,md}.
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
THREADS = 2


def find_run(root: Path) -> Path:
    runs = sorted((p for p in root.glob("*") if (p / "ranker" / "model").exists() and (p / "sft" / "best_policy").exists()),
                  key=lambda p: p.stat().st_mtime)
    if not runs:
        raise SystemExit(f"no finished run with sft/best_policy and ranker/model under {root}: run `make run` first "
                         "or pass --run-dir")
    return runs[-1]


def run_ours(run: Path, algo: str, B: int, G: int, steps: int, extra: tuple = ()) -> dict:
    """Median phase seconds per step (after the first) of ``algo`` on the Ray controller."""
    from rl_align.config import RunConfig, load_config
    from rl_align.driver.controller import run_fresh

    cfg = load_config(run / "config.yaml", RunConfig, overrides=[
        f"rl.algo={algo}", f"rl.group_size={G}", f"rl.prompts_per_step={B}", f"rl.steps={steps}",
        f"rl.tag=bench-{algo}", f"rl.eval_every={10 ** 6}", f"rl.checkpoint_every={10 ** 6}", "rl.eval_users=64",
        "rl.temperature=1.0", "rl.constrained=true", "rl.rollout_mode=sample", "rl.beta=0.0",
        f"rl.micro_batch_prompts={B}", "reward.functions={ranker: 1.0}", "wandb=false",
        f"rl.cpus_per_learner={THREADS}", f"rl.cpus_per_rollout_worker={THREADS}",
        f"reward.cpus_per_replica={THREADS}", "reward.replicas=1", *extra])
    out = run_fresh(cfg, run)
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    recs = [r for r in recs if "step_s" in r][1:]
    shutil.rmtree(out, ignore_errors=True)
    return {k: statistics.median(r[k] for r in recs) for k in ("step_s", "rollout_s", "reward_s", "learn_s", "sync_s")}


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
    """Median seconds per step (after the first) of TRL's GRPOTrainer on the same prompts, reward and trie."""
    from bench_decoder import dict_trie
    from datasets import Dataset
    from transformers import AutoTokenizer, LogitsProcessorList
    from trl import GRPOConfig, GRPOTrainer

    from rl_align.config import RewardConfig, RunConfig, load_config
    from rl_align.data.prompts import recent_examples
    from rl_align.driver.controller import prompt_order
    from rl_align.policy.data import build_prompts
    from rl_align.policy.model import load_policy
    from rl_align.rewards.actor import RewardScorer
    from rl_align.sid.catalog import PAD, SidCatalog
    from rl_align.utils.io import load_npz

    torch.set_num_threads(THREADS)
    rl = load_config(run / "config.yaml", RunConfig).rl
    catalog = SidCatalog.load(run / "sids" / "catalog")
    split = load_npz(run / "data" / "split.npz")
    policy_dir = run / "sft" / "best_policy"
    model = load_policy(policy_dir, catalog).train()
    tok = AutoTokenizer.from_pretrained(str(policy_dir), local_files_only=True)
    names = catalog.layout.token_names()
    pool = recent_examples(split["train_users"], split["train_positions"], rl.recent_prompts)  # as the controller
    rows = np.concatenate([pool[prompt_order(pool.size, rl.seed, s, B)] for s in range(steps)])
    ids, _ = build_prompts(split["train_history"][rows], catalog, split["train_users"][rows])
    texts = [" ".join(names[t] for t in r if t != PAD) for r in ids.tolist()]
    ds = Dataset.from_dict({"prompt": texts, "row": rows.tolist()})
    scorer = RewardScorer(run / "ranker" / "model", RewardConfig(functions={"ranker": 1.0}))
    seen = {"completions": 0, "invalid": 0}

    def ranker_reward(prompts, completions, completion_ids, row, **_):
        items = catalog.decode(np.array([(c + [PAD] * catalog.max_sid_len)[: catalog.max_sid_len]
                                         for c in completion_ids]))
        seen["completions"] += items.size
        seen["invalid"] += int((items < 0).sum())
        r = np.asarray(row).reshape(-1, G)[:, 0]
        out = scorer.score(split["train_users"][r], split["train_history"][r], items.reshape(-1, G),
                           split["train_targets"][r])
        return out["rewards"].reshape(-1).tolist()

    out = Path(tempfile.mkdtemp(prefix="trl-bench-"))
    args = GRPOConfig(output_dir=str(out), use_cpu=True, per_device_train_batch_size=B * G,
                      gradient_accumulation_steps=1, num_generations=G, max_completion_length=catalog.max_sid_len,
                      temperature=1.0, beta=0.0, learning_rate=lr, max_steps=steps, logging_steps=1, report_to=[],
                      save_strategy="no", shuffle_dataset=False, seed=seed, bf16=False, dataloader_num_workers=0,
                      gradient_checkpointing=False)
    trainer = GRPOTrainer(model=model, reward_funcs=ranker_reward, args=args, train_dataset=ds, processing_class=tok)
    trainer.model.generate = functools.partial(
        trainer.model.generate, logits_processor=LogitsProcessorList([TrieLogits(dict_trie(catalog), catalog.vocab_size)]))
    times = step_timer(trainer)
    trainer.train()
    shutil.rmtree(out, ignore_errors=True)
    assert seen["completions"] >= B * G * steps, f"TRL scored {seen['completions']} completions, expected ≥ {B * G * steps}"
    assert seen["invalid"] == 0, f"{seen['invalid']} of TRL's completions are not catalog items: the trie did not apply"
    return {"step_s": statistics.median(times[1:]), "torch_threads": torch.get_num_threads(),
            "completions_checked": seen["completions"]}


SIDES = (("trl", "TRL GRPOTrainer (in-process, no gradient checkpointing)"), ("grpo", "rl-align grpo (Ray)"),
         ("adagrpo", "rl-align adagrpo (Ray)"), ("grpo_no_shared_prefix", "rl-align grpo, shared_prefix off"))


def bench_size(run: Path, size: str, B: int, a, lr: float, tmp: Path) -> dict:
    from common import alternate, rate_summary, sized_run

    run_s, pol = sized_run(run, tmp / f"run-{size}", size)
    detail: dict[str, list[dict]] = {k: [] for k, _ in SIDES}

    def side(key: str):
        def go() -> float:
            if key == "trl":
                r = run_trl(run_s, B, a.group_size, a.steps, lr, seed=0)
            else:
                algo = "grpo" if key.startswith("grpo") else key
                extra = ("rl.shared_prefix=false",) if key == "grpo_no_shared_prefix" else ()
                r = run_ours(run_s, algo, B, a.group_size, a.steps, (*pol, *extra))
            detail[key].append(r)
            return r["step_s"]
        return go

    secs = alternate({k: side(k) for k, _ in SIDES}, a.repeats, lambda m: print(f"[{size}] {m}", flush=True))
    rate = {k: rate_summary(v, B * a.group_size) for k, v in secs.items()}
    res = {"size": size, "B": B, "seconds_per_step": secs, "samples_per_s": rate, "detail": detail,
           "phases_grpo": {k: statistics.median(d[k] for d in detail["grpo"])
                           for k in ("rollout_s", "reward_s", "learn_s", "sync_s")}}
    from rl_align.policy.model import load_policy
    from rl_align.sid.catalog import SidCatalog

    res["params"] = sum(p.numel() for p in load_policy(run_s / "sft" / "best_policy",
                                                        SidCatalog.load(run / "sids" / "catalog")).parameters())
    for k, _ in SIDES[1:]:
        res[f"ratio_{k}_vs_trl"] = rate[k]["median"] / rate["trl"]["median"]
    return res


def write_md(res: dict, path: Path) -> None:
    from common import fmt_range

    md = [f"# RL step throughput vs TRL GRPOTrainer (G = {res['G']}, CPU, {THREADS} threads each side, "
          f"{res['repeats']} alternating repeats; samples/s median (range))", "",
          "| policy | B | side | s/step (median) | samples/s | ratio vs TRL |", "|---|---:|---|---:|---:|---:|"]
    for s in res["sizes"]:
        for k, label in SIDES:
            r = s["samples_per_s"][k]
            ratio = "1.00×" if k == "trl" else f"**{s[f'ratio_{k}_vs_trl']:.2f}×**"
            md.append(f"| {s['size']} ({s['params'] / 1e6:.1f}M) | {s['B']} | {label} | "
                      f"{statistics.median(s['seconds_per_step'][k]):.2f} | {fmt_range(r, '.0f')} | {ratio} |")
    for s in res["sizes"]:
        p = s["phases_grpo"]
        md.append(f"\n{s['size']}: rl-align grpo phases (median s): rollout {p['rollout_s']:.3f}, reward "
                  f"{p['reward_s']:.3f}, learn {p['learn_s']:.3f}, weight sync {p['sync_s']:.3f}")
    path.write_text("\n".join(md) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run-dir", help="a finished run (default: the newest under runs/ with a ranker)")
    ap.add_argument("--steps", type=int, default=6, help="steps per side and repeat (the first is warm-up)")
    ap.add_argument("--prompts", type=int, default=32, help="prompts per step B (preset policy)")
    ap.add_argument("--prompts-30m", type=int, default=8, help="prompts per step B for the ~30M policy")
    ap.add_argument("--group-size", type=int, default=8, help="rollouts per prompt G")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sizes", nargs="+", default=["preset", "30m"], choices=["preset", "30m"])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "rl_trl"))
    a = ap.parse_args()
    from common import machine

    from rl_align.config import RunConfig, load_config
    from rl_align.ray_utils import init_ray

    run = Path(a.run_dir) if a.run_dir else find_run(ROOT / "runs")
    lr = load_config(run / "config.yaml", RunConfig).rl.lr
    init_ray(num_cpus=3 * THREADS)   # 3 actors × 2 threads, one phase at a time (see the module doc)
    res = {"run": str(run), "G": a.group_size, "steps": a.steps, "lr": lr, "repeats": a.repeats,
           "threads": THREADS, "machine": machine(), "sizes": []}
    tmp = Path(tempfile.mkdtemp(prefix="rl-bench-"))
    try:
        for size in a.sizes:
            res["sizes"].append(bench_size(run, size, a.prompts if size == "preset" else a.prompts_30m, a, lr, tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=2))
    write_md(res, out.with_suffix(".md"))
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
