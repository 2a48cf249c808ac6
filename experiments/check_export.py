#!/usr/bin/env python
"""Check exported ranked lists against the raw interaction file, independently of rl-align's evaluator.

For every user in PRED.jsonl ({"user_id", "items"}): how many items the list holds, whether any item
repeats, and whether any item is one the user interacted with *before* the test event (read from the raw
RecBole ``.inter`` file, sorted by time with a stable sort as the split does). Prints a JSON summary.

Usage: python experiments/check_export.py PRED.jsonl INTER_FILE [--k 20]
(ML-100K's file: ``python -c "from rl_align.data.fetch import fetch_ml100k; print(fetch_ml100k())"``/ml-100k.inter)
"""

from __future__ import annotations

import argparse
import csv
import json
from collections import Counter, defaultdict


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("pred")
    ap.add_argument("inter")
    ap.add_argument("--k", type=int, default=20)
    args = ap.parse_args()
    events = defaultdict(list)
    with open(args.inter, encoding="latin-1") as f:
        rows = csv.reader(f, delimiter="\t")
        head = [h.split(":")[0] for h in next(rows)]
        u, i, t = head.index("user_id"), head.index("item_id"), head.index("timestamp")
        for n, r in enumerate(rows):
            events[r[u]].append((float(r[t]), n, r[i]))
    lengths, seen_hits, dup_users, users = Counter(), 0, 0, 0
    with open(args.pred, encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            seq = [it for _, _, it in sorted(events[rec["user_id"]])]
            before_test = set(seq[:-1])   # leave-one-out: the last event is the test target
            items = rec["items"][: args.k]
            users += 1
            lengths[len(items)] += 1
            seen_hits += sum(it in before_test for it in items)
            dup_users += len(set(items)) != len(items)
    print(json.dumps({"users": users, "full_lists": lengths[args.k], "full_share": lengths[args.k] / max(users, 1),
                      "shorter_lists": {k: v for k, v in sorted(lengths.items()) if k != args.k},
                      "seen_items_in_lists": seen_hits, "users_with_duplicates": dup_users}, indent=2))


if __name__ == "__main__":
    main()
