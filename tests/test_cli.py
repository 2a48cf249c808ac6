"""The rl-align CLI end to end: help on every subcommand, sids build on ML-100K, bad input, resume."""

import json
import subprocess
import sys

import pytest

from rl_align.cli import build_parser, main


def _subcommands(parser, prefix=()):
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield prefix + (name,)
                yield from _subcommands(sub, prefix + (name,))


def test_help_on_every_subcommand(capsys):
    cmds = list(_subcommands(build_parser()))
    assert ("sids", "build") in cmds and ("data", "fetch") in cmds and ("run",) in cmds
    for cmd in [()] + cmds:
        with pytest.raises(SystemExit) as e:
            main(list(cmd) + ["--help"])
        assert e.value.code == 0
        assert "usage: rl-align" in capsys.readouterr().out


def test_console_script_and_module():
    out = subprocess.run([sys.executable, "-m", "rl_align", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "sids" in out.stdout


def test_sids_build_ml100k(tmp_path, capsys, ml100k_emb):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("name: t\nsid:\n  levels: 3\n  codebook_size: 32\n  collision: reassign\n")
    run = tmp_path / "run"
    assert main(["sids", "build", str(cfg), "--run-dir", str(run)]) == 0
    stats = json.loads((run / "sids" / "stats.json").read_text())
    assert stats["n_items"] == 1682
    assert stats["collisions"]["before"]["collision_rate"] > 0
    assert stats["collisions"]["after"]["collision_rate"] == 0.0
    assert all(lv["utilisation"] > 0.9 for lv in stats["levels"])
    assert (run / "sids" / "catalog" / "catalog.json").exists() and (run / "config.yaml").exists()
    assert json.loads((run / "embed" / "info.json").read_text())["n_items"] == 1682
    capsys.readouterr()
    assert main(["sids", "stats", str(run)]) == 0
    assert "collisions (reassign)" in capsys.readouterr().out
    # resume: nothing is redone
    before = (run / "sids" / "stage.json").read_text()
    assert main(["sids", "build", str(cfg), "--run-dir", str(run)]) == 0
    assert (run / "sids" / "stage.json").read_text() == before
    # a changed sid config redoes only the sids stage
    data_stage = (run / "data" / "stage.json").read_text()
    assert main(["sids", "build", str(cfg), "--run-dir", str(run), "--set", "sid.codebook_size=16"]) == 0
    assert (run / "data" / "stage.json").read_text() == data_stage
    assert json.loads((run / "sids" / "stats.json").read_text())["levels"][0]["codebook_size"] == 16


def test_bad_config_key_clear_error(tmp_path, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("sid:\n  codebok_size: 4\n")
    assert main(["sids", "build", str(cfg), "--run-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml" in err and "'sid.codebok_size'" in err and "sid.codebook_size" in err
    assert not (tmp_path / "r").exists()  # nothing written for an invalid config


def test_bad_embeddings_file_clear_error(tmp_path, capsys):
    import numpy as np

    bad = tmp_path / "e.npy"
    arr = np.ones((1682, 8), np.float32)
    arr[7, 0] = np.nan
    np.save(bad, arr)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"embed:\n  source: npy\n  npy_path: {bad}\n")
    run = tmp_path / "r"
    assert main(["sids", "build", str(cfg), "--run-dir", str(run)]) == 2
    assert "e.npy: 1 row(s) contain NaN/inf (first: row 7)" in capsys.readouterr().err
    assert not (run / "embed" / "item_emb.npy").exists() and not (run / "embed" / "stage.json").exists()


def test_data_stats(capsys):
    assert main(["data", "stats"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["users"] == 943 and stats["users_tied_at_last_timestamp"] == 415


def test_config_listing(capsys):
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    assert "sid.rq_vae.beta" in out and "commitment loss weight" in out


def test_baseline_bad_value_fails_before_any_stage(tmp_path, capsys):
    cfg = tmp_path / "b.yaml"
    cfg.write_text("baseline:\n  dropout: 1.5\n")
    assert main(["baseline", "train", str(cfg), "--model", "sasrec", "--run-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "b.yaml" in err and "baseline.dropout" in err and "≥ 0 and < 1" in err
    assert not (tmp_path / "r").exists()
    cfg.write_text("seed: 0\n")
    assert main(["baseline", "train", str(cfg), "--model", "sasrek", "--run-dir", str(tmp_path / "r")]) == 2
    assert "baseline.models: unknown baseline model 'sasrek'" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
