#!/usr/bin/env python
"""The SID policy against the item-ID baselines on the same users: mean ± sd over seeds, and paired tests.

Each RUN_DIR holds `eval/metrics.json` (the SID policy) and, optionally, `baselines/<model>/metrics.json`
(models trained in the same run dir or in `--baselines-from` dirs, matched by position). Per seed, the
policy's and each baseline's per-user test ranks of y* give an exact McNemar p and a bootstrap interval of
the HR@10 ratio; the pooled p adds the discordant users of all seeds.

Usage: python experiments/compare_with_baselines.py RUN_DIR [RUN_DIR ...] [--baselines-from DIR ...]...
       [--other-policy NAME DIR ...]... [--label NAME]  → a Markdown table on stdout

``--baselines-from`` may repeat (e.g. SASRec with a 50-item history in one set of run dirs, with 20 in another);
``--other-policy`` adds another SID policy's runs (e.g. before a change) as a row compared the same way; a DIR that
is a file is read as that run's metrics (e.g. `RUN/eval/metrics_sft_item-head-u50-b0.5,1,2,4,8.json`).
``--metrics FILE`` reads the policy from `RUN/eval/FILE` instead of `eval/metrics.json`: a later `rl-align eval RUN
--stage rl:<tag>` of an aligned policy, for instance.
``--strata`` adds, for each other row, HR@10 of both by quintile of the test target's training popularity (its count
among the training targets) and of the user's log length, read from each policy run's `data/split.npz`: where the
SID policy wins and loses, pooled over seeds, with the users won / lost and the exact McNemar p of each bin.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _stats(vals: list[float]) -> str:
    a = np.array(vals)
    return f"{a.mean():.4f} ± {a.std(ddof=1) if a.size > 1 else 0.0:.4f}"


def _add(rows: dict[str, dict], name: str, m: dict) -> None:
    """Append one run's figures (a ``metrics.json`` of the policy or of a baseline) to row ``name``."""
    e = rows.setdefault(name, {"test": [], "valid": [], "ndcg": [], "ranks": [], "epochs": []})
    e["test"].append(m["test"]["policy"]["hr@10"])
    e["ndcg"].append(m["test"]["policy"]["ndcg@10"])
    e["valid"].append(m["valid"]["policy"]["hr@10"])
    e["ranks"].append(np.array(m["test"]["target_rank"]))
    if "best_epoch" in m:
        e["epochs"].append(m["best_epoch"])


def _policy_metrics(path: Path, name: str = "metrics.json") -> dict:
    """A policy run's metrics: ``path`` itself when it is a file, else ``path/eval/name``; one line if missing."""
    f = path if path.is_file() else path / "eval" / name
    if not f.is_file():
        sys.exit(f"compare_with_baselines: {f}: no such metrics file")
    return json.loads(f.read_text())


def _run_baselines(run: Path, more: list[Path]) -> dict[str, dict]:
    """The baselines one policy run is compared with: ``baselines/*/metrics.json`` of the run dir and of its
    ``--baselines-from`` dirs (a dir named twice counts once), by "model (history L)". Exits with one line when two
    dirs hold the same model, since the table would then not know which of them this seed's run is."""
    found: dict[str, tuple[Path, dict]] = {}
    for d in dict.fromkeys(p.resolve() for p in [run, *more]):
        for f in sorted(d.glob("baselines/*/metrics.json")):
            b = json.loads(f.read_text())
            mask = ", seen mask" if b.get("config", {}).get("seen_mask") else ""  # baseline.seen_mask
            name = f"{b['model']} (history {b['max_len']}{mask})"
            if name in found:
                sys.exit(f"compare_with_baselines: {run}: {name} is in both {found[name][0]} and {d}; "
                         "expected one run of each model per policy run")
            found[name] = (d, b)
    return {name: b for name, (_, b) in found.items()}


def _strata_of(run: Path) -> dict[str, np.ndarray]:
    """(n_test,) values the test users are binned by: their target's count among the training targets and their
    log's length, in the evaluator's user order (``test_users``)."""
    z = np.load(run / "data" / "split.npz", allow_pickle=False)
    pop = np.bincount(z["train_targets"], minlength=int(z["item_popularity"].shape[0]))
    return {"target popularity (training targets)": pop[z["test_targets"]],
            "user log length (events)": np.diff(z["seq_offsets"])[z["test_users"]]}


def _bins(values: np.ndarray, n: int = 5) -> list[tuple[str, np.ndarray]]:
    """Up to ``n`` quantile bins of ``values`` (N,), empty ones left out, each as (label, (N,) bool): the label
    "lo–hi" names the smallest and largest value in the bin. Equal values always share a bin."""
    edges = np.unique(np.quantile(values, np.linspace(0, 1, n + 1)))
    idx = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, max(len(edges) - 2, 0))
    out = []
    for i in np.unique(idx):
        m = idx == i
        out.append((f"{values[m].min():.0f}–{values[m].max():.0f}", m))
    return out


