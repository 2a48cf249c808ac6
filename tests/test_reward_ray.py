"""RewardActor pool and ranker training on a real local Ray: equality with in-process scoring, a replica killed
with chunks in flight, and `rl-align ranker train/eval` with resume."""

import json
import os
import signal
import threading
import time

import numpy as np
import pytest
import yaml

from rl_align.config import RankerConfig, RewardConfig

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def ranker_dir(tmp_path_factory):
    import torch

    from rl_align.data.features import build_spec, encode
    from rl_align.ranker.model import DinRanker, save_ranker

    n_items = 500
    genres = [[f"g{i % 7}"] for i in range(n_items)]
    spec = build_spec("genre", genres, "multi")
    torch.manual_seed(0)
    m = DinRanker(n_items, 100, RankerConfig(), [spec], [], {"genre": torch.from_numpy(encode(spec, genres))}, {})
    d = tmp_path_factory.mktemp("rk") / "ranker"
    save_ranker(m, d)
    return d


def _request(B, G=8, H=20, seed=0, n_items=500):
    rng = np.random.default_rng(seed)
    items = rng.integers(0, n_items, (B, G))
    items[rng.random((B, G)) < 0.05] = -1  # some hallucinated SIDs
    hist = rng.integers(-1, n_items, (B, H))
    return rng.integers(0, 100, B), hist, items, rng.integers(0, n_items, B)


def _batch(users, hist, items, targets, future=None):
    from rl_align.algos.batch import StepBatch

    return StepBatch(users=users, history=hist, rollout_items=items, targets=targets, future=future)


