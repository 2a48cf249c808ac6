"""Extending rl-align: a tokenizer, a rollout engine, an objective and a reward, each one class + one registration
in a plug-in file (examples/plugins/toy_plugins.py), run through the pipeline on a real local Ray."""

import json
from pathlib import Path

import pytest
import yaml

from rl_align.cli import main

pytestmark = pytest.mark.ray
PLUGIN = Path(__file__).resolve().parents[1] / "examples" / "plugins" / "toy_plugins.py"

CFG = {
    "name": "toy", "wandb": False, "plugins": [str(PLUGIN)],
    "data": {"dataset": "synthetic", "max_history": 10,
             "synthetic": {"n_items": 300, "n_users": 200, "dim": 16, "n_clusters": 10, "mean_seq_len": 12}},
    "embed": {"source": "dataset"},
    "sid": {"tokenizer": "toy_sign", "levels": 2, "codebook_size": 16},
    "policy": {"hidden_size": 64, "num_layers": 1, "num_heads": 1, "intermediate_size": 128},
    "sft": {"epochs": 1, "batch_size": 64, "eval_users": 30, "num_workers": 1, "cpus_per_worker": 1},
    "eval": {"beams": 10, "free_beams": 5, "ks": [1, 10]},
    "reward": {"functions": {"toy_valid": 1.0}, "cpus_per_replica": 0.5},
    "rl": {"algo": "toy_anchor", "engine": "toy_tempered", "group_size": 4, "prompts_per_step": 8,
           "micro_batch_prompts": 8, "steps": 2, "cpus_per_learner": 1, "cpus_per_rollout_worker": 0.5,
           "eval_every": 2, "eval_users": 20, "checkpoint_every": 2},
}


def _write(tmp_path, cfg) -> Path:
    p = tmp_path / "toy.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def test_names_are_unknown_without_the_plugin(tmp_path, capsys):
    cfg = {k: v for k, v in CFG.items() if k != "plugins"}
    assert main(["config", str(_write(tmp_path, cfg))]) == 2
    assert "sid.tokenizer: unknown SID tokenizer 'toy_sign'" in capsys.readouterr().err


def test_toy_plugins_run_end_to_end(ray_session, tmp_path):
    run = tmp_path / "run"
    assert main(["rl", str(_write(tmp_path, CFG)), "--run-dir", str(run),
                 "--set", "stages=[data, embed, sids, sft, rl]"]) == 0
    # the tokenizer made the catalog (and is what the saved tokenizer records)
    assert json.loads((run / "sids" / "tokenizer" / "tokenizer.json").read_text())["name"] == "toy_sign"
    # the engine was built by name in a Ray rollout worker (another process)
    assert (run / "sft" / "toy_engine_used").exists()
    recs = [json.loads(x) for x in (run / "rl" / "toy_anchor" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in recs if "loss" in r]
    assert len(steps) == 2
    # the objective ran in the learner ranks, the reward in the reward replicas: every constrained rollout is a
    # valid item, so the toy reward is 1 everywhere and every group has zero advantage
    assert all(r["toy_objective"] == 1.0 and r["reward_mean"] == 1.0 and r["zero_adv_share"] == 1.0 for r in steps)
    assert (run / "rl" / "toy_anchor" / "final_policy").exists()
