"""experiments/i17_table.py: alignment runs read from sibling run dirs of the same SFT policies (``--tag-from``).

Fake run dirs hold the files the pipeline writes (SFT's eval, each alignment tag's summary and test metrics); the
table's won / lost counts are checked against the per-user ranks, and a sibling whose split or SFT checkpoint differs
by one byte is refused.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "i17_table.py"


def _test(ranks: list[int]) -> dict:
    hr = sum(0 <= r < 10 for r in ranks) / len(ranks)
    return {"target_rank": ranks, "policy": {"hr@10": hr, "ndcg@10": hr / 2}, "free_sample_hallucination_rate": 0.01}


def _write(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(obj) if isinstance(obj, bytes) else path.write_text(json.dumps(obj))


def _run(root: Path, name: str, sft: list[int], tags: dict[str, list[int]], split: bytes = b"split",
         weights: bytes = b"weights") -> Path:
    run = root / name
    _write(run / "data" / "split.npz", split)
    _write(run / "sft" / "best_policy" / "model.safetensors", weights)
    _write(run / "eval" / "metrics.json", {"valid": {"policy": {"hr@10": 0.2}}, "test": _test(sft)})
    for tag, ranks in tags.items():
        summary = {"rl": {}, "best_valid_hr@10": 0.25, "evals": [{"valid_hr@10": 0.24}]}
        _write(run / "rl" / tag / "summary.json", summary)
        _write(run / "rl" / tag / "test_metrics.json", {k: {"test": _test(ranks)} for k in ("rl", "rl-final")})
    return run


def _table(*args: str | Path) -> subprocess.CompletedProcess:
    """The script on fake runs (no ranker/: its reward-ceiling table is left out)."""
    cmd = [sys.executable, str(SCRIPT), *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)


def test_tag_from_pairs_a_sibling_runs_tag_with_the_runs_own_and_refuses_another_start(tmp_path):
    sft = [0, 20, 20, 20, 5, 20]
    runs = [_run(tmp_path, f"a-s{s}", sft, {"mine": [0, 1, 20, 20, 5, 20]}) for s in range(2)]
    # the sibling's tag wins users 1 and 2 of each seed against SFT and user 2 against "mine"; loses user 4
    others = [_run(tmp_path, f"b-s{s}", sft, {"theirs": [0, 1, 2, 20, 30, 20]}) for s in range(2)]
    out = _table(*runs, "--tags", "theirs", "mine", "--tag-from", "theirs", *others)
    assert out.returncode == 0, out.stderr
    rows = {(c[0], c[1]): c for c in (ln[2:-2].split(" | ") for ln in out.stdout.splitlines() if ln.startswith("| "))}
    theirs = rows[("theirs", "best on valid")]
    assert theirs[-2] == "+4 / −2, p 0.688"   # against SFT: users 1, 2 won, user 4 lost, two seeds
    assert theirs[-1] == "+2 / −2, p 1"   # against "mine": user 2 won, user 4 lost
    assert rows[("mine", "best on valid")][-2] == "+2 / −0, p 0.5"

    bad = _run(tmp_path, "c-s1", sft, {"theirs": [0] * 6}, weights=b"weightz")
    out = _table(*runs, "--tags", "theirs", "--tag-from", "theirs", others[0], bad)
    assert out.returncode == 2 and "c-s1/sft/best_policy/model.safetensors" in out.stderr
    bad = _run(tmp_path, "d-s1", sft, {"theirs": [0] * 6}, split=b"other")
    out = _table(*runs, "--tags", "theirs", "--tag-from", "theirs", others[0], bad)
    assert out.returncode == 2 and "d-s1/data/split.npz" in out.stderr
    out = _table(*runs, "--tags", "theirs", "--tag-from", "theirs", others[0])
    assert out.returncode == 2 and "expected 2 run dirs" in out.stderr
    out = _table(*runs, "--tags", "mine", "--tag-from", "theirs", *others)
    assert out.returncode == 2 and "'theirs' is not one of --tags" in out.stderr
    assert "Traceback" not in out.stderr


def test_a_tag_or_sft_evaluation_that_is_not_there_is_refused_in_one_line(tmp_path):
    runs = [_run(tmp_path, f"a-s{s}", [0, 20], {"done": [0, 1]}) for s in range(2)]
    (runs[1] / "rl" / "done" / "test_metrics.json").unlink()          # seed 1 still running
    out = _table(*runs, "--tags", "done")
    assert out.returncode == 2 and "a-s1/rl/done/test_metrics.json: missing" in out.stderr
    out = _table(*runs[:1], "--tags", "done", "--sft-eval", "beam.json")
    assert out.returncode == 2 and "a-s0/eval/beam.json: missing" in out.stderr
    assert "Traceback" not in out.stderr and _table(*runs[:1], "--tags", "done").returncode == 0


def test_rl_seeds_pool_each_tags_replicates_and_compare_per_user_mean_hits(tmp_path):
    """``--rl-seeds=-r1``: a tag's row averages it with its ``-r1`` replicate; with more than one run on a side the
    paired test compares per-user mean hits (Wilcoxon signed-rank, p_W) and counts users whose mean rose / fell; a
    tag without a replicate keeps its own figures, and without the option the table is the old one."""
    from scipy.stats import wilcoxon

    sft = [20, 20, 20, 20, 0, 20, 20, 20]
    runs = [_run(tmp_path, f"a-s{s}", sft, {"g": [0, 0, 1, 20, 0, 20, 20, 20], "g-r1": [0, 20, 1, 2, 0, 3, 20, 20],
                                            "m": [0, 20, 20, 20, 20, 20, 20, 20]}) for s in range(2)]
    out = _table(*runs, "--tags", "m", "g", "--rl-seeds=-r1")
    assert out.returncode == 0, out.stderr
    rows = {(c[0], c[1]): c for c in (ln[2:-2].split(" | ") for ln in out.stdout.splitlines() if ln.startswith("| "))}
    g = rows[("g + -r1", "best on valid")]
    assert g[3] == "0.5625 ± 0.0722" and g[4] == "4.500×"     # 4 and 5 hits of 8 per run, SFT 1 of 8
    # per user, g's mean hit minus SFT's: +1, +0.5, +1, +0.5, 0, +0.5, 0, 0 on each seed
    assert g[-2] == f"+10 / −0, p_W {wilcoxon([1, .5, 1, .5, .5] * 2).pvalue:.3g}"
    m = rows[("m", "best on valid")]
    # m (one run: user 0) minus g's mean hit (1, .5, 1, .5, 1, .5, 0, 0): users 1–5 fell on each seed
    assert m[-1] == f"+0 / −10, p_W {wilcoxon([-.5, -1, -.5, -1, -.5] * 2).pvalue:.3g}" and m[3] == "0.1250 ± 0.0000"
    plain = _table(*runs, "--tags", "m", "g")
    assert plain.returncode == 0 and "p_W" not in plain.stdout and "+ -r1" not in plain.stdout
    (runs[1] / "rl" / "g-r1" / "test_metrics.json").unlink()   # a replicate still running at one seed
    out = _table(*runs, "--tags", "g", "--rl-seeds=-r1")
    assert out.returncode == 2 and "a-s1/rl/g-r1/test_metrics.json: missing" in out.stderr
