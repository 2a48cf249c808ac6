"""experiments/compare_with_baselines.py: the paired table of the SID policy against the item-ID baselines.

Fake run dirs hold the metrics files the pipeline writes; the script's table is read back and checked against
figures computed by hand from the per-user ranks.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "compare_with_baselines.py"


def _metrics(ranks: list[int]) -> dict:
    r = np.asarray(ranks)
    hit = (r >= 0) & (r < 10)
    ndcg = np.where(hit, 1.0 / np.log2(np.maximum(r, 0) + 2.0), 0.0)
    return {"policy": {"hr@10": float(hit.mean()), "ndcg@10": float(ndcg.mean())}, "target_rank": ranks}


def _write(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def _policy_run(d: Path, ranks: list[int]) -> Path:
    m = _metrics(ranks)
    _write(d / "eval" / "metrics.json", {"valid": {"policy": m["policy"]}, "test": m})
    return d


def _baseline(d: Path, ranks: list[int], epoch: int, seen_mask: bool = False) -> None:
    m = _metrics(ranks)
    _write(d / "baselines" / "sasrec" / "metrics.json",
           {"model": "sasrec", "max_len": 50, "best_epoch": epoch, "config": {"seen_mask": seen_mask},
            "valid": {"policy": m["policy"]}, "test": m})


def _table(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120)


def test_a_run_that_holds_its_own_baseline_and_is_also_named_as_the_baseline_dir_counts_once(tmp_path):
    # seed 0: the policy hits users 0-2, SASRec users 0 and 3; seed 1 (its own SASRec, named twice): 0-1 vs 0
    s0 = _policy_run(tmp_path / "pol-s0", [0, 3, 9, -1, 20])
    ref0 = tmp_path / "ref-s0"
    _baseline(ref0, [1, -1, 15, 2, -1], epoch=40)
    s1 = _policy_run(tmp_path / "pol-s1", [5, 1, -1, -1, 11])
    _baseline(s1, [2, -1, -1, 30, -1], epoch=60)
    out = _table(str(s0), str(s1), "--baselines-from", str(ref0), str(s1), "--label", "pol")
    assert out.returncode == 0, out.stderr
    row = next(line for line in out.stdout.splitlines() if line.startswith("| sasrec"))
    assert "best epochs [40, 60]" in row                    # one entry per seed, not three
    assert "+2/−1, p 1.000; +1/−0, p 1.000" in row          # per-seed users won / lost, by hand
    assert f"{(3 / 5 + 2 / 5) / (2 / 5 + 1 / 5):.3f}×" in row  # mean policy HR@10 ÷ mean SASRec HR@10


def test_two_dirs_with_the_same_baseline_for_one_seed_are_refused_with_one_line(tmp_path):
    s0 = _policy_run(tmp_path / "pol-s0", [0, -1])
    _baseline(s0, [0, 0], epoch=10)
    ref = tmp_path / "ref-s0"
    _baseline(ref, [0, -1], epoch=12)   # seed 0 has two SASRec-50 runs: which one is its pair is unknown
    out = _table(str(s0), "--baselines-from", str(ref))
    assert out.returncode != 0 and "| sasrec" not in out.stdout
    assert out.stderr.strip() == (f"compare_with_baselines: {s0}: sasrec (history 50) is in both {s0.resolve()} and "
                                  f"{ref.resolve()}; expected one run of each model per policy run")


def test_a_baseline_missing_for_some_seeds_is_refused_with_one_line(tmp_path):
    s0 = _policy_run(tmp_path / "pol-s0", [0, -1])
    s1 = _policy_run(tmp_path / "pol-s1", [0, -1])
    _baseline(s0, [0, 0], epoch=10)     # seed 1 has no SASRec-50: a mean over seed 0 alone is not paired
    out = _table(str(s0), str(s1))
    assert out.returncode != 0 and "| sasrec" not in out.stdout
    assert out.stderr.strip() == ("compare_with_baselines: expected 2 runs of each model (one per policy run), "
                                  "got sasrec (history 50): 1")


def test_a_baseline_trained_with_the_seen_mask_is_its_own_row(tmp_path):
    s0 = _policy_run(tmp_path / "pol-s0", [0, 3, -1])
    _baseline(s0, [1, -1, -1], epoch=40)
    masked = tmp_path / "masked-s0"
    _baseline(masked, [1, 2, -1], epoch=30, seen_mask=True)  # baseline.seen_mask: the same model, another row
    out = _table(str(s0), "--baselines-from", str(masked))
    assert out.returncode == 0, out.stderr
    rows = [line for line in out.stdout.splitlines() if line.startswith("| sasrec")]
    assert [r.split(",")[0] for r in rows] == ["| sasrec (history 50)", "| sasrec (history 50"]
    assert "seen mask), best epochs [30]" in rows[1] and "best epochs [40]" in rows[0]


def test_strata_bin_users_by_target_popularity_and_log_length_and_count_wins_by_hand(tmp_path):
    # 4 test users; item 0 is a training target 3 times, item 1 once, item 2 never; log lengths 2, 3, 5, 6
    s0 = _policy_run(tmp_path / "pol-s0", [0, -1, 4, 12])
    _baseline(s0, [-1, 3, 4, -1], epoch=5)
    (s0 / "data").mkdir()
    np.savez(s0 / "data" / "split.npz", train_targets=np.array([0, 0, 0, 1]), item_popularity=np.zeros(3, np.int64),
             test_targets=np.array([0, 0, 2, 1]), test_users=np.array([0, 1, 2, 3]),
             seq_offsets=np.array([0, 2, 5, 10, 16]))
    out = _table(str(s0), "--strata", "--label", "pol")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    pop = lines[lines.index(next(x for x in lines if "target popularity" in x)) + 2:][:3]
    # quantile edges of (3, 3, 0, 1): 0, 0.6, 1.4, 2.6, 3 → bins of users {2}, {3}, {0, 1} (the empty one left out)
    assert pop[0].startswith("| 0–0 | 1 | 1.0000 | 1.0000 | 1.000× | +0 / −0 | 1 |")
    assert pop[1].startswith("| 1–1 | 1 | 0.0000 | 0.0000 | — | +0 / −0 | 1 |")
    assert pop[2] == "| 3–3 | 2 | 0.5000 | 0.5000 | 1.000× | +1 / −1 | 1 |"
    length = lines[lines.index(next(x for x in lines if "user log length" in x)) + 2:]
    assert [x.split(" | ")[0] for x in length] == ["| 2–2", "| 3–3", "| 5–5", "| 6–6"]
    assert length[0] == "| 2–2 | 1 | 1.0000 | 0.0000 | — | +1 / −0 | 1 |"


def test_metrics_names_the_policy_file_and_an_other_policy_may_be_given_as_files(tmp_path):
    # eval/metrics.json is the SFT policy; eval/aligned.json a later `rl-align eval RUN --stage rl:<tag>`
    s0 = _policy_run(tmp_path / "s0", [0, 3, -1, -1])
    m = _metrics([0, 3, 2, -1])
    _write(s0 / "eval" / "aligned.json", {"valid": {"policy": m["policy"]}, "test": m})
    _baseline(s0, [0, -1, -1, -1], epoch=7)
    out = _table(str(s0), "--metrics", "aligned.json", "--label", "aligned",
                 "--other-policy", "SFT", str(s0 / "eval" / "metrics.json"))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "**0.7500" in next(line for line in lines if line.startswith("| **aligned"))     # 3 of 4 users hit
    sft = next(line for line in lines if line.startswith("| SFT"))
    assert "| 0.5000 ± 0.0000 |" in sft and "1.500×" in sft and "+1/−0" in sft       # user 2: aligned only
    assert "+2/−0" in next(line for line in lines if line.startswith("| sasrec"))
    bad = _table(str(s0), "--metrics", "nope.json")
    assert bad.returncode != 0 and bad.stderr.strip().endswith("nope.json: no such metrics file")
