"""The alignment section of the run report: one row per rl/<tag> against SFT, and the curves plot."""

import json

from rl_align.rl_report import collect, section


def _metrics(hr, ndcg, hall):
    return {"test": {"n_users": 10, "policy": {"hr@10": hr, "ndcg@10": ndcg}, "free_hallucination_rate": hall}}


def _tag(run, tag, algo, lam, best, final, evals):
    d = run / "rl" / tag
    d.mkdir(parents=True)
    (d / "summary.json").write_text(json.dumps({
        "algo": algo, "steps": evals[-1][0], "best_step": max(evals, key=lambda e: e[1])[0],
        "evals": [{"step": s, "valid_hr@10": h, "valid_free_hallucination": 0.01} for s, h in evals],
        "rl": {"lam": lam, "seed": 0, "rollout_mode": "sample"}, "reward": {"functions": {"ranker": 1.0}}}))
    (d / "test_metrics.json").write_text(json.dumps({"rl": _metrics(best, best / 2, 0.0),
                                                     "rl-final": _metrics(final, final / 2, 0.0)}))
    (d / "metrics.jsonl").write_text("\n".join(json.dumps({"step": i, "step_s": 2.0 + i, "admission_rate": 0.5})
                                               for i in (1, 2, 3)))


def test_alignment_section_compares_every_tag_with_sft(tmp_path):
    run = tmp_path / "run"
    (run / "eval").mkdir(parents=True)
    (run / "eval" / "metrics.json").write_text(json.dumps(_metrics(0.10, 0.05, 0.02)))
    _tag(run, "adagrpo", "adagrpo", 1.0, 0.12, 0.11, [(0, 0.1), (10, 0.13), (20, 0.12)])
    _tag(run, "grpo", "grpo", 1.0, 0.09, 0.08, [(0, 0.1), (10, 0.09), (20, 0.08)])
    (run / "rl" / "unfinished").mkdir()           # no summary yet: left out
    rows = collect(run)
    assert [r["tag"] for r in rows] == ["adagrpo", "grpo"]
    assert rows[0]["step_s"] == 4.0 and rows[0]["best_step"] == 10
    text = "\n".join(section(run))
    assert "| SFT | nll |" in text
    assert "0.1200 (1.200×)" in text and "0.1100 (1.100×)" in text and "0.0900 (0.900×)" in text
    assert "| grpo | grpo | – |" in text          # λ only for mixture / adagrpo
    png = run / "report" / "rl_curves.png"
    assert png.exists() and png.read_bytes()[:4] == b"\x89PNG"
    assert "](report/rl_curves.png)" in text


def test_no_alignment_section_without_finished_tags(tmp_path):
    assert section(tmp_path) == []


def test_paired_table_when_per_user_ranks_are_stored(tmp_path):
    run = tmp_path / "run"
    (run / "eval").mkdir(parents=True)
    sft = _metrics(0.3, 0.1, 0.0)
    sft["test"]["target_rank"] = [0, 1, 2, -1, -1, -1, -1, -1, -1, -1]          # SFT hits users 0-2
    (run / "eval" / "metrics.json").write_text(json.dumps(sft))
    _tag(run, "adagrpo", "adagrpo", 1.0, 0.4, 0.3, [(0, 0.1), (10, 0.13)])
    d = run / "rl" / "adagrpo"
    tm = json.loads((d / "test_metrics.json").read_text())
    tm["rl"]["test"]["target_rank"] = [0, 15, 2, 4, 5, -1, -1, -1, -1, -1]      # +users 3, 4; −user 1 (rank 15)
    tm["rl-final"]["test"]["target_rank"] = sft["test"]["target_rank"]
    (d / "test_metrics.json").write_text(json.dumps(tm))
    _tag(run, "old", "grpo", 1.0, 0.2, 0.2, [(0, 0.1), (10, 0.09)])              # evaluated before ranks: no row
    text = "\n".join(section(run))
    assert "Paired against SFT on the same 10 test users" in text
    assert "| adagrpo | 1.333× [" in text and "| +2 / −1 | 1.000 | 1.000× [1.000, 1.000] | +0 / −0 | 1.000 |" in text
    assert "| old |" not in text.split("Paired against SFT")[1]
