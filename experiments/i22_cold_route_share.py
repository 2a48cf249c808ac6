"""Where a run's held-out cold items sit: the share of them whose cold-expansion route (the RQ parent prefix, or the
bucket code in a bucket catalog) also holds items with training interactions, and the median number of other new
items on their route.

    python experiments/i22_cold_route_share.py runs/i22-syn-rqk-s0 runs/i22-syn-bucket-hybrid-s0
"""

from __future__ import annotations

import argparse

import numpy as np

from rl_align.data.split import train_popularity
from rl_align.eval.cold_expand import ColdIndex
from rl_align.sid.catalog import SidCatalog
from rl_align.utils.io import load_npz


def route_of_items(cat: SidCatalog) -> np.ndarray:
    """(n_items,) int64 route id of every item: its bucket, or its SID parent as the cold expansion groups it
    (:class:`rl_align.eval.cold_expand.ColdIndex` built over every item)."""
    if cat.has_buckets:
        return cat.buckets.bucket_of
    route = np.full(cat.n_items, -1, np.int64)
    for r, members in enumerate(ColdIndex.build(cat, np.arange(cat.n_items)).children.values()):
        route[members] = r
    return route


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+")
    a = ap.parse_args()
    print("| run | held-out items | share on a route with warm items | median new items on their route |")
    print("|---|---|---|---|")
    for run in a.runs:
        cat = SidCatalog.load(f"{run}/sids/catalog")
        split = load_npz(f"{run}/data/split.npz")
        new = train_popularity(split, cat.n_items) == 0
        held = np.unique(split["cold_targets"])
        route = route_of_items(cat)
        n = int(route.max()) + 1
        warm = np.bincount(route[~new], minlength=n) > 0
        n_new = np.bincount(route[new], minlength=n)
        print(f"| {run} | {held.size} | {warm[route[held]].mean():.3f} | {np.median(n_new[route[held]]):g} |")


if __name__ == "__main__":
    main()
