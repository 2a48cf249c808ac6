import dataclasses
import typing
from pathlib import Path

import pytest

from rl_align.config import ConfigError, RunConfig, describe, dump_yaml, load_config


def _write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_unknown_key_names_file_key_and_suggestion(tmp_path):
    p = _write(tmp_path, "sid:\n  levls: 4\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert str(p) in msg and "'sid.levls'" in msg and "sid.levels" in msg


def test_wrong_type_and_literal(tmp_path):
    with pytest.raises(ConfigError, match=r"sid\.codebook_size: expected an integer"):
        load_config(_write(tmp_path, "sid:\n  codebook_size: many\n"))
    with pytest.raises(ConfigError, match=r"sid\.collision: 'drop' is not one of"):
        load_config(_write(tmp_path, "sid:\n  collision: drop\n"))
    with pytest.raises(ConfigError, match=r"data: expected a mapping"):
        load_config(_write(tmp_path, "data: 3\n"))


def test_seen_reward_must_be_finite(tmp_path):
    assert load_config(_write(tmp_path, "reward:\n  seen_reward: 0.0\n")).reward.seen_reward == 0.0
    with pytest.raises(ConfigError, match=r"reward\.seen_reward: expected a finite number"):
        load_config(_write(tmp_path, "reward:\n  seen_reward: .nan\n"))


def test_hybrid_priors_need_hybrid_head_codes(tmp_path):
    ok = load_config(_write(tmp_path, "sid:\n  sa2crq:\n    priors: hybrid\n"))
    assert ok.sid.sa2crq.priors == "hybrid" and ok.sid.sa2crq.head_codes == "hybrid"
    with pytest.raises(ConfigError, match=r"sid\.sa2crq\.priors: hybrid counts head items .* got 'head'"):
        load_config(_write(tmp_path, "sid:\n  sa2crq:\n    priors: hybrid\n    head_codes: head\n"))


def test_a_popularity_sanity_draw_needs_the_sanity_test_on(tmp_path):
    ok = load_config(_write(tmp_path, "rl:\n  adagrpo:\n    sanity_negatives: 8\n    sanity_draw: popularity\n"))
    assert ok.rl.adagrpo.sanity_draw == "popularity"
    with pytest.raises(ConfigError, match=r"rl\.adagrpo\.sanity_draw: 'popularity' draws .* sanity_negatives > 0"):
        load_config(_write(tmp_path, "rl:\n  adagrpo:\n    sanity_draw: popularity\n"))
    with pytest.raises(ConfigError, match=r"rl\.adagrpo\.sanity_draw: 'zipf' is not one of"):
        load_config(_write(tmp_path, "rl:\n  adagrpo:\n    sanity_negatives: 8\n    sanity_draw: zipf\n"))


def test_all_cold_routes_need_the_cold_expansion_and_not_the_beams_parent_route(tmp_path):
    ok = load_config(_write(tmp_path, "eval:\n  cold_expansion: true\n  cold_routes: all\n"))
    assert ok.eval.cold_routes == "all"
    with pytest.raises(ConfigError, match=r"eval\.cold_routes: 'all' scores .* needs cold_expansion: true"):
        load_config(_write(tmp_path, "eval:\n  cold_routes: all\n"))
    with pytest.raises(ConfigError, match=r"eval\.cold_routes: 'all' already scores .* bucket_cold_parents: false"):
        load_config(_write(tmp_path, "eval:\n  cold_expansion: true\n  cold_routes: all\n"
                                     "  bucket_cold_parents: true\n"))
    with pytest.raises(ConfigError, match=r"eval\.cold_routes: 'some' is not one of"):
        load_config(_write(tmp_path, "eval:\n  cold_expansion: true\n  cold_routes: some\n"))


def test_invalid_yaml_names_line(tmp_path):
    with pytest.raises(ConfigError, match=r"line 2"):
        load_config(_write(tmp_path, "a: 1\nb: c: d\n"))


def test_missing_file():
    with pytest.raises(ConfigError, match="config file not found"):
        load_config("/nonexistent/x.yaml")


def test_overrides_and_nested_defaults(tmp_path):
    cfg = load_config(_write(tmp_path, "sid:\n  levels: 4\n"), overrides=["sid.codebook_size=64", "data.max_history=5"])
    assert cfg.sid.levels == 4 and cfg.sid.codebook_size == 64 and cfg.data.max_history == 5
    assert cfg.sid.rq_vae.beta == 0.25  # nested default kept
    with pytest.raises(ConfigError, match="unknown key 'sid.nope'"):
        load_config(_write(tmp_path, "{}\n"), overrides=["sid.nope=1"])


def test_every_field_has_a_doc():
    def walk(cls):
        for f in dataclasses.fields(cls):
            assert f.metadata.get("doc"), f"{cls.__name__}.{f.name} has no doc"
            tp = typing.get_type_hints(cls)[f.name]
            if dataclasses.is_dataclass(tp):
                walk(tp)

    walk(RunConfig)
    rows = describe(RunConfig)
    assert any(k == "sid.rq_vae.beta" for k, _, _ in rows)


def test_secrets_redacted():
    @dataclasses.dataclass
    class C:
        wandb_api_key: str = "abc123"
        name: str = "x"

    text = dump_yaml(C())
    assert "abc123" not in text and "***" in text


def test_shipped_configs_load():
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "configs"
    files = sorted(root.glob("*.yaml"))
    assert files
    for f in files:
        load_config(f)


def test_float_written_without_a_dot_is_a_number():
    from rl_align.config import RunConfig, load_config

    cfg = load_config(Path(__file__).resolve().parents[1] / "experiments/configs/quick.yaml", RunConfig,
                      overrides=["rl.lr=3e-5"])
    assert cfg.rl.lr == 3e-5


def test_stage_digest_ignores_fields_at_their_defaults():
    """A newer rl-align that adds a config field with a default must not invalidate finished stages."""
    import dataclasses as dc

    from rl_align.config import SidConfig
    from rl_align.run_dir import config_digest, non_default

    base = SidConfig()
    assert non_default(base) == {}
    changed = dc.replace(base, codebook_size=64)
    assert non_default(changed) == {"codebook_size": 64}
    assert config_digest(changed) != config_digest(base)
    nested = dc.replace(base, sa2crq=dc.replace(base.sa2crq, tau=0.01))
    assert non_default(nested) == {"sa2crq": {"tau": 0.01}}

    @dc.dataclass
    class Old:
        a: int = 1

    @dc.dataclass
    class New:            # the same section after an upgrade added `b`
        a: int = 1
        b: float = 0.5

    assert config_digest(Old(a=2)) == config_digest(New(a=2))


def test_run_seed_is_the_default_of_every_stage_seed(tmp_path):
    cfg = load_config(_write(tmp_path, "seed: 3\nsft:\n  seed: 5\nsid:\n"), overrides=["rl.lr=0.001"])
    assert (cfg.sid.seed, cfg.sft.seed, cfg.exposure.seed, cfg.ranker.seed, cfg.rl.seed) == (3, 5, 3, 3, 3)
    assert cfg.data.cold_seed == 0 and cfg.data.synthetic.seed == 0   # the dataset itself does not move
    again = load_config(_write(tmp_path, "seed: 0\n"), overrides=["seed=2", "rl.seed=7"])
    assert (again.sid.seed, again.sft.seed, again.rl.seed) == (2, 2, 7)
    assert load_config(_write(tmp_path, "{}\n")).sft.seed == 0
