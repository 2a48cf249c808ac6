"""The stratified analysis' binning and per-stratum aggregation (pure numpy; the Ray run is in test_rl_ray)."""

import numpy as np
import pytest

from rl_align.analysis.strata import cells, quantile_bins


def test_quantile_bins_merge_ties_and_put_nan_last():
    v = np.array([1, 1, 1, 1, 2, 3, 5, 9, np.nan, np.nan], float)
    b, labels = quantile_bins(v, 3)
    assert labels[-1] == "n/a" and (b[-2:] == len(labels) - 1).all()
    fin = b[:8]
    assert (np.diff(fin) >= 0).all()                     # monotone in the value
    assert len(set(fin[:4].tolist())) == 1               # tied values share a bin
    assert sorted(set(b.tolist())) == list(range(len(labels)))   # no empty bin


def test_quantile_bins_constant_and_all_nan():
    b, labels = quantile_bins(np.full(5, 0.5), 4)
    assert (b == 0).all() and labels == ["0.5"]
    b, labels = quantile_bins(np.full(3, np.nan), 4)
    assert (b == 0).all() and labels == ["n/a"]


def test_cells_count_every_prompt_once_and_average_within():
    rng = np.random.default_rng(0)
    d, c = rng.integers(0, 3, 200), rng.integers(0, 2, 200)
    x = rng.normal(size=200)
    out = cells(d, c, {"x": x})
    assert sum(o["n"] for o in out) == 200
    for o in out:
        sel = (d == o["difficulty_bin"]) & (c == o["disc_bin"])
        assert o["n"] == sel.sum() and np.isclose(o["x"], x[sel].mean())


def test_frontier_marks_only_undominated_points():
    from rl_align.analysis.frontier import mark_frontier

    pts = [{"hr@10": 0.20, "x": 0.10}, {"hr@10": 0.22, "x": 0.12}, {"hr@10": 0.19, "x": 0.12},
           {"hr@10": 0.21, "x": 0.05}, {"hr@10": 0.18, "x": None}]
    mark_frontier(pts, "x")
    assert [p["frontier"] for p in pts] == [False, True, False, True, False]


def test_frontier_labels_name_the_setting():
    from rl_align.analysis.frontier import label

    assert label({"algo": "mixture", "lam": 0.25}) == "mixture λ=0.25"
    row = {"algo": "adagrpo", "lam": 1.0, "rl": {"adagrpo": {"difficulty": "gt_rank", "k_d": 2,
                                                             "discriminability": "margin", "m": 0.1}}}
    assert label(row) == "adagrpo λ=1 k_d=2, m=0.1"


def test_frontier_annotations_drop_only_the_leading_algo_name():
    from rl_align.analysis.frontier import short_label

    assert short_label("mixture λ=1 [masked-mixture-lam1]", "mixture") == "λ=1 [masked-mixture-lam1]"
    assert short_label("nll [masked-nll]", "nll") == "[masked-nll]" and short_label("nll", "nll") == "nll"


def test_a_mass_point_gets_its_own_bin():
    """gt_rank is G + 1 for most prompts (y* outside the beam): that value must not swallow the others."""
    v = np.array([9] * 70 + [1] * 10 + [2] * 10 + [5] * 10, float)
    b, labels = quantile_bins(v, 3)
    assert labels == ["[1, 9)", "9"]
    assert (b[:70] == 1).all() and (b[70:] == 0).all()


def _pt(run: str, tag: str, hr: float, halluc: float, label: str = "") -> dict:
    return {"run": run, "tag": tag, "algo": tag.split("-")[0], "label": label or tag, "hr@10": hr,
            "ndcg@10": hr / 2, "beam_halluc": 0.0, "sampled_halluc": halluc}


