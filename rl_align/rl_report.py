"""The alignment part of a run report: every ``rl/<tag>`` against the SFT policy, as a table and a plot.

For each tag with a ``summary.json`` (written by the controller) and ``test_metrics.json`` (the ``rl`` stage's
test evaluation of the best-on-valid and final policies), one row: algorithm, λ, steps, test HR@10 / NDCG@10
at the best and final checkpoints with the ratio to SFT, free-decoding hallucination, median seconds per step
and mean admission rate. The plot ``report/rl_curves.png`` shows valid HR@10 and free-decoding hallucination
over steps for every tag, SFT's step-0 value as the common start.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Optional

from rl_align.eval.significance import paired_hr
from rl_align.utils.io import read_json


def _halluc(m: dict) -> str:
    """'beam% / sampled%' (sampled: free sampling at T = eval.free_temperature; – when not measured)."""
    s = m.get("free_sample_hallucination_rate")
    return f"{m['free_hallucination_rate']:.2%} / " + (f"{s:.2%}" if s is not None else "–")


def collect(run: Path) -> list[dict]:
    """One dict per finished ``rl/<tag>``: summary, test metrics and per-step medians, sorted by tag."""
    rows = []
    for s in sorted((run / "rl").glob("*/summary.json")) if (run / "rl").exists() else []:
        d = s.parent
        if not (d / "test_metrics.json").exists():
            continue
        summary, test = read_json(s), read_json(d / "test_metrics.json")
        recs = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines() if x.strip()] \
            if (d / "metrics.jsonl").exists() else []
        steps = [r for r in recs if "step_s" in r]
        rl = summary.get("rl", {})
        rows.append({
            "tag": d.name, "algo": summary["algo"], "lam": rl.get("lam"), "steps": summary["steps"],
            "best_step": summary["best_step"], "evals": summary["evals"], "seed": rl.get("seed"),
            "reward": summary.get("reward", {}).get("functions"), "scorer": summary.get("reward", {}).get("scorer"),
            "rollout_mode": (rl.get("rollout_mode") or "") + (" + y*" if rl.get("inject_target") else "") or None,
            "best": test["rl"]["test"], "final": test["rl-final"]["test"],
            "step_s": statistics.median(r["step_s"] for r in steps) if steps else None,
            "admission": statistics.mean(r["admission_rate"] for r in steps if "admission_rate" in r)
            if any("admission_rate" in r for r in steps) else None,
        })
    return rows


def _reward_cell(r: dict) -> str:
    """``ranker 1 (ensemble), exact_match 0.5``: each reward term's weight, the reward model when not DIN."""
    model = f" ({r['scorer']})" if r.get("scorer") not in (None, "din") else ""
    return ", ".join(f"{k} {v:g}" + (model if k == "ranker" else "") for k, v in (r["reward"] or {}).items())


def _ratio(x: float, base: Optional[float]) -> str:
    return f"{x:.4f} ({x / base:.3f}×)" if base else f"{x:.4f}"


def plot(rows: list[dict], path: Path, sft_valid: Optional[float] = None) -> Optional[Path]:
    """Valid HR@10 and free-decoding hallucination over steps, one line per tag → ``path`` (PNG)."""
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(13, 4.5))
    # one colour per tag (20 before repeating) and one line style per objective, so that many variants stay legible
    colours = plt.get_cmap("tab20").colors
    styles = {"adagrpo": "-", "mixture": "-.", "grpo": ":", "nll": "--"}
    for i, r in enumerate(rows):
        st = [e["step"] for e in r["evals"]]
        kw = dict(marker="o", ms=3, color=colours[i % len(colours)], ls=styles.get(r.get("algo"), "-"), label=r["tag"])
        a.plot(st, [e["valid_hr@10"] for e in r["evals"]], **kw)
        b.plot(st, [100 * e["valid_free_hallucination"] for e in r["evals"]], **kw)
    if sft_valid is not None:
        a.axhline(sft_valid, color="k", ls="--", lw=1, label="SFT")
    a.set(xlabel="RL step", ylabel="valid HR@10", title="Valid HR@10 (constrained beam)")
    b.set(xlabel="RL step", ylabel="% invalid SIDs", title="Free-decoding hallucination")
    b.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path


