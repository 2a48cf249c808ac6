"""RAD-DPO on a real local Ray through the CLI: pairs with provenance, training on the DeepSpeed learner group, and
a resumed run (RDRW's similarity buffer included) repeating an uninterrupted one step for step."""

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from helpers import TINY_RUN

from rl_align.config import RunConfig, load_config

pytestmark = pytest.mark.ray

TINY = {
    **TINY_RUN, "name": "tiny-dpo",
    "rl": {"algo": "rad_dpo", "prompts_per_step": 8, "micro_batch_prompts": 4, "steps": 4, "recent_prompts": 3,
           "lr": 0.001, "cpus_per_learner": 1, "cpus_per_rollout_worker": 0.5, "eval_every": 2, "eval_users": 40,
           "checkpoint_every": 2,
           "preference": {"positives_window": 3, "negatives": 3, "beam": 10, "rdrw_buffer": 16}},
}


def _cfg(tmp_path, **rl):
    data = json.loads(json.dumps(TINY))
    data["rl"].update(rl)
    p = tmp_path / f"c{len(list(tmp_path.glob('c*.yaml')))}.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, ml100k_emb, ray_session):
    """data → embed → sids → sft → exposure, once (each test copies it)."""
    from rl_align.pipeline import run_pipeline

    d = tmp_path_factory.mktemp("dpoprep")
    cfg = load_config(_cfg(d), RunConfig)
    cfg.stages = ["data", "embed", "sids", "sft", "exposure"]
    run_pipeline(cfg, d / "run")
    return d / "run"


def _records(run, tag="rad_dpo"):
    recs = [json.loads(x) for x in (run / "rl" / tag / "metrics.jsonl").read_text().splitlines()]
    return [r for r in recs if "loss" in r]


def test_build_pairs_keeps_provenance_and_only_training_events(prepared, tmp_path):
    from rl_align.cli import main

    run = shutil.copytree(prepared, tmp_path / "run")
    assert main(["dpo", "build-pairs", str(_cfg(tmp_path)), "--run-dir", str(run)]) == 0
    t = pq.read_table(run / "preferences" / "pairs.parquet").to_pydict()
    meta = json.loads((run / "preferences" / "pairs.json").read_text())
    split = np.load(run / "data" / "split.npz")
    assert meta["prompts"] == 3 * 943 and meta["negatives_from_exposure"] > 0 and meta["negatives_from_beam"] > 0
    assert meta["multi_label_share"] > 0.5
    for i in range(len(t["row"])):
        row = t["row"][i]
        u, p = int(split["train_users"][row]), int(split["train_positions"][row])
        seq = split["seq_items"][split["seq_offsets"][u]: split["seq_offsets"][u + 1]]
        end = min(p + 3, int(split["valid_positions"][u]))          # training events only: cut at valid
        assert t["positives"][i] == seq[p:end].tolist() and t["positives"][i][0] == split["train_targets"][row]
        assert not set(t["negatives"][i]) & set(t["positives"][i])
        assert set(t["negative_source"][i]) <= {"exposure", "beam"}
        assert len(t["negative_position"][i]) == len(t["negatives"][i])


@pytest.fixture(scope="module")
def uninterrupted(prepared, tmp_path_factory):
    from rl_align.cli import main

    d = tmp_path_factory.mktemp("dpofull")
    full = shutil.copytree(prepared, d / "full")
    assert main(["dpo", "train", str(_cfg(d)), "--run-dir", str(full)]) == 0
    return full


def test_rad_dpo_trains_and_a_resumed_run_repeats_an_uninterrupted_one(prepared, uninterrupted, tmp_path):
    from rl_align.cli import main

    a = _records(uninterrupted)
    assert [r["step"] for r in a] == [1, 2, 3, 4]
    for r in a:
        assert {"pref_loss", "nll", "pref_accuracy", "rdrw_weight_mean", "learn_s"} <= set(r)
        assert 0.5 <= r["rdrw_weight_mean"] <= 1.0
    assert (uninterrupted / "rl" / "rad_dpo" / "test_metrics.json").exists()
    part = shutil.copytree(prepared, tmp_path / "part")
    assert main(["dpo", "train", str(_cfg(tmp_path, steps=2)), "--run-dir", str(part)]) == 0
    assert main(["dpo", "train", str(_cfg(tmp_path, steps=4)), "--run-dir", str(part)]) == 0
    b = _records(part)
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    for ra, rb in zip(a, b):
        for k in ("loss", "pref_loss", "nll", "rdrw_weight_mean"):
            assert rb[k] == pytest.approx(ra[k], rel=1e-5, abs=1e-7), (ra["step"], k)


def test_dpo_refuses_a_non_preference_objective(tmp_path, capsys):
    from rl_align.cli import main

    assert main(["dpo", "train", str(_cfg(tmp_path, algo="grpo")), "--run-dir", str(tmp_path / "x")]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "rl.algo: expected a preference objective (dpo, rad_dpo, sdpo, simpo), got 'grpo'" in err[0]
    assert not (tmp_path / "x").exists()                   # refused before any stage ran
