"""experiments/i22_cold_frontier.py: per tokenizer and cold prior, the seed means of valid / test / cold HR@10 and
the ratios to the first tokenizer at the same point, from fake run dirs holding the metrics files `rl-align eval`
writes; a metrics file without the cold split is refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "i22_cold_frontier.py"


def _metrics(valid: float, test: float, cold: float | None) -> dict:
    m = {"valid": {"policy": {"hr@10": valid}}, "test": {"policy": {"hr@10": test}}}
    if cold is not None:
        m["cold"] = {"policy": {"hr@10": cold}}
    return m


def _run(root: Path, name: str, files: dict[str, dict]) -> str:
    for f, m in files.items():
        p = root / name / "eval" / f
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(m))
    return str(root / name)


def _call(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=ROOT)


def test_the_frontier_table_averages_seeds_and_divides_by_the_first_tokenizer_at_each_point(tmp_path):
    a = [_run(tmp_path, f"a{s}", {"lo.json": _metrics(0.2, 0.2 + s / 100, 0.02), "hi.json": _metrics(0.1, 0.1, 0.2)})
         for s in range(2)]
    b = [_run(tmp_path, f"b{s}", {"lo.json": _metrics(0.2, 0.19, 0.03 + s / 100), "hi.json": _metrics(0.1, 0.12, 0.1)})
         for s in range(2)]
    out = tmp_path / "f.png"
    res = _call("--group", "A", *a, "--group", "B", *b, "--point", "low", "lo.json", "--point", "high", "hi.json",
                "--out", str(out))
    assert res.returncode == 0, res.stderr
    rows = {tuple(c.strip() for c in line.split("|")[1:3]): [c.strip() for c in line.split("|")[3:-1]]
            for line in res.stdout.splitlines() if line.startswith("| A") or line.startswith("| B")}
    assert rows[("A", "low")] == ["0.2000", "0.2050", "0.0200", "1.000× / 1.000×"]
    assert rows[("B", "low")] == ["0.2000", "0.1900", "0.0350", f"{0.19 / 0.205:.3f}× / 1.750×"]
    assert rows[("B", "high")] == ["0.1000", "0.1200", "0.1000", "1.200× / 0.500×"]
    assert out.stat().st_size > 0


def test_a_metrics_file_without_the_cold_split_is_refused(tmp_path):
    r = _run(tmp_path, "a0", {"m.json": _metrics(0.2, 0.2, None)})
    res = _call("--group", "A", r, "--point", "p", "m.json")
    assert res.returncode != 0 and "no cold split" in res.stderr
