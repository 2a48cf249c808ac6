"""Issue 19's table: SFT, DPO, S-DPO, RAD-DPO and its ablations on test, 3-seed means, paired tests on the same users.

Reads each run's ``eval/metrics.json`` (the SFT policy) and ``rl/<tag>/test_metrics.json`` (the best-on-valid
checkpoint of each method; ``--final`` for the last one). Per method: test HR@10 / NDCG@10 (mean ± sd over the seeds
that have it), free-decoding hallucination, and pooled paired McNemar tests (users of all seeds) against SFT and
against S-DPO.

    python experiments/dpo_table.py runs/i19-s{0,1,2} [--final] [--markdown]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from rl_align.eval.significance import mcnemar_exact

TAGS = ["dpo", "sdpo", "rad_dpo", "rad_dpo-no-tlgd", "rad_dpo-no-rdrw", "rad_dpo-no-mlgc", "rad_dpo-no-sft"]


def load(run: Path, tag: str, final: bool) -> dict | None:
    """Test metrics and per-user ranks of ``tag`` in ``run`` ('sft' = the SFT policy), or None."""
    if tag == "sft":
        p = run / "eval" / "metrics.json"
        return json.loads(p.read_text())["test"] if p.exists() else None
    p = run / "rl" / tag / "test_metrics.json"
    return json.loads(p.read_text())["rl-final" if final else "rl"]["test"] if p.exists() else None


def paired(a: list, b: list) -> tuple[int, int, float]:
    """Users (pooled over seeds) only B hits @10, only A hits, exact McNemar p."""
    ra, rb = np.concatenate(a), np.concatenate(b)
    ha, hb = (ra >= 0) & (ra < 10), (rb >= 0) & (rb < 10)
    w, l_ = int((hb & ~ha).sum()), int((ha & ~hb).sum())
    return w, l_, mcnemar_exact(w, l_)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--final", action="store_true", help="the final checkpoint instead of the best on valid")
    args = ap.parse_args(argv)
    rows = []
    base = {tag: {r: load(r, tag, args.final) for r in args.runs} for tag in ["sft", "sdpo"]}
    for tag in ["sft", *TAGS]:
        res = {r: load(r, tag, args.final) for r in args.runs}
        have = [r for r, m in res.items() if m is not None]
        if not have:
            continue
        hr = np.array([res[r]["policy"]["hr@10"] for r in have])
        nd = np.array([res[r]["policy"]["ndcg@10"] for r in have])
        hal = np.mean([res[r]["free_hallucination_rate"] for r in have])
        cells = [tag, str(len(have)), f"{hr.mean():.4f} ± {hr.std(ddof=1) if hr.size > 1 else 0:.4f}",
                 f"{nd.mean():.4f} ± {nd.std(ddof=1) if nd.size > 1 else 0:.4f}", f"{100 * hal:.2f}%"]
        for ref in ("sft", "sdpo"):
            both = [r for r in have if base[ref][r] is not None]
            if tag == ref or not both:
                cells.append("—")
                continue
            ratio = hr[[have.index(r) for r in both]].mean() / np.mean([base[ref][r]["policy"]["hr@10"] for r in both])
            w, l_, p = paired([base[ref][r]["target_rank"] for r in both], [res[r]["target_rank"] for r in both])
            cells.append(f"{ratio:.3f}× (+{w}/−{l_}, p {p:.3f})")
        rows.append(cells)
    head = ["method", "seeds", "test HR@10", "test NDCG@10", "free halluc.", "vs SFT (HR@10)", "vs S-DPO (HR@10)"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for c in rows:
        print("| " + " | ".join(c) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
