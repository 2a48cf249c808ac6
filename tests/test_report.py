"""The run report's baseline rows carry the paired test of the SID policy against each baseline."""

import json

from rl_align.eval.significance import mcnemar_exact
from rl_align.report import _baseline_rows


def _baseline(tmp_path, ranks: list[int]) -> None:
    d = tmp_path / "baselines" / "sasrec"
    d.mkdir(parents=True)
    hr = sum(0 <= r < 10 for r in ranks) / len(ranks)
    (d / "metrics.json").write_text(json.dumps({
        "model": "sasrec", "max_len": 50, "best_epoch": 7,
        "test": {"policy": {"hr@10": hr, "ndcg@10": 0.1}, "target_rank": ranks}}))


def test_baseline_row_pairs_the_policy_with_the_baseline_on_the_same_users(tmp_path):
    # users 0-2 hit by both, 3-6 only by the policy, 7 only by the baseline, 8-9 by neither
    base = [0, 1, 2, 40, -1, 15, 30, 3, -1, 50]
    policy = [1, 0, 9, 2, 4, 0, 8, 12, -1, 11]
    _baseline(tmp_path, base)
    row = _baseline_rows(tmp_path, "test", ["hr@10"], policy)[0]
    assert row.startswith("| sasrec (item IDs, history 50, best epoch 7) | 0.4000 |")
    assert f"| 1.750× (+4 / −1, p {mcnemar_exact(4, 1):.2g}) |" in row  # 7 hits against 4


def test_baseline_row_without_comparable_ranks_says_so(tmp_path):
    _baseline(tmp_path, [0, 1, -1])
    assert _baseline_rows(tmp_path, "test", ["hr@10"], None)[0].endswith("| — |")
    assert _baseline_rows(tmp_path, "test", ["hr@10"], [0, 1])[0].endswith("| — |")  # other users
    assert _baseline_rows(tmp_path, "valid", ["hr@10"], [0, 1, 2]) == []  # no valid figures: no row


def test_baseline_that_hits_nobody_has_no_ratio(tmp_path):
    _baseline(tmp_path, [-1, 20, 11])
    assert _baseline_rows(tmp_path, "test", ["hr@10"], [0, -1, 3])[0].endswith(
        f"| — (+2 / −0, p {mcnemar_exact(2, 0):.2g}) |")
