"""A stage resumes its checkpoints only when they were made from the same inputs (no Ray needed)."""

import copy
import logging

from rl_align.config import RunConfig
from rl_align.pipeline import guard_checkpoints
from rl_align.run_dir import RunDir


def _ckpt(run, stage="sft"):
    d = run.path / stage / "ray_train" / "checkpoint_0"
    d.mkdir(parents=True, exist_ok=True)
    (d / "state.json").write_text("{}")
    return d


def test_sft_checkpoints_survive_a_schedule_change_not_an_input_change(tmp_path, caplog):
    cfg = RunConfig()
    run = RunDir(tmp_path / "run", cfg)
    guard_checkpoints(run, "sft")                       # first start: records what the stage is made from
    ck = _ckpt(run)
    (run.path / "sft" / "metrics.jsonl").write_text('{"epoch": 1}\n')

    longer = copy.deepcopy(cfg)
    longer.sft.epochs += 10                             # a longer schedule continues from the checkpoint
    longer.sft.cpus_per_worker = 1.0
    guard_checkpoints(RunDir(run.path, longer), "sft")
    assert ck.exists()

    other = copy.deepcopy(longer)
    other.sid.codebook_size *= 2                        # another catalog: the checkpoint's tokens mean other items
    with caplog.at_level(logging.WARNING, logger="rl_align"):
        guard_checkpoints(RunDir(run.path, other), "sft")
    assert not ck.exists() and not (run.path / "sft" / "metrics.jsonl").exists()
    assert "made from other inputs" in caplog.text
    ck = _ckpt(run)
    guard_checkpoints(RunDir(run.path, other), "sft")   # the new setting's own checkpoint is kept
    assert ck.exists()


def test_rl_and_ranker_checkpoints_follow_their_upstream(tmp_path):
    cfg = RunConfig()
    run = RunDir(tmp_path / "run", cfg)
    for stage, sub in (("rl", "rl/adagrpo/checkpoints/step_000010"), ("ranker", "ranker/ray_train/c")):
        guard_checkpoints(run, stage)
        (run.path / sub).mkdir(parents=True)
    changed = copy.deepcopy(cfg)
    changed.exposure.epsilon = 0.2                      # other impression logs: ranker and RL start fresh
    r2 = RunDir(run.path, changed)
    guard_checkpoints(r2, "ranker")
    guard_checkpoints(r2, "rl")
    assert not (run.path / "ranker" / "ray_train").exists()
    assert not (run.path / "rl" / "adagrpo" / "checkpoints").exists()
    assert (run.path / "rl" / "adagrpo" / "resume_fingerprint.json").exists()   # re-recorded for the new start


def test_checkpoints_without_a_record_are_resumed_with_a_warning(tmp_path, caplog):
    run = RunDir(tmp_path / "run", RunConfig())
    ck = _ckpt(run)                                     # an older run directory: no fingerprint file
    with caplog.at_level(logging.WARNING, logger="rl_align"):
        guard_checkpoints(run, "sft")
    assert ck.exists() and "no record" in caplog.text
    assert (run.path / "sft" / "resume_fingerprint.json").exists()
