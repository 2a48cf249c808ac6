"""experiments/i22_cold_item_hits.py: per part, the cases, hits and items hit, and the item-level sign test against
the first group, from fake runs (a split with cold cases and metrics files with per-case target ranks)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from rl_align.data.cold import split_cold_valid
from rl_align.utils.io import load_npz, write_npz

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "i22_cold_item_hits.py"
ITEMS = np.arange(10, 20)                       # ten held-out items, four cases each


def _split(d: Path) -> dict:
    targets = np.repeat(ITEMS, 4)
    n = targets.size
    write_npz(d / "data" / "split.npz", cold_items=ITEMS, cold_targets=targets, cold_users=np.arange(n),
              cold_history=np.zeros((n, 2), np.int64), cold_history_len=np.zeros(n, np.int64),
              cold_positions=np.zeros(n, np.int64))
    return split_cold_valid(load_npz(d / "data" / "split.npz"), 0.5)


def _run(root: Path, name: str, hit_items: set[int]) -> str:
    d = root / name
    (d / "data").mkdir(parents=True)
    (d / "eval").mkdir()
    parts = _split(d)
    m = {"cold_valid_split": {"share": 0.5, "seed": 0}}
    for p in ("cold", "cold_valid"):
        m[p] = {"target_rank": [0 if t in hit_items else -1 for t in parts[f"{p}_targets"].tolist()]}
    (d / "eval" / "m.json").write_text(json.dumps(m))
    return str(d / "eval" / "m.json")


def test_hits_items_and_the_item_level_sign_test(tmp_path):
    parts = _split(tmp_path)
    cold, valid = parts["cold_items"].tolist(), parts["cold_valid_items"].tolist()
    ref = _run(tmp_path, "ref", {cold[0]})
    other = _run(tmp_path, "other", {cold[1], cold[2], valid[0]})
    res = subprocess.run([sys.executable, str(SCRIPT), "--group", "ref", ref, "--group", "other", other],
                         capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    rows = {tuple(c.strip() for c in line.split("|")[1:3]): [c.strip() for c in line.split("|")[3:-1]]
            for line in res.stdout.splitlines() if line.startswith(("| ref", "| other"))}
    assert rows[("ref", "cold")] == ["20", "4", "1", "100%"]
    assert rows[("ref", "cold_valid")] == ["20", "0", "0", "–"]
    assert rows[("other", "cold")] == ["20", "8", "2", "100%"]
    # item by item against ref: cold 2 more / 1 fewer, cold-valid 1 / 0, both 3 / 1
    assert rows[("other", "1 / 0, p 1")] == ["2 / 1, p 1", "3 / 1, p 0.62"]


def test_a_metrics_file_without_a_cold_valid_part_is_refused(tmp_path):
    d = tmp_path / "r"
    (d / "eval").mkdir(parents=True)
    (d / "eval" / "m.json").write_text(json.dumps({"cold": {}}))
    res = subprocess.run([sys.executable, str(SCRIPT), "--group", "a", str(d / "eval" / "m.json")],
                         capture_output=True, text=True, cwd=ROOT)
    assert res.returncode != 0 and "no cold-valid part" in res.stderr
