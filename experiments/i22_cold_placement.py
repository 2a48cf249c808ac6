"""Issue 22: place each new item (no training interaction) in the bucket of its nearest trained item.

SA²CRQ gives a new item a short code by its own vector and the head priors: a new item has popularity 0, so it is a
tail item, lands in a tail bucket (or an all-new one the policy never learned to emit), and takes a share of that
bucket's mass. RQ-KMeans places it under the parent prefix of the items its vector is closest to, head or tail.
This copies a bucket run, rewrites only the new items' codes to the code of their nearest item *with* training
interactions (cosine on the item vectors the SIDs were built from: text + the neighbour-filled collaborative half),
and leaves every trained item's code, the policy and the trie's trained leaves as they were, so the policy needs no
retraining. Then evaluate the copy as usual:

    python experiments/i22_cold_placement.py runs/i22f-bucket-s0 runs/i22x-nnb-s0
    rl-align eval runs/i22x-nnb-s0 --split all --cold-expansion
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np

from rl_align.sid import SidCatalog
from rl_align.sid.codes import SidCodes
from rl_align.utils.io import read_json, write_json


def nearest_trained(vectors: np.ndarray, new: np.ndarray, k: int = 1) -> np.ndarray:
    """(n_new, k) indices of the k trained items closest (cosine) to each new item."""
    v = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    trained = np.where(~new)[0]
    sims = v[new] @ v[trained].T
    return trained[np.argsort(-sims, axis=1, kind="stable")[:, :k]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("out")
    a = ap.parse_args()
    src, dst = Path(a.run), Path(a.out)
    if dst.exists():
        raise SystemExit(f"{dst}: exists")
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("eval", "ranker", "exposure", "checkpoints"))
    cat = SidCatalog.load(dst / "sids" / "catalog")
    pop = cat.buckets.scorer.popularity
    new = pop <= 0
    vectors = np.load(dst / "embed" / "item_emb.npy", allow_pickle=False)
    nn = nearest_trained(vectors, new)[:, 0]
    codes, lengths = cat.codes.codes.copy(), cat.codes.lengths.copy()
    codes[new], lengths[new] = codes[nn], lengths[nn]
    placed = SidCatalog(cat.item_ids, SidCodes(codes, lengths, cat.codes.codebook_sizes), cat.stats, buckets=True,
                        bucket_scorer=cat.buckets.scorer, user_tokens=cat.user_tokens,
                        history_items=cat.history_items)
    placed.save(dst / "sids" / "catalog")
    for meta_path in (dst / "sft").glob("*_policy/rl_align_policy.json"):
        # the policy is the same: its vocabulary and every trained item's code are unchanged; only codes it was never
        # trained to emit moved, so its catalog record is brought to the new fingerprint (in the copy only)
        meta = read_json(meta_path)
        meta["catalog_fingerprint"] = placed.fingerprint()
        write_json(meta_path, meta)
    before = {int(b) for b in cat.buckets.bucket_of[new]}
    trained_buckets = set(cat.buckets.bucket_of[~new].tolist())
    print(f"{int(new.sum())} new items: {len(before)} codes before ({len(before - trained_buckets)} with no trained "
          f"item), {len(set(nn.tolist()))} nearest trained items after; mean length "
          f"{cat.codes.lengths[new].mean():.2f} → {lengths[new].mean():.2f}")


if __name__ == "__main__":
    main()
