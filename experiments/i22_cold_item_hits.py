"""Issue 22: how many held-out items carry the cold-start hits. Per metrics file with cold parts (``rl-align eval RUN
--split all --cold-valid-share 0.5 ...``): for the cold and cold-valid parts, the cases, the hits@10, the items hit at
least once, and the share of the hits that the 5 most-hit items take; pooled over the files of a group (seeds).
Then each group against the first, item by item: the held-out items it hits more often / less often (hits summed
over seeds) and the exact sign test over those items, per part and over both. Cases of one item move together (the
same item vectors, the same route), so this item-level test is the honest one for the cold goal; the case-level
McNemar test of sa2crq_table.py treats them as independent.

    python experiments/i22_cold_item_hits.py --group "RQ-KMeans" runs/i22t-rqk-s{0,1,2}/eval/metrics_X.json \
        --group "buckets" runs/i22h-hybrid-s{0,1,2}/eval/metrics_Y.json

The cases' targets come from each run's ``data/split.npz`` split as evaluation split them (``eval.cold_valid_*``
recorded in the metrics file).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np

from rl_align.data.cold import split_cold_valid
from rl_align.eval.significance import mcnemar_exact
from rl_align.utils.io import load_npz


def _hits(metrics: Path) -> dict[str, tuple[int, Counter]]:
    """part → (cases, Counter of target item → hits@10) for one metrics file."""
    m = json.loads(metrics.read_text())
    cv = m.get("cold_valid_split")
    if cv is None:
        raise SystemExit(f"{metrics}: no cold-valid part (evaluate with --cold-valid-share)")
    split = split_cold_valid(load_npz(metrics.parent.parent / "data" / "split.npz"), cv["share"], cv["seed"])
    out = {}
    for part in ("cold_valid", "cold"):
        rank = np.asarray(m[part]["target_rank"])
        hit = (rank >= 0) & (rank < 10)
        out[part] = (rank.size, Counter(split[f"{part}_targets"][hit].tolist()))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--group", nargs="+", action="append", required=True, metavar=("LABEL", "METRICS"))
    a = ap.parse_args()
    print("| group | part | cases | hits@10 | items hit | hits by the 5 most-hit items |")
    print("|---|---|---|---|---|---|")
    for label, *files in a.group:
        per = [_hits(Path(f)) for f in files]
        for part in ("cold_valid", "cold"):
            cases = sum(p[part][0] for p in per)
            c = sum((p[part][1] for p in per), Counter())
            n = sum(c.values())
            top = sum(v for _, v in c.most_common(5))
            print(f"| {label} | {part} | {cases} | {n} | {len(c)} | {top / n:.0%} |" if n else
                  f"| {label} | {part} | {cases} | 0 | 0 | – |")
    if len(a.group) > 1:
        _item_tests(a.group)


def _item_tests(groups: list[list[str]]) -> None:
    """Each group against the first: items hit more / less often, sign-test p, per part and pooled."""
    hits = {g[0]: [_hits(Path(f)) for f in g[1:]] for g in groups}
    total = {k: {part: sum((p[part][1] for p in v), Counter()) for part in ("cold_valid", "cold")}
             for k, v in hits.items()}
    ref = groups[0][0]
    print(f"\n| against {ref}, item by item | cold_valid: more / fewer hits, p | cold: more / fewer, p | "
          "both: more / fewer, p |")
    print("|---|---|---|---|")
    for label in [g[0] for g in groups[1:]]:
        cells, w_all, l_all = [], 0, 0
        for part in ("cold_valid", "cold"):
            mine, theirs = total[label][part], total[ref][part]
            items = set(mine) | set(theirs)
            w = sum(mine[i] > theirs[i] for i in items)
            lo = sum(mine[i] < theirs[i] for i in items)
            w_all, l_all = w_all + w, l_all + lo
            cells.append(f"{w} / {lo}, p {mcnemar_exact(w, lo):.2g}")
        cells.append(f"{w_all} / {l_all}, p {mcnemar_exact(w_all, l_all):.2g}")
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