def paired_lines(sft: Optional[dict], rows: list[dict], k: int = 10) -> list[str]:
    """Markdown table: each tag's best and final test HR@k against SFT's, paired over the same users (exact McNemar
    p, bootstrap 95% interval of the ratio). Empty when no tag has per-user ranks (evaluations before they were
    stored)."""

    if not sft or "target_rank" not in sft:
        return []
    out = []
    for r in rows:
        cells = []
        for kind in ("best", "final"):
            ranks = r[kind].get("target_rank")
            if ranks is None or len(ranks) != len(sft["target_rank"]):
                cells = None
                break
            t = paired_hr(sft["target_rank"], ranks, k)
            cells.append(f"{t['ratio']:.3f}× [{t['ci_low']:.3f}, {t['ci_high']:.3f}] | +{t['wins']} / −{t['losses']} "
                         f"| {t['p']:.3f}")
        if cells:
            out.append(f"| {r['tag']} | " + " | ".join(cells) + " |")
    if not out:
        return []
    n = len(sft["target_rank"])
    return [f"Paired against SFT on the same {n} test users (HR@{k}; users hit only by the tag / only by SFT; exact "
            "McNemar p; 95% bootstrap interval of the ratio):", "",
            "| tag | best: ratio [95% CI] | best: +won / −lost | best: p | final: ratio [95% CI] | final: +won / −lost "
            "| final: p |", "|---|---|---|---|---|---|---|", *out, ""]


def section(run: Path) -> list[str]:
    """Markdown lines of the alignment section (empty when no tag has finished)."""
    rows = collect(run)
    if not rows:
        return []
    sft = read_json(run / "eval" / "metrics.json")["test"] if (run / "eval" / "metrics.json").exists() else None
    base = sft["policy"]["hr@10"] if sft else None
    base_n = sft["policy"]["ndcg@10"] if sft else None
    sft_valid = rows[0]["evals"][0]["valid_hr@10"] if rows[0]["evals"] and rows[0]["evals"][0]["step"] == 0 else None
    img = plot(rows, run / "report" / "rl_curves.png", sft_valid)
    lines = ["## Alignment (test, full ranking; best = best valid HR@10 checkpoint)", "",
             "| tag | algo | λ | reward | rollouts | steps (best) | HR@10 best (× SFT) | HR@10 final (× SFT) | "
             "NDCG@10 best (× SFT) | free halluc. (beam / sampled) | s/step | admission |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    if sft:
        lines.append(f"| SFT | nll | – | – | – | – | {base:.4f} | – | {base_n:.4f} | "
                     f"{_halluc(sft)} | – | – |")
    for r in rows:
        rw = _reward_cell(r) if r["algo"] != "nll" else "–"
        lam = f"{r['lam']:g}" if r["algo"] in ("mixture", "adagrpo") and r["lam"] is not None else "–"
        lines.append(
            f"| {r['tag']} | {r['algo']} | {lam} | {rw} | {(r['rollout_mode'] if r['algo'] != 'nll' else None) or '–'} | {r['steps']} ({r['best_step']}) "
            f"| {_ratio(r['best']['policy']['hr@10'], base)} | {_ratio(r['final']['policy']['hr@10'], base)} | "
            f"{_ratio(r['best']['policy']['ndcg@10'], base_n)} | {_halluc(r['best'])} | "
            f"{r['step_s']:.2f} | " + (f"{r['admission']:.0%}" if r["admission"] is not None else "–") + " |")
    lines.append("")
    lines += paired_lines(sft, rows)
    if img is not None:
        lines += [f"![valid HR@10 and hallucination over RL steps]({img.relative_to(run)})", ""]
    return lines
