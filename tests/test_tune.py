"""`rl-align tune`: spec checks before anything runs, and a real Ray Tune sweep of RL trials (ASHA, a placement
group per trial, best config, frontier plot), killed mid-sweep and continued without re-running finished trials."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from rl_align.config import ConfigError, RunConfig
from rl_align.tune import load_spec, search_space, trial_resources

TINY = {
    "name": "tiny-tune", "wandb": False,
    "data": {"dataset": "synthetic", "max_history": 10,
             "synthetic": {"n_items": 300, "n_users": 200, "dim": 16, "n_clusters": 10, "mean_seq_len": 12}},
    "embed": {"source": "dataset"},
    "sid": {"levels": 2, "codebook_size": 16, "collision": "append"},
    "policy": {"hidden_size": 64, "num_layers": 1, "num_heads": 1, "intermediate_size": 128},
    "sft": {"epochs": 1, "batch_size": 64, "eval_users": 30, "num_workers": 1, "cpus_per_worker": 1},
    "eval": {"beams": 10, "free_beams": 5, "ks": [1, 10]},
    "reward": {"functions": {"exact_match": 1.0}, "cpus_per_replica": 0.5},
    "rl": {"algo": "mixture", "group_size": 4, "prompts_per_step": 8, "micro_batch_prompts": 8, "steps": 4,
           "eval_every": 1, "eval_users": None, "checkpoint_every": 1, "cpus_per_learner": 0.8,
           "cpus_per_rollout_worker": 0.4},
}


def _spec(tmp_path, **kw) -> Path:
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    # lr 0.05 wrecks the policy within a step: ASHA has a clear loser to stop at its first rung
    spec = {"config": "tiny.yaml", "space": {"rl.lam": {"grid": [0.25, 1.0]}, "rl.lr": {"grid": [1e-5, 0.05]}},
            "metric": "valid_hr@10", "scheduler": "asha", "grace_period": 1, "reduction_factor": 2,
            "driver_cpus": 0.3, "name": "tiny", **kw}
    p = tmp_path / "spec.yaml"
    p.write_text(yaml.safe_dump(spec))
    return p


@pytest.mark.parametrize("kw, msg", [
    ({"space": {"rl.lam": {"grid": [0.5, -1.0]}}}, "space.rl.lam=-1.0: rl.lam: expected a value ≥ 0"),
    ({"space": {"rl.lamda": {"grid": [0.5]}}}, "rl.lamda: unknown config key"),
    ({"space": {"rl.lam": {"normal": [0, 1]}}}, "space.rl.lam: expected one of"),
    ({"space": {"rl.lam": {"uniform": [0.1]}}}, r"space.rl.lam.uniform: expected \[low, high\]"),
    ({"mode": "maximum"}, "mode: expected max or min"),
    ({"search_alg": "optuna"}, "search_alg: searchers sample the space: use choice instead of grid"),
    ({"space": {"rl.algo": {"choice": ["grpo", "adagrpoo"]}}}, "unknown alignment objective 'adagrpoo'"),
])
def test_bad_spec_fails_before_anything_runs(tmp_path, kw, msg):
    with pytest.raises(ConfigError, match=msg):
        load_spec(_spec(tmp_path, **kw))


def test_a_searcher_that_is_not_installed_fails_before_anything_runs(tmp_path):
    import importlib.util

    from rl_align.tune import run_tune

    if importlib.util.find_spec("optuna") is not None:
        pytest.skip("optuna is installed here")
    spec = _spec(tmp_path, search_alg="optuna", space={"rl.lam": {"choice": [0.5, 1.0]}})
    with pytest.raises(ConfigError, match="search_alg: 'optuna' is not available here"):
        run_tune(spec, tmp_path / "sweep")
    assert not (tmp_path / "sweep").exists()


def test_space_and_trial_resources(tmp_path):
    spec, _ = load_spec(_spec(tmp_path, space={"rl.lam": {"loguniform": [0.1, 1.0]}, "rl.lr": {"choice": [1e-4]}}))
    sp = search_space(spec.space)
    assert set(sp) == {"rl.lam", "rl.lr"} and type(sp["rl.lam"]).__name__ == "Float"
    cfg = RunConfig()
    cfg.rl.learners, cfg.rl.prompts_per_step, cfg.reward.replicas = 2, 32, 2
    pgf = trial_resources(cfg, 0.5)
    # the trial's own bundle, then 2 learners, 1 rollout worker, 2 reward replicas: nothing nested
    assert [b.get("CPU") for b in pgf.bundles] == [0.5, 1.0, 1.0, 1.0, 1.0, 1.0]


def _run(spec: Path, sweep: Path, **popen):
    env = {**os.environ, "WANDB_MODE": "disabled"}
    return subprocess.Popen([sys.executable, "-m", "rl_align", "tune", str(spec), "--sweep-dir", str(sweep)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def _finished(sweep: Path) -> list[Path]:
    return sorted(p.parents[2] for p in sweep.glob("trials/*/rl/*/summary.json"))


@pytest.mark.ray
@pytest.mark.timeout(1500)
def test_tune_sweep_asha_kill_and_continue(tmp_path):
    """Its own Ray (a subprocess per sweep): kill the driver once a trial finished, run again, nothing redone."""
    spec, sweep = _spec(tmp_path), tmp_path / "sweep"
    p = _run(spec, sweep, start_new_session=True)
    deadline = time.time() + 900
    while not _finished(sweep) and time.time() < deadline and p.poll() is None:
        time.sleep(2)
    assert _finished(sweep), p.communicate()[0][-3000:] if p.poll() is not None else "no trial finished in time"
    os.killpg(p.pid, signal.SIGKILL)            # the driver and its Ray go down mid-sweep
    p.wait()
    steps_before = {d.name: _steps(d) for d in _finished(sweep)}
    p2 = _run(spec, sweep)
    out = p2.communicate(timeout=1200)[0]
    assert p2.returncode == 0, out[-3000:]
    res = json.loads((sweep / "trials.json").read_text())
    assert len(res["trials"]) == 4 and all(r["error"] is None for r in res["trials"])
    assert any(r["stopped_early"] for r in res["trials"]), res   # ASHA stopped at least one
    assert res["best"] is not None and (sweep / "best_config.yaml").exists() and (sweep / "frontier.png").exists()
    best = yaml.safe_load((sweep / "best_config.yaml").read_text())
    assert best["rl"]["lam"] == res["best"]["rl.lam"]
    # a trial that had finished is not trained again: the same step records, none redone (if Tune had not yet
    # recorded it as finished when the driver died, it resumes from its final checkpoint with nothing left to do)
    for name, before in steps_before.items():
        assert _steps(sweep / "trials" / name) == before and len(before) == TINY["rl"]["steps"]


def _steps(trial: Path) -> list:
    recs = [json.loads(x) for f in trial.glob("rl/*/metrics.jsonl") for x in f.read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in recs if "loss" in r]
