"""Retrieval–validity frontier, ``rl-align analyze frontier RUN [RUN ...]``.

Every finished alignment setting of the given runs (``rl/<tag>`` with ``test_metrics.json``: NLL, GRPO, the
fixed NLL+GRPO mixtures over λ, AdaGRPO at its gate thresholds, preference objectives) and the SFT policy, as one
point each: test HR@10 against the hallucination rate. Free *beam* search hallucinates 0.00% on ML-100K — the
beam keeps the policy's likeliest sequences, which are valid — so the validity axis is free *sampling* at
``eval.free_temperature`` (default T = 1, ``eval.free_samples`` SIDs per user, ``free_sample_hallucination_rate``):
the probability mass the policy puts outside the catalog, which alignment moves. Points on the upper-left
frontier (no other point has higher HR@10 and lower hallucination) are marked.

``mean=True`` pools runs that are seeds of one setup (e.g. 3 SFT seeds): one point per ``rl/<tag>`` finished in
every run, and the SFT policy, each the mean over runs with the standard deviation drawn as error bars.
``sft_eval`` names the ``eval/`` file that holds the SFT point when the run's own ``eval/metrics.json`` scores
another list than alignment moves (a preset served by its item head, aligned on its beam: the file
``rl-align eval RUN --item-head-betas 0 --item-head-union 0`` writes).

Writes ``<first run>/analysis/frontier/frontier_{best,final}.{json,md,png}`` (``frontier_mean_…`` with ``mean``).
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Optional

from rl_align.rl_report import collect
from rl_align.utils.io import read_json, write_json


def label(row: dict) -> str:
    """A setting's short name: algo, λ for mixtures, gate thresholds for AdaGRPO."""
    rl = row.get("rl") or {}
    lam = row.get("lam") if row.get("lam") is not None else 1.0
    if row["algo"] == "mixture":
        return f"mixture λ={lam:g}"
    if row["algo"] == "adagrpo":
        g = rl.get("adagrpo") or {}
        thr = (f"k_d={g.get('k_d')}" if g.get("difficulty", "gt_rank") == "gt_rank" else f"h_d={g.get('h_d')}")
        thr += f", a={g.get('a')}" if g.get("discriminability", "frac_below") == "frac_below" else f", m={g.get('m')}"
        return f"adagrpo λ={lam:g} {thr}"
    return row["algo"]


def points(runs: list[Path], which: str = "best", sft_eval: Optional[str] = None) -> list[dict]:
    """One point per SFT policy and per finished ``rl/<tag>``; ``which``: the best-on-valid or final checkpoint;
    ``sft_eval``: the SFT point's file in ``eval/`` (must exist in every run)."""
    out = []
    for run in runs:
        # the SFT policy: the eval stage's metrics, or a later `rl-align eval RUN` (metrics_sft.json) that has the
        # sampled rate when the stage's predates it
        cands = [p for p in (run / "eval" / "metrics.json", run / "eval" / "metrics_sft.json") if p.exists()]
        if sft_eval is not None:
            if not (run / "eval" / sft_eval).is_file():
                raise FileNotFoundError(f"{run / 'eval' / sft_eval}: no such SFT evaluation (--sft-eval)")
            cands = [run / "eval" / sft_eval]
        tests = [read_json(p).get("test") for p in cands]
        tests = [t for t in tests if t]
        t = next((t for t in tests if t.get("free_sample_hallucination_rate") is not None), tests[0] if tests else None)
        if t is not None:
            out.append({"run": run.name, "tag": "SFT", "algo": "sft", "label": "SFT", "hr@10": t["policy"]["hr@10"],
                        "ndcg@10": t["policy"]["ndcg@10"], "beam_halluc": t["free_hallucination_rate"],
                        "sampled_halluc": t.get("free_sample_hallucination_rate")})
        for row in collect(run):
            row["rl"] = read_json(run / "rl" / row["tag"] / "summary.json").get("rl", {})
            t = row[which]
            name = label(row) + ("" if row["tag"] == row["algo"] else f" [{row['tag']}]")
            out.append({"run": run.name, "tag": row["tag"], "algo": row["algo"], "label": name,
                        "reward": f"{row.get('reward')} scorer={row.get('scorer')}",
                        "hr@10": t["policy"]["hr@10"], "ndcg@10": t["policy"]["ndcg@10"],
                        "beam_halluc": t["free_hallucination_rate"],
                        "sampled_halluc": t.get("free_sample_hallucination_rate")})
    return out


def mean_points(pts: list[dict], n_runs: int) -> list[dict]:
    """One point per tag present in all ``n_runs`` runs: mean and sd over runs of each metric (``<metric>_sd``).

    A tag whose setting (its label: algo, λ, gate thresholds; or its reward) differs between runs is refused: its
    runs are not seeds of one setting."""
    by_tag: dict[str, list[dict]] = {}
    for p in pts:
        by_tag.setdefault(p["tag"], []).append(p)
    out = []
    for tag, ps in by_tag.items():
        if len({p["run"] for p in ps}) < n_runs:
            continue
        kinds = sorted({f"{p['label']}, reward {p.get('reward')}" for p in ps})
        if len(kinds) > 1:
            raise ValueError(f"rl/{tag}: different settings across runs ({'; '.join(kinds)})")
        q = {"run": f"mean of {n_runs}", "tag": tag, "algo": ps[0]["algo"], "label": ps[0]["label"], "n_runs": n_runs}
        for k in ("hr@10", "ndcg@10", "beam_halluc", "sampled_halluc"):
            v = [p[k] for p in ps]
            q[k] = None if None in v else statistics.fmean(v)
            q[k + "_sd"] = None if None in v else statistics.stdev(v) if len(v) > 1 else 0.0
        out.append(q)
    return out


