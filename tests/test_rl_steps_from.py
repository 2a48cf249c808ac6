"""rl.steps_from: a refit takes its step count from the best-on-valid step of an earlier alignment in the same
run directory, and refuses one made with other settings, one that chose the starting policy, or a missing one."""

import json

import pytest

from rl_align.config import RunConfig, to_dict
from rl_align.driver.controller import RlConfigError, steps_from


def _source(run, cfg: RunConfig, best_step: int, tag: str = "chosen") -> None:
    """The summary.json an alignment tagged ``tag`` of ``cfg`` writes (only what steps_from reads)."""
    d = run / "rl" / tag
    d.mkdir(parents=True)
    (d / "summary.json").write_text(json.dumps({"best_step": best_step, "rl": to_dict(cfg.rl),
                                                "reward": to_dict(cfg.reward)}))


def _refit(base: RunConfig) -> RunConfig:
    cfg = RunConfig(**vars(base))
    cfg.rl, cfg.reward = type(base.rl)(**vars(base.rl)), type(base.reward)(**vars(base.reward))
    cfg.rl.tag, cfg.rl.serving_split, cfg.rl.steps_from = "refit", "test", "chosen"
    cfg.rl.steps, cfg.rl.eval_every = 999, 7          # schedule fields may differ
    return cfg


def test_the_refit_takes_the_best_on_valid_step_of_the_same_setting(tmp_path):
    base = RunConfig()
    base.rl.serving_prompts, base.rl.lr = 0.75, 3e-4
    _source(tmp_path, base, best_step=70)
    assert steps_from(_refit(base), tmp_path) == 70


def test_another_setting_is_refused_naming_what_differs(tmp_path):
    base = RunConfig()
    _source(tmp_path, base, best_step=30)
    cfg = _refit(base)
    cfg.rl.lr = base.rl.lr * 3
    cfg.reward.functions = {"ranker": 1.0, "exact_match": 1.0}
    with pytest.raises(RlConfigError, match=r"rl\.lr, reward\.functions"):
        steps_from(cfg, tmp_path)
    cfg = _refit(base)
    cfg.rl.adagrpo = type(base.rl.adagrpo)(**vars(base.rl.adagrpo))
    cfg.rl.adagrpo.k_d = base.rl.adagrpo.k_d + 1              # a nested field counts too, by its name
    with pytest.raises(RlConfigError, match=r"\(rl\.adagrpo\.k_d\)"):
        steps_from(cfg, tmp_path)


def test_fields_an_older_summary_lacks_count_as_their_defaults(tmp_path):
    """As for resuming a checkpoint: a field a later rl-align added reads as its default in an older summary."""
    base = RunConfig()
    _source(tmp_path, base, best_step=10)
    path = tmp_path / "rl" / "chosen" / "summary.json"
    s = json.loads(path.read_text())
    del s["rl"]["recent_prompts"], s["rl"]["adagrpo"]["k_d"]
    path.write_text(json.dumps(s))
    assert steps_from(_refit(base), tmp_path) == 10


def test_a_missing_source_or_one_that_kept_the_start_is_refused(tmp_path):
    base = RunConfig()
    with pytest.raises(RlConfigError, match=r"rl\.steps_from: .*chosen/summary\.json does not exist"):
        steps_from(_refit(base), tmp_path)
    _source(tmp_path, base, best_step=0)
    with pytest.raises(RlConfigError, match="chose step 0"):
        steps_from(_refit(base), tmp_path)


def test_naming_its_own_tag_fails_when_the_config_loads():
    cfg = RunConfig()
    cfg.rl.steps_from = "adagrpo"            # rl.tag unset: the output directory is the algo's name
    assert [k for k, _ in cfg.rl.value_errors()] == ["steps_from"]
    cfg.rl.tag = "refit"
    assert cfg.rl.value_errors() == []
