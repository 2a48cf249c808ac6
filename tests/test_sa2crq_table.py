"""experiments/sa2crq_table.py --choose: issue 22's valid-side rule over fake run dirs holding the files the table
reads (sids/stats.json, data/split.npz with cold cases, a metrics file with valid, test, cold and cold-valid parts)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from rl_align.utils.io import write_npz

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "sa2crq_table.py"


def _part(hr: float, tail: float, n: int = 10) -> dict:
    ranks = [0] * round(hr * n) + [-1] * (n - round(hr * n))
    return {"policy": {"hr@10": hr, "ndcg@10": hr / 2}, "target_rank": ranks, "free_hallucination_rate": 0.0,
            "policy_buckets": {"head": {"hr@10": hr}, "tail": {"hr@10": tail}}}


def _run(root: Path, name: str, valid: float, valid_tail: float, cold_valid: float, cold: float = 0.1) -> str:
    d = root / name
    (d / "sids").mkdir(parents=True)
    (d / "eval").mkdir()
    (d / "data").mkdir()
    items = np.arange(10, 20)                  # ten held-out items, two cases each: ten cases per part
    n = 2 * items.size
    write_npz(d / "data" / "split.npz", cold_items=items, cold_targets=np.repeat(items, 2), cold_users=np.arange(n),
              cold_history=np.zeros((n, 2), np.int64), cold_history_len=np.zeros(n, np.int64),
              cold_positions=np.zeros(n, np.int64))
    (d / "sids" / "stats.json").write_text(json.dumps({"mean_code_length_head20": 3.0, "mean_code_length_tail80": 2.0,
                                                       "n_items": 100}))
    m = {"valid": _part(valid, valid_tail), "test": _part(0.2, 0.1), "cold": _part(cold, cold),
         "cold_valid": _part(cold_valid, cold_valid), "cold_valid_split": {"share": 0.5, "seed": 0}}
    (d / "eval" / "metrics_x.json").write_text(json.dumps(m))
    return str(d / "eval" / "metrics_x.json")


def _choose(*groups: tuple[str, str]) -> subprocess.CompletedProcess:
    args = [x for label, run in groups for x in ("--group", label, run)]
    return subprocess.run([sys.executable, str(SCRIPT), *args, "--choose"], capture_output=True, text=True, cwd=ROOT)


def test_the_rule_keeps_the_valid_floor_then_takes_the_best_weaker_of_tail_and_cold_valid(tmp_path):
    ref = ("ref", _run(tmp_path, "ref", 0.5, 0.2, 0.1))
    below_floor = ("low", _run(tmp_path, "low", 0.48, 0.4, 0.4))     # best tail and cold, but 0.96× valid
    tail_only = ("tail", _run(tmp_path, "tail", 0.5, 0.3, 0.1))      # min(1.5, 1.0) = 1.0
    both = ("both", _run(tmp_path, "both", 0.49, 0.24, 0.12))        # min(1.2, 1.2) = 1.2
    res = _choose(ref, below_floor, tail_only, both)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[-1].startswith("choice: both (")
    res = _choose(ref, below_floor)
    assert res.stdout.splitlines()[-1] == "choice: no group clears the valid floor"


def test_ties_go_to_the_higher_valid_hr(tmp_path):
    ref = ("ref", _run(tmp_path, "ref", 0.5, 0.2, 0.1))
    a = ("a", _run(tmp_path, "a", 0.5, 0.24, 0.12))
    b = ("b", _run(tmp_path, "b", 0.52, 0.24, 0.12))
    assert _choose(ref, a, b).stdout.splitlines()[-1].startswith("choice: b (")


def test_cold_cases_are_also_compared_item_by_item(tmp_path):
    ref = ("ref", _run(tmp_path, "ref", 0.5, 0.2, 0.1))
    same = ("same", _run(tmp_path, "same", 0.5, 0.2, 0.1))
    more = ("more", _run(tmp_path, "more", 0.5, 0.2, 0.1, cold=0.3))     # hits on cases 0-2 against case 0
    res = subprocess.run([sys.executable, str(SCRIPT), "--group", *ref, "--group", *same, "--group", *more],
                         capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    last = res.stdout.splitlines()[-2:]
    assert last[0].endswith("items +0/−0, p 1 |")                         # the same hits: no item differs
    # cases 0-1 are one item's (1 hit against 2), case 2 the next item's (0 against 1): two items, 2 case wins
    assert last[1].endswith("+2/−0, p 0.5; items +2/−0, p 0.5 |")
