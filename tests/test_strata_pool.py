"""experiments/strata_pool.py: `rl-align analyze strata` pooled over seeds, checked by hand."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))

from strata_pool import pool  # noqa: E402

from rl_align.analysis.strata import strata_markdown  # noqa: E402


def _strata(run: str, cells: list[tuple[int, int, int, float]], admitted: float, on: float, off: float) -> dict:
    """cells: (difficulty bin, disc bin, n, Δ log π(y*) grpo); the other per-prompt means are 0."""
    keys = ("gate", "logp_before", "hit_before", "dlogp_nll", "dhit_grpo", "dhit_nll")
    return {"run": run, "prompts": sum(c[2] for c in cells), "admitted": admitted, "steps": 10, "k": 10,
            "quantiles": 3, "difficulty": "gt_rank", "discriminability": "frac_below", "gate_config": {"a": 0.5},
            "algos": ["grpo", "nll"], "reward": {"ranker": 1.0}, "rollout_mode": "beam", "lr": 1e-4,
            "prompts_per_step": 128, "difficulty_bins": ["a"], "disc_bins": ["b"],
            "cells": [{"difficulty_bin": i, "disc_bin": j, "n": n, "dlogp_grpo": v, **dict.fromkeys(keys, 0.0)}
                      for i, j, n, v in cells],
            "gate_on": {"dlogp_grpo": on, **dict.fromkeys(keys, 0.0)},
            "gate_off": {"dlogp_grpo": off, **dict.fromkeys(keys, 0.0)}}


def test_cells_pool_by_bin_index_weighted_by_prompts_and_the_gate_sides_by_admitted_prompts():
    a = _strata("s0", [(0, 0, 10, 1.0), (1, 1, 30, -1.0)], admitted=0.25, on=0.4, off=-0.2)
    b = _strata("s1", [(0, 0, 30, 3.0), (0, 1, 20, 5.0)], admitted=0.5, on=0.1, off=0.0)
    p = pool([a, b])
    cells = {(c["difficulty_bin"], c["disc_bin"]): c for c in p["cells"]}
    assert cells[(0, 0)]["n"] == 40 and cells[(0, 0)]["dlogp_grpo"] == pytest.approx((10 * 1 + 30 * 3) / 40)
    assert cells[(0, 1)]["dlogp_grpo"] == 5.0 and cells[(1, 1)]["dlogp_grpo"] == -1.0     # one run each
    assert p["prompts"] == 90 and p["admitted"] == pytest.approx((0.25 * 40 + 0.5 * 50) / 90)
    assert p["gate_on"]["dlogp_grpo"] == pytest.approx((0.4 * 10 + 0.1 * 25) / 35)        # 10 and 25 admitted
    assert p["gate_off"]["dlogp_grpo"] == pytest.approx((-0.2 * 30 + 0.0 * 25) / 55)
    b["steps"] = 20
    with pytest.raises(ValueError, match="s1: strata steps = 20, but s0 has 10"):
        pool([a, b])


def test_the_script_prints_the_table_and_refuses_a_run_without_strata_in_one_line(tmp_path):
    for i, v in enumerate((1.0, 3.0)):
        d = tmp_path / f"s{i}" / "analysis" / "strata"
        d.mkdir(parents=True)
        (d / "strata.json").write_text(json.dumps(_strata(f"s{i}", [(0, 0, 10, v)], 0.5, 0.0, 0.0)))
    script = [sys.executable, str(ROOT / "experiments" / "strata_pool.py")]
    out = subprocess.run([*script, str(tmp_path / "s0"), str(tmp_path / "s1"), "--out", str(tmp_path / "pooled")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "| 1 | 1 | 20 | 0% | 0.000 | 0.000 | +2.0000 | +0.000 |" in out.stdout     # strata's own table
    assert (tmp_path / "pooled" / "strata.png").stat().st_size > 0
    assert json.loads((tmp_path / "pooled" / "strata.json").read_text())["difficulty_bins"] == ["1"]
    bad = subprocess.run([*script, str(tmp_path / "s0"), str(tmp_path)], capture_output=True, text=True)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "missing" in bad.stderr


def _segment(prompts: int, admitted: float, on: float, off: float) -> dict:
    keys = ("gate", "logp_before", "hit_before", "dlogp_nll", "dhit_grpo", "dhit_nll")
    part = lambda v: {"dlogp_grpo": v, **dict.fromkeys(keys, 0.0)}  # noqa: E731
    return {"prompts": prompts, "admitted": admitted, "all": part(admitted * on + (1 - admitted) * off),
            "gate_on": part(on), "gate_off": part(off)}


def test_a_faulty_rewards_segments_pool_by_their_prompts_and_print_as_strata_rows():
    a = _strata("s0", [(0, 0, 10, 1.0)], admitted=0.5, on=0.0, off=0.0)
    b = _strata("s1", [(0, 0, 30, 1.0)], admitted=0.5, on=0.0, off=0.0)
    a["fault"] = {"share": 0.5, "kind": "negate", "segments": {"faulty": _segment(4, 0.5, 1.0, -1.0),
                                                               "healthy": _segment(6, 0.5, 2.0, 0.0)}}
    b["fault"] = {"share": 0.5, "kind": "negate", "segments": {"faulty": _segment(12, 0.25, 3.0, 1.0),
                                                               "healthy": _segment(18, 0.5, 2.0, 0.0)}}
    p = pool([a, b])
    f = p["fault"]["segments"]["faulty"]
    assert f["prompts"] == 16 and f["admitted"] == pytest.approx((0.5 * 4 + 0.25 * 12) / 16)
    assert f["gate_on"]["dlogp_grpo"] == pytest.approx((1.0 * 2 + 3.0 * 3) / 5)       # 2 and 3 admitted
    assert f["gate_off"]["dlogp_grpo"] == pytest.approx((-1.0 * 2 + 1.0 * 9) / 11)    # 2 and 9 refused
    md = strata_markdown(p)
    assert "Reward faulty for 50% of the users (`negate`)" in md and "| faulty | 16 | 31% | +1.1250 |" in md
    b["fault"]["kind"] = "no_history"
    with pytest.raises(ValueError, match="s1: strata fault = 0.5 'no_history'"):
        pool([a, b])
