"""Issue 22: how many held-out items carry the cold-start hits. Per metrics file with cold parts (``rl-align eval RUN
--split all --cold-valid-share 0.5 ...``): for the cold and cold-valid parts, the cases, the hits@10, the items hit at
least once, and the share of the hits that the 5 most-hit items take; pooled over the files of a group (seeds).
Then each group against the first, item by item: the held-out items it hits more often / less often (hits summed
over seeds) and the exact sign test over those items (``rl_align.eval.significance.clustered_sign_test``), per
part and over both. Cases of one item move together (the same item vectors, the same route), so this item-level
test is the honest one for the cold goal; a case-level McNemar test treats them as independent.

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

from rl_align.data.cold import split_as_evaluated
from rl_align.eval.significance import clustered_sign_test


def _cases(metrics: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """part → ((m,) target item, (m,) hit@10) of each case, for one metrics file."""
    m = json.loads(metrics.read_text())
    cv = m.get("cold_valid_split")
    if cv is None:
        raise SystemExit(f"{metrics}: no cold-valid part (evaluate with --cold-valid-share)")
    split = split_as_evaluated(metrics.parent.parent, m)
    out = {}
    for part in ("cold_valid", "cold"):
        rank = np.asarray(m[part]["target_rank"])
        out[part] = (split[f"{part}_targets"], (rank >= 0) & (rank < 10))
    return out


def _hits(metrics: Path) -> dict[str, tuple[int, Counter]]:
    """part → (cases, Counter of target item → hits@10) for one metrics file."""
    return {p: (t.size, Counter(t[h].tolist())) for p, (t, h) in _cases(metrics).items()}


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
    cases = {g[0]: [_cases(Path(f)) for f in g[1:]] for g in groups}
    ref = groups[0][0]
    print(f"\n| against {ref}, item by item | cold_valid: more / fewer hits, p | cold: more / fewer, p | "
          "both: more / fewer, p |")
    print("|---|---|---|---|")
    for label in [g[0] for g in groups[1:]]:
        cells = []
        for parts in (("cold_valid",), ("cold",), ("cold_valid", "cold")):
            ref_hits, hits, items = [], [], []      # cases of every seed (same seeds, same targets in both)
            for mine, theirs in zip(cases[label], cases[ref]):
                for p in parts:
                    if not np.array_equal(mine[p][0], theirs[p][0]):
                        raise SystemExit(f"{label} and {ref}: not the same {p} cases (same seeds, same split?)")
                    items.append(mine[p][0])
                    hits.append(mine[p][1])
                    ref_hits.append(theirs[p][1])
            r = clustered_sign_test(np.concatenate(ref_hits), np.concatenate(hits), np.concatenate(items))
            cells.append(f"{r['wins']} / {r['losses']}, p {r['p']:.2g}")
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