def mark_frontier(pts: list[dict], x: str) -> None:
    """Set ``frontier`` on each point: no other point is at least as good on both axes and better on one."""
    for p in pts:
        p["frontier"] = p[x] is not None and not any(
            q is not p and q[x] is not None and q["hr@10"] >= p["hr@10"] and q[x] <= p[x]
            and (q["hr@10"] > p["hr@10"] or q[x] < p[x]) for q in pts)


def analyze_frontier(runs: list[Path], which: str = "best", out: Optional[Path] = None, mean: bool = False,
                     sft_eval: Optional[str] = None) -> dict:
    """Points, the frontier among them, and the files; ``mean`` pools the runs (seeds) per tag. Returns the json."""
    pts = points(runs, which, sft_eval)
    if mean:
        pts = mean_points(pts, len(runs))
    if not pts:
        raise FileNotFoundError(f"{', '.join(map(str, runs))}: no evaluated SFT policy or finished rl/<tag>"
                                + (" common to every run" if mean else ""))
    x = "sampled_halluc" if all(p["sampled_halluc"] is not None for p in pts) else "beam_halluc"
    mark_frontier(pts, x)
    res = {"runs": [str(r) for r in runs], "checkpoint": which, "validity_axis": x, "mean": mean, "points": pts}
    out = out or runs[0] / "analysis" / "frontier"
    out.mkdir(parents=True, exist_ok=True)
    name = f"frontier_{'mean_' if mean else ''}{which}"
    write_json(out / f"{name}.json", res)
    (out / f"{name}.md").write_text(markdown(res))
    plot(res, out / f"{name}.png")
    return res


def markdown(res: dict) -> str:
    axis = ("free sampling hallucination" if res["validity_axis"] == "sampled_halluc"
            else "free beam hallucination (sampled rate not measured for every point)")
    pooled = " (mean ± sd over the runs)" if res.get("mean") else ""
    lines = [f"# Retrieval–validity frontier ({res['checkpoint']} checkpoints, test{pooled})", "",
             f"Validity axis: {axis}. ★ = on the frontier.", "",
             "| run | setting | HR@10 | NDCG@10 | sampled halluc. | beam halluc. | frontier |",
             "|---|---|---:|---:|---:|---:|:-:|"]

    def cell(p: dict, k: str, fmt: str) -> str:
        if p[k] is None:
            return "–"
        sd = p.get(k + "_sd")
        return format(p[k], fmt) + (f" ± {format(sd, fmt)}" if sd is not None else "")

    for p in sorted(res["points"], key=lambda p: (p["run"], -p["hr@10"])):
        lines.append(f"| {p['run']} | {p['label']} | {cell(p, 'hr@10', '.4f')} | {cell(p, 'ndcg@10', '.4f')} | "
                     f"{cell(p, 'sampled_halluc', '.2%')} | {cell(p, 'beam_halluc', '.2%')} | "
                     f"{'★' if p['frontier'] else ''} |")
    return "\n".join(lines) + "\n"


def short_label(label: str, algo: str) -> str:
    """A point's annotation: its label without the leading algo name (the legend has it); the tag is kept whole."""
    return label[len(algo):].strip() if label.startswith(algo) and label != algo else label


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = res["validity_axis"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    algos = sorted({p["algo"] for p in res["points"]})
    for a in algos:
        ps = [p for p in res["points"] if p["algo"] == a]
        sc = ax.scatter([100 * p[x] for p in ps], [p["hr@10"] for p in ps], label=a, s=36,
                        marker="*" if a == "sft" else "o")
        if res.get("mean"):   # error bars: the sd over runs on both axes
            ax.errorbar([100 * p[x] for p in ps], [p["hr@10"] for p in ps], fmt="none", lw=0.7,
                        xerr=[100 * p[x + "_sd"] for p in ps], yerr=[p["hr@10_sd"] for p in ps],
                        ecolor=sc.get_facecolor()[0])
        for p in ps:
            ax.annotate(short_label(p["label"], a), (100 * p[x], p["hr@10"]), fontsize=6,
                        xytext=(3, 3), textcoords="offset points")
    front = sorted((p for p in res["points"] if p["frontier"]), key=lambda p: p[x])
    ax.plot([100 * p[x] for p in front], [p["hr@10"] for p in front], "k--", lw=0.8, label="frontier")
    ax.set_xlabel("hallucination, %" + (" (free sampling)" if x == "sampled_halluc" else " (free beams)"))
    ax.set_ylabel("test HR@10")
    ax.legend(fontsize=7)
    ax.set_title(f"Retrieval vs validity ({res['checkpoint']} checkpoints)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
