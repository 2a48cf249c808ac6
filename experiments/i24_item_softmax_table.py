"""The table of experiments/i24_item_softmax_probe.py runs: each scorer's checkpoint chosen on valid, paired on test.

For every scorer of a probe (the beam, the dense head, each fused or union β) the epoch with the best valid NDCG@10
is taken (the SFT stage's rule); the fused and union rows also choose β on valid ("fused*", "union*"). Test HR@10
is paired per seed with the control's beam (``--control``, the same seeds in the same order) and pooled by exact
McNemar.

    python experiments/i24_item_softmax_table.py runs/probe-w0.5p-s{0,1,2}.json --control runs/probe-w0-s{0,1,2}.json

``--reference runs/i24-w64base-s{0,1,2}/baselines/sasrec/metrics.json`` adds each row's ratio to that baseline's
test HR@10 / NDCG@10 and the pooled paired test against it (the same users, in the same order).
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from rl_align.eval.significance import mcnemar_exact


def pick(epochs: list[dict], names: list[str]) -> tuple[dict, str]:
    """The (epoch record, scorer name) among ``names`` with the best valid NDCG@10."""
    cands = [(r, n) for r in epochs for n in names if f"valid/{n}" in r]
    return max(cands, key=lambda rn: rn[0][f"valid/{rn[1]}"]["ndcg@10"])


def hits(rec: dict, name: str) -> np.ndarray:
    r = np.asarray(rec[f"test/{name}"]["ranks"])
    return (r >= 0) & (r < 10)


def reference_cells(chosen: list[tuple[dict, str]], ref: list[dict]) -> str:
    """`` ratio HR / NDCG | +won/−lost, pooled p |`` of the chosen scorers against a baseline's test results."""
    hr = np.mean([rec[f"test/{n}"]["hr@10"] for rec, n in chosen]) / np.mean([r["policy"]["hr@10"] for r in ref])
    nd = np.mean([rec[f"test/{n}"]["ndcg@10"] for rec, n in chosen]) / np.mean([r["policy"]["ndcg@10"] for r in ref])
    won = lost = 0
    for (rec, n), r in zip(chosen, ref):
        rr = np.asarray(r["target_rank"])
        b = (rr >= 0) & (rr < 10)
        won += int((hits(rec, n) & ~b).sum())
        lost += int((b & ~hits(rec, n)).sum())
    return f" {hr:.3f}× / {nd:.3f}× | +{won}/−{lost}, p {mcnemar_exact(won, lost):.2g} |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("probes", nargs="+", help="probe JSONs, one per seed")
    ap.add_argument("--control", nargs="+", required=True, help="the --weight 0 probe JSONs of the same seeds")
    ap.add_argument("--reference", nargs="*", default=[], help="a baseline's metrics.json per seed (e.g. SASRec-50)")
    a = ap.parse_args()
    if len(a.control) != len(a.probes):
        raise SystemExit(f"--control: expected {len(a.probes)} files (one per probe), got {len(a.control)}")
    runs = [json.load(open(p))["epochs"] for p in a.probes]
    ctrl = [pick(json.load(open(p))["epochs"], ["beam"])[0] for p in a.control]
    names = [k.split("/", 1)[1] for k in runs[0][-1] if k.startswith("valid/")]
    fused = [n for n in names if n.startswith("fused")]
    union = [n for n in names if n.startswith("union")]
    ref = [json.load(open(p))["test"] for p in a.reference]
    print("| scorer | chosen (epoch, per seed) | valid HR@10 | test HR@10 | test NDCG@10 | vs control beam: +/− per "
          "seed | pooled p |" + (" × reference HR@10 / NDCG@10 | vs reference: +/−, pooled p |" if ref else ""))
    print("|---|---|---|---|---|---|---|" + ("---|---|" if ref else ""))
    rows = [("control: beam", [(c, "beam") for c in ctrl], False)]
    rows += [(n, [pick(r, [n]) for r in runs], True) for n in names if not n.startswith(("fused", "union"))]
    rows += [(n, [pick(r, [n]) for r in runs], True) for n in fused + union]
    rows += [("fused*, β chosen on valid", [pick(r, fused) for r in runs], True)] if fused else []
    rows += [("union*, β chosen on valid", [pick(r, union) for r in runs], True)] if union else []
    for label, chosen, paired in rows:
        v = np.mean([rec[f"valid/{n}"]["hr@10"] for rec, n in chosen])
        t = [rec[f"test/{n}"]["hr@10"] for rec, n in chosen]
        nd = np.mean([rec[f"test/{n}"]["ndcg@10"] for rec, n in chosen])
        where = ", ".join(f"{rec['epoch']}" + (f" {n}" if label.endswith("on valid") else "") for rec, n in chosen)
        pairs = ""
        p = ""
        if paired:
            wl = [(int((hits(rec, n) & ~hits(c, "beam")).sum()), int((hits(c, "beam") & ~hits(rec, n)).sum()))
                  for (rec, n), c in zip(chosen, ctrl)]
            pairs = ", ".join(f"+{w}/−{lo}" for w, lo in wl)
            p = f"{mcnemar_exact(sum(w for w, _ in wl), sum(lo for _, lo in wl)):.2g}"
        print(f"| {label} | {where} | {v:.4f} | {np.mean(t):.4f} ± {np.std(t, ddof=1) if len(t) > 1 else 0:.4f} "
              f"| {nd:.4f} | {pairs} | {p} |" + (reference_cells(chosen, ref) if ref else ""))


if __name__ == "__main__":
    main()