def test_frontier_mean_pools_each_tag_over_every_run_and_drops_or_refuses_the_rest():
    import pytest

    from rl_align.analysis.frontier import mean_points

    pts = [_pt("s0", "nll", 0.20, 0.06), _pt("s1", "nll", 0.22, 0.05), _pt("s2", "nll", 0.24, 0.07),
           _pt("s0", "grpo", 0.30, 0.01), _pt("s1", "grpo", 0.10, 0.02)]          # grpo did not finish on s2
    out = mean_points(pts, 3)
    assert [p["tag"] for p in out] == ["nll"]
    (m,) = out
    assert m["run"] == "mean of 3" and m["n_runs"] == 3
    assert np.isclose(m["hr@10"], 0.22) and np.isclose(m["hr@10_sd"], 0.02)        # sd with n − 1 by hand
    assert np.isclose(m["ndcg@10"], 0.11) and np.isclose(m["sampled_halluc"], 0.06)
    assert np.isclose(m["sampled_halluc_sd"], 0.01) and m["beam_halluc_sd"] == 0.0
    pts[1]["label"] = "nll λ=2"                                                      # not seeds of one setting
    with pytest.raises(ValueError, match="rl/nll: different settings across runs"):
        mean_points(pts, 3)
    pts[1]["label"] = "nll"
    pts[2]["reward"] = "{'ranker': 1.0} scorer=din"                                   # another reward, one tag
    with pytest.raises(ValueError, match="scorer=din"):
        mean_points(pts, 3)


def test_frontier_reads_the_sft_point_from_the_named_eval_file(tmp_path):
    import json

    import pytest

    from rl_align.analysis.frontier import analyze_frontier, points

    def metrics(hr: float) -> dict:
        return {"test": {"policy": {"hr@10": hr, "ndcg@10": hr / 2}, "free_hallucination_rate": 0.0,
                         "free_sample_hallucination_rate": 0.05}}

    runs = []
    for i, (head, beam) in enumerate([(0.23, 0.19), (0.25, 0.21)]):
        ev = tmp_path / f"s{i}" / "eval"
        ev.mkdir(parents=True)
        (ev / "metrics.json").write_text(json.dumps(metrics(head)))                  # the item head's list
        (ev / "beam.json").write_text(json.dumps(metrics(beam)))                     # the beam alignment moves
        runs.append(ev.parent)
    assert [p["hr@10"] for p in points(runs)] == [0.23, 0.25]
    assert [p["hr@10"] for p in points(runs, sft_eval="beam.json")] == [0.19, 0.21]
    res = analyze_frontier(runs, mean=True, sft_eval="beam.json")
    assert len(res["points"]) == 1 and np.isclose(res["points"][0]["hr@10"], 0.20)
    assert (runs[0] / "analysis" / "frontier" / "frontier_mean_best.png").stat().st_size > 0
    assert "0.2000 ± 0.0141" in (runs[0] / "analysis" / "frontier" / "frontier_mean_best.md").read_text()
    with pytest.raises(FileNotFoundError, match="no such SFT evaluation"):
        points(runs, sft_eval="missing.json")


def test_fault_segments_split_prompts_by_faulty_users_and_by_the_gate_by_hand():
    from rl_align.analysis.strata import fault_segments

    bad = np.array([True, True, True, False, False])
    gate = np.array([True, False, False, True, True])
    v = {"dlogp_grpo": np.array([1.0, 2.0, 4.0, -1.0, 3.0])}
    s = fault_segments(bad, gate, v)
    assert s["faulty"]["prompts"] == 3 and s["faulty"]["admitted"] == pytest.approx(1 / 3)
    assert s["faulty"]["all"]["dlogp_grpo"] == pytest.approx(7 / 3)
    assert s["faulty"]["gate_on"]["dlogp_grpo"] == 1.0 and s["faulty"]["gate_off"]["dlogp_grpo"] == 3.0
    assert s["healthy"]["admitted"] == 1.0 and s["healthy"]["gate_off"]["dlogp_grpo"] is None   # nothing refused