def test_pool_matches_in_process_scoring(ray_session, ranker_dir):
    from rl_align.rewards.actor import RewardPool, RewardScorer

    cfg = RewardConfig(functions={"ranker": 1.0, "exact_match": 0.5}, replicas=2, chunk_size=400, max_inflight=2)
    pool = RewardPool(cfg, ranker_dir)
    try:
        req = _request(300)
        out = pool.score(_batch(*req), with_target_scores=True)
        ref = RewardScorer(ranker_dir, cfg).score(*req, with_target_scores=True)
        assert out.info["chunks"] == 6  # 400 pairs / 8 per group = 50 groups per chunk
        np.testing.assert_allclose(out.rewards, ref["rewards"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out.target_scores, ref["target_scores"], rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(out.rollout_items, req[2])          # the batch comes back whole, in order
        assert out.info["n_invalid"] == ref["n_invalid"] == int((req[2] < 0).sum())
        assert np.isfinite(out.rewards).all() and out.info["ranker_version"] == ref["version"]
        assert all(h["ok"] for h in pool.health())
        with pytest.raises(ValueError, match="non-empty"):
            pool.score(_batch(np.zeros(0, int), np.zeros((0, 3), int), np.zeros((0, 4), int), np.zeros(0, int)))
    finally:
        pool.shutdown()


def test_pool_passes_future_events_chunk_by_chunk(ray_session, ranker_dir):
    from rl_align.rewards.actor import RewardPool, RewardScorer

    cfg = RewardConfig(functions={"future_match": 1.0}, replicas=2, chunk_size=80, future_discount=0.5)
    pool = RewardPool(cfg, ranker_dir)
    try:
        users, hist, items, targets = _request(40)
        future = np.stack([targets, items[:, 3], np.full(40, -1)], 1)   # rollout 3 is each user's 2nd next event
        future[items[:, 3] == targets, 1] = -1
        out = pool.score(_batch(users, hist, items, targets, future))
        ref = RewardScorer(ranker_dir, cfg).score(users, hist, items, targets, future=future)
        assert out.info["chunks"] == 4
        np.testing.assert_array_equal(out.rewards, ref["rewards"])
        ok = (items[:, 3] >= 0) & (items[:, 3] != targets)
        assert (out.rewards[ok, 3] == 0.5).all()
    finally:
        pool.shutdown()


def test_pool_scores_sanity_items_in_the_rollouts_chunks(ray_session, ranker_dir):
    """AdaGRPO's sanity items travel chunk by chunk with their groups; a chunk holds chunk_size pairs of both."""
    from rl_align.rewards.actor import RewardPool, RewardScorer

    cfg = RewardConfig(functions={"ranker": 1.0}, replicas=2, chunk_size=240)
    pool = RewardPool(cfg, ranker_dir)
    try:
        users, hist, items, targets = _request(50)
        negs = np.random.default_rng(1).integers(0, 500, (50, 16))
        out = pool.score(_batch(users, hist, items, targets).update(sanity_items=negs))
        ref = RewardScorer(ranker_dir, cfg).score(users, hist, items, targets, True, sanity_items=negs)
        assert out.info["chunks"] == 5   # 240 pairs / (8 rollouts + 16 sanity items) = 10 groups per chunk
        np.testing.assert_allclose(out.sanity_scores, ref["sanity_scores"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out.rewards, ref["rewards"], rtol=1e-5, atol=1e-6)
        assert out.sanity_scores.shape == (50, 16) and np.isfinite(out.sanity_scores).all()
    finally:
        pool.shutdown()


def test_killed_replica_chunks_are_reissued_once(ray_session, ranker_dir):
    import ray

    from rl_align.rewards.actor import RewardPool, RewardScorer

    cfg = RewardConfig(functions={"ranker": 1.0}, replicas=2, chunk_size=1024, max_inflight=2, max_retries=3)
    pool = RewardPool(cfg, ranker_dir)
    try:
        pids = [h["pid"] for h in pool.health()]
        req = _request(12000, seed=1)  # ~94 chunks
        killed = {}

        def killer():
            # health() queues behind the replica's in-flight chunks: once it answers with work served, the pool
            # has already refilled that replica's queue, so the kill lands with chunks in flight
            while True:
                h = ray.get(pool.actors[0].health.remote())
                if h["served_pairs"] > 0:
                    os.kill(h["pid"], signal.SIGKILL)
                    killed["at"] = time.time()
                    return
                time.sleep(0.01)

        t = threading.Thread(target=killer)
        t.start()
        out = pool.score(_batch(*req))
        t.join(timeout=60)
        assert "at" in killed
        assert pool.stats.retries >= 1, pool.stats.errors
        ref = RewardScorer(ranker_dir, cfg).score(*req)
        np.testing.assert_allclose(out.rewards, ref["rewards"], rtol=1e-5, atol=1e-6)  # nothing lost/duplicated
        # Ray restarted the replica (new process), and it serves again
        deadline = time.time() + 60
        while time.time() < deadline:
            h = pool.health(timeout=5)
            if h[0].get("ok"):
                break
            time.sleep(0.5)
        assert h[0]["ok"] and h[0]["pid"] != pids[0]
        again = pool.score(_batch(*_request(50, seed=2)))
        assert again.rewards.shape == (50, 8)
    finally:
        pool.shutdown()


TINY_RANKER = {
    "name": "rk", "wandb": False,
    "data": {"dataset": "synthetic", "max_history": 10,
             "synthetic": {"n_items": 300, "n_users": 250, "dim": 16, "n_clusters": 10, "mean_seq_len": 15}},
    "exposure": {"slate_size": 10, "holdout_events": 2},
    "ranker": {"embed_dim": 8, "attention_hidden": 8, "mlp_dims": [16], "epochs": 1, "batch_size": 128,
               "max_history": 10, "eval_negatives": 20, "cpus_per_worker": 1},
}


def test_ranker_cli_train_resume_eval(ray_session, tmp_path, capsys):
    from rl_align.cli import main

    cfg = tmp_path / "rk.yaml"
    cfg.write_text(yaml.safe_dump(TINY_RANKER))
    run = tmp_path / "run"
    assert main(["ranker", "train", str(cfg), "--run-dir", str(run)]) == 0
    assert (run / "ranker" / "model" / "model.safetensors").exists() and (run / "ranker" / "report.md").exists()
    ev = json.loads((run / "ranker" / "eval.json").read_text())
    assert 0.0 <= ev["heldout"]["heldout_auc"] <= 1.0 and set(ev["discriminability"]) == {"random", "popular"}
    assert (run / "exposure" / "stats.json").exists()

    # a longer schedule in the same run dir continues from the epoch-1 checkpoint instead of starting over
    assert main(["ranker", "train", str(cfg), "--run-dir", str(run), "--set", "ranker.epochs=2"]) == 0
    recs = [json.loads(x) for x in (run / "ranker" / "metrics.jsonl").read_text().splitlines()]
    epochs = [r["epoch"] for r in recs if "train_loss" in r]
    assert epochs == [1, 2]  # epoch 1 was not redone
    assert [r["step"] for r in recs if "train_loss" in r][1] == 2 * recs[0]["step"]

    capsys.readouterr()
    assert main(["ranker", "eval", str(run), "--no-policy-negatives"]) == 0
    out = capsys.readouterr().out
    assert "Discriminability on unexposed candidates" in out and "| random |" in out

    assert main(["ranker", "eval", str(tmp_path / "nope")]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_a_slowly_restarting_actor_is_quarantined_not_retried_to_exhaustion(ray_session, tmp_path):
    import ray

    from rl_align.actors import ActorGroup

    class SlowRestart:
        """A toy actor whose restart takes 3 s (its first life leaves a marker), like a replica reloading a model;
        defined here so Ray ships it by value."""

        def __init__(self, marker: str) -> None:
            if os.path.exists(marker):
                time.sleep(3.0)
            open(marker, "w").close()

        def pid(self) -> int:
            return os.getpid()

        def work(self, x: int) -> int:
            time.sleep(0.02)
            return 2 * x

    group = ActorGroup(SlowRestart, lambda i: (str(tmp_path / f"m{i}"),), 2, cpus=0.5, kind="toy")
    try:
        pid0 = ray.get(group.actors[0].pid.remote())

        def killer():
            time.sleep(0.3)
            os.kill(pid0, signal.SIGKILL)

        t = threading.Thread(target=killer)
        t.start()
        # one retry per shard: before quarantine, shards re-sent to the restarting actor failed within milliseconds
        out = group.map("work", [(x,) for x in range(300)], pin=False, max_inflight=2, max_retries=1)
        t.join()
        assert out == [2 * x for x in range(300)]
        assert group.retries >= 1, "the kill landed after the map: nothing was tested"
        assert ray.get(group.actors[0].pid.remote(), timeout=30) != pid0  # restarted, and serving again
    finally:
        group.shutdown()
