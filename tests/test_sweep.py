"""Grid sweeps: parsing, one run dir per combination, the summary table, errors before any run."""

import json
from pathlib import Path

import pytest

from rl_align.sweep import combinations, combo_name, parse_grid

QUICK = str(Path(__file__).resolve().parents[1] / "experiments/configs/quick.yaml")


def test_grid_parsing_and_product():
    g = parse_grid(["sid.sa2crq.tau=0.001, 0.003", "sid.codebook_size=32,64"])
    assert g == [("sid.sa2crq.tau", ["0.001", "0.003"]), ("sid.codebook_size", ["32", "64"])]
    combos = combinations(g)
    assert len(combos) == 4 and combos[1] == [("sid.sa2crq.tau", "0.001"), ("sid.codebook_size", "64")]
    assert combo_name(combos[1]) == "tau=0.001_codebook_size=64"
    for bad in ["sid.tau", "=1,2", "sid.tau="]:
        with pytest.raises(ValueError, match="expected KEY=V1,V2"):
            parse_grid([bad])
    with pytest.raises(ValueError, match="given twice"):
        parse_grid(["a=1", "a=2"])


def test_sweep_runs_every_combination_and_tabulates(tmp_path, ml100k_emb, capsys):
    from rl_align.cli import main

    out = tmp_path / "sw"
    rc = main(["sweep", QUICK, "--grid", "sid.tokenizer=rq_kmeans,sa2crq", "--grid", "sid.codebook_size=32",
               "--stages", "data,embed,sids", "--sweep-dir", str(out)])
    assert rc == 0
    rows = json.loads((out / "sweep.json").read_text())
    assert [r["sid.tokenizer"] for r in rows] == ["rq_kmeans", "sa2crq"]
    assert (out / "tokenizer=rq_kmeans_codebook_size=32" / "sids" / "catalog").exists()
    for r in rows:
        assert r["collision_after"] == 0.0 and 0 < r["utilisation"] <= 1
    assert rows[0]["mean_len"] == 3.0 and rows[1]["mean_len"] < 3.0          # SA²CRQ shortens codes
    assert "| sid.tokenizer |" in (out / "sweep.md").read_text()


def test_sweep_with_a_bad_key_fails_before_any_run(tmp_path, capsys):
    from rl_align.cli import main

    out = tmp_path / "sw"
    assert main(["sweep", QUICK, "--grid", "sid.nope=1,2", "--sweep-dir", str(out)]) != 0
    assert "sid.nope" in capsys.readouterr().err
    assert not any(p.is_dir() for p in out.glob("*"))
