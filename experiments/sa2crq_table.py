"""Issue 22 table: tokenizers compared over seeds (code length after resolution, overall / head / tail / cold HR@10,
hallucination), each group against a reference group, with pooled paired McNemar tests on the same users.

    python experiments/sa2crq_table.py --group "RQ-KMeans 3×32" runs/i22-rqk-s{0,1,2} \
        --group "SA²CRQ bucket" runs/i22-bucket-s{0,1,2} [--reference 0] [--json out.json] [--choose]

Every figure comes from each run's ``sids/stats.json`` and ``eval/metrics.json`` (cold expansion as the run's
eval config had it; a RUN may also name another metrics file of the run, ``RUN/eval/metrics_*.json``); the per-user
ranks in ``target_rank`` give the paired tests; cold cases are also compared item by item (the cases of one
held-out item move together: ``rl_align.eval.significance.clustered_sign_test``). Metrics files with a cold-valid
part (``--cold-valid-share``) add its HR@10 as ``cold_valid_hr@10``.

``--choose`` applies issue 22's valid-side rule (docs/results.md, fifty-sixth session) to the groups other than the
reference: keep those whose mean valid HR@10 is ≥ 0.98× the reference's; take the one with the highest
min(valid tail HR@10 ÷ reference's, cold-valid HR@10 ÷ reference's); ties go to the higher valid HR@10.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from rl_align.data.cold import split_as_evaluated
from rl_align.eval.significance import clustered_sign_test, mcnemar_exact


def _run_row(run: Path) -> dict:
    """A run dir (its ``eval/metrics.json``) or one of its metrics files (``RUN/eval/metrics_*.json``, e.g. from
    ``rl-align eval RUN --split all ...``)."""
    metrics = run if run.suffix == ".json" else run / "eval" / "metrics.json"
    run = metrics.parent.parent
    s = json.loads((run / "sids" / "stats.json").read_text())
    m = json.loads(metrics.read_text())
    t, v = m["test"], m["valid"]
    bk = s.get("collisions", {}).get("buckets") or {}
    row = {"len_head": s["mean_code_length_head20"], "len_tail": s["mean_code_length_tail80"],
           "codes": bk.get("n_buckets", s["n_items"]), "valid_hr@10": v["policy"]["hr@10"],
           "test_hr@10": t["policy"]["hr@10"], "test_ndcg@10": t["policy"]["ndcg@10"],
           "head_hr@10": t["policy_buckets"]["head"]["hr@10"], "tail_hr@10": t["policy_buckets"]["tail"]["hr@10"],
           "free_halluc": t["free_hallucination_rate"], "sampled_halluc": t.get("free_sample_hallucination_rate"),
           "valid_tail_hr@10": v["policy_buckets"]["tail"]["hr@10"]}
    ranks = {"test": np.array(t["target_rank"])}
    if "cold" in m:
        row["cold_hr@10"] = m["cold"]["policy"]["hr@10"]
        ranks["cold"] = np.array(m["cold"]["target_rank"])
        ranks["cold_items"] = split_as_evaluated(run, m)["cold_targets"]
    if "cold_valid" in m:
        row["cold_valid_hr@10"] = m["cold_valid"]["policy"]["hr@10"]
    return {"row": row, "ranks": ranks}


def _item_test(runs: list[dict], ref: list[dict]) -> str:
    """Cold cases compared held-out item by held-out item, seeds pooled (clustered sign test), as a table cell."""
    items = [r["ranks"]["cold_items"] for r in runs]
    if not all(np.array_equal(a, r["ranks"]["cold_items"]) for a, r in zip(items, ref)):
        return "items: not the same cold cases"
    hit = [np.concatenate([(r["ranks"]["cold"] >= 0) & (r["ranks"]["cold"] < 10) for r in rs]) for rs in (ref, runs)]
    it = clustered_sign_test(hit[0], hit[1], np.concatenate(items))
    return f"items +{it['wins']}/−{it['losses']}, p {it['p']:.2g}"


def _ms(vals: list) -> str:
    vals = [x for x in vals if x is not None]
    if not vals:
        return "–"
    a = np.asarray(vals, float)
    return f"{a.mean():.4f} ± {a.std(ddof=1):.4f}" if a.size > 1 else f"{a.mean():.4f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--group", nargs="+", action="append", required=True, metavar=("LABEL", "RUN"),
                    help="a label and its run dirs (one per seed, same seeds in every group)")
    ap.add_argument("--reference", type=int, default=0, help="index of the group the others are divided by")
    ap.add_argument("--json", help="also write the table as JSON")
    ap.add_argument("--choose", action="store_true", help="name the group issue 22's valid-side rule picks")
    a = ap.parse_args()
    groups = [(g[0], [_run_row(Path(p)) for p in g[1:]]) for g in a.group]
    ref = groups[a.reference][1]
    cols = ["len_head", "len_tail", "codes", "valid_hr@10", "valid_tail_hr@10", "cold_valid_hr@10", "test_hr@10",
            "test_ndcg@10", "head_hr@10", "tail_hr@10", "cold_hr@10", "free_halluc", "sampled_halluc"]
    print("| tokenizer (seeds) | " + " | ".join(cols) + " | × ref: test / tail / cold HR@10 | pooled paired p "
          "(test; cold; cold item by item) |")
    print("|---" * (len(cols) + 3) + "|")
    out = []
    for label, runs in groups:
        mean = {c: np.mean([r["row"][c] for r in runs if r["row"].get(c) is not None] or [np.nan]) for c in cols}
        rmean = {c: np.mean([r["row"][c] for r in ref if r["row"].get(c) is not None] or [np.nan]) for c in cols}
        ratio = " / ".join(f"{mean[c] / rmean[c]:.3f}×" if rmean[c] else "–"
                           for c in ("test_hr@10", "tail_hr@10", "cold_hr@10"))
        ps = []
        for part in ("test", "cold"):
            w = lo = 0
            for mine, theirs in zip(runs, ref):
                if part not in mine["ranks"] or part not in theirs["ranks"]:
                    continue
                hb = (mine["ranks"][part] >= 0) & (mine["ranks"][part] < 10)
                ha = (theirs["ranks"][part] >= 0) & (theirs["ranks"][part] < 10)
                w, lo = w + int((hb & ~ha).sum()), lo + int((ha & ~hb).sum())
            ps.append(f"+{w}/−{lo}, p {mcnemar_exact(w, lo):.3g}")
        if all("cold_items" in r["ranks"] for r in runs + ref):
            ps.append(_item_test(runs, ref))
        print(f"| {label} ({len(runs)}) | " + " | ".join(_ms([r["row"].get(c) for r in runs]) for c in cols)
              + f" | {ratio} | {'; '.join(ps)} |")
        out.append({"label": label, "runs": [r["row"] for r in runs], "mean": mean})
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1, default=float))
    if a.choose:
        print(_choose(out, a.reference))


def _choose(out: list[dict], reference: int) -> str:
    """The valid-side rule's pick among the groups other than the reference (module doc), as one line."""
    ref = out[reference]["mean"]
    if not np.isfinite(ref["cold_valid_hr@10"]):
        raise SystemExit("--choose: the reference group's metrics files have no cold-valid part (--cold-valid-share)")
    keep = [g for i, g in enumerate(out) if i != reference and g["mean"]["valid_hr@10"] >= 0.98 * ref["valid_hr@10"]]
    if not keep:
        return "choice: no group clears the valid floor"
    score = {g["label"]: min(g["mean"]["valid_tail_hr@10"] / ref["valid_tail_hr@10"],
                             g["mean"]["cold_valid_hr@10"] / ref["cold_valid_hr@10"]) for g in keep}
    best = max(keep, key=lambda g: (round(score[g["label"]], 6), g["mean"]["valid_hr@10"]))
    return ("choice: " + best["label"] + " (min of valid tail and cold-valid ratios "
            + ", ".join(f"{k} {v:.3f}" for k, v in score.items()) + ")")


if __name__ == "__main__":
    main()