def _hits(ranks: list) -> np.ndarray:
    """(seeds × N,) bool: y* in the top 10, the seeds' per-user ranks concatenated."""
    return np.concatenate([(np.asarray(r) >= 0) & (np.asarray(r) < 10) for r in ranks])


def _print_strata(rows: dict[str, dict], label: str, runs: list[Path]) -> None:
    """Per other row: HR@10 of the policy and of the row by bin, ratio, users won / lost, pooled McNemar p."""
    from rl_align.eval.significance import mcnemar_exact

    strata = [_strata_of(r) for r in runs]
    values = {what: np.concatenate([s[what] for s in strata]) for what in strata[0]}
    a = _hits(rows[label]["ranks"])
    for name, e in rows.items():
        if name == label:
            continue
        b = _hits(e["ranks"])
        for what, vals in values.items():
            print(f"\n| {label} vs {name}: {what} | users × seeds | {label} HR@10 | {name} HR@10 | ratio "
                  "| won / lost | pooled p |\n|---|---|---|---|---|---|---|")
            for lab, m in _bins(vals):
                w, lo = int((a[m] & ~b[m]).sum()), int((b[m] & ~a[m]).sum())
                ratio = f"{a[m].mean() / b[m].mean():.3f}×" if b[m].any() else "—"  # no hit of the row's: no ratio
                print(f"| {lab} | {int(m.sum())} | {a[m].mean():.4f} | {b[m].mean():.4f} | {ratio} "
                      f"| +{w} / −{lo} | {mcnemar_exact(w, lo):.3g} |")


def main() -> None:
    from rl_align.eval.significance import mcnemar_exact, paired_hr

    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--baselines-from", nargs="+", action="append", default=[],
                    help="run dirs holding extra baselines, one per run; repeatable")
    ap.add_argument("--other-policy", nargs="+", action="append", default=[], metavar="NAME DIR",
                    help="another SID policy: a row name then its run dirs, one per run; repeatable")
    ap.add_argument("--label", default="SID policy")
    ap.add_argument("--metrics", default="metrics.json", metavar="FILE",
                    help="the policy's metrics file in each RUN/eval/ (default metrics.json)")
    ap.add_argument("--strata", action="store_true",
                    help="also HR@10 by quintile of target popularity and of user log length (data/split.npz)")
    args = ap.parse_args()
    extra = list(zip(*args.baselines_from)) if args.baselines_from else [()] * len(args.runs)
    rows: dict[str, dict] = {}
    for other in args.other_policy:
        for d in map(Path, other[1:]):
            _add(rows, other[0], _policy_metrics(d))
    for run, more in zip(map(Path, args.runs), extra):
        _add(rows, args.label, _policy_metrics(run, args.metrics))
        for name, b in _run_baselines(run, [Path(x) for x in more]).items():
            _add(rows, name, b)
    pol = rows[args.label]
    uneven = [f"{name}: {len(e['test'])}" for name, e in rows.items() if len(e["test"]) != len(pol["test"])]
    if uneven:  # a mean over another set of seeds than the policy's would not be a paired comparison
        sys.exit(f"compare_with_baselines: expected {len(pol['test'])} runs of each model (one per policy run), "
                 f"got {'; '.join(uneven)}")
    print(f"| model ({len(args.runs)} seeds) | valid HR@10 | test HR@10 | test NDCG@10 | {args.label} ÷ model, HR@10 "
          "/ NDCG@10 | paired per seed (HR@10): users won/lost, McNemar p | pooled p |")
    print("|---|---|---|---|---|---|---|")
    for name, e in rows.items():
        if name == args.label:
            print(f"| **{name}** | {_stats(e['valid'])} | **{_stats(e['test'])}** | {_stats(e['ndcg'])} | | | |")
            continue
        per = [paired_hr(b, a) for a, b in zip(pol["ranks"], e["ranks"])]
        # paired_hr(A = the baseline, B = the policy): wins are users only the policy hits
        cells = "; ".join(f"+{p['wins']}/−{p['losses']}, p {p['p']:.3f}" for p in per)
        pooled = mcnemar_exact(sum(p["wins"] for p in per), sum(p["losses"] for p in per))
        ratio = np.mean(pol["test"]) / np.mean(e["test"])
        nratio = np.mean(pol["ndcg"]) / np.mean(e["ndcg"])
        ep = f", best epochs {e['epochs']}" if e.get("epochs") else ""
        print(f"| {name}{ep} | {_stats(e['valid'])} | {_stats(e['test'])} | {_stats(e['ndcg'])} | "
              f"{ratio:.3f}× / {nratio:.3f}× | {cells} | {pooled:.3g} |")
    if args.strata:
        _print_strata(rows, args.label, [Path(r) for r in args.runs])


if __name__ == "__main__":
    main()
