"""SID statistics: codebook utilisation, prefix (path) entropy, code length, collisions."""

from __future__ import annotations

from typing import Optional

import numpy as np

from rl_align.sid.codes import SidCodes
from rl_align.utils.popularity import head_mask


def _entropy_bits(counts: np.ndarray) -> float:
    p = counts[counts > 0].astype(np.float64)
    p /= p.sum()
    return float(-(p * np.log2(p)).sum())


def _prefix_counts(codes: SidCodes, depth: int) -> np.ndarray:
    """Item counts of each distinct prefix of length ``depth`` (items with shorter codes excluded)."""
    sel = codes.lengths >= depth
    if not sel.any():
        return np.zeros(0, np.int64)
    sub = SidCodes(np.where(np.arange(codes.max_len)[None, :] < depth, codes.codes[sel], -1),
                   np.full(int(sel.sum()), depth), codes.codebook_sizes)
    _, counts = np.unique(sub.keys(), return_counts=True)
    return counts


def sid_stats(codes: SidCodes, popularity: Optional[np.ndarray] = None) -> dict:
    """Per-level utilisation and entropy, path entropy, length distribution, collisions.

    - ``levels[l].utilisation``: share of level-l codes used by at least one item.
    - ``levels[l].perplexity``: 2^H of the level-l code distribution (ideal = K).
    - ``levels[l].prefix_entropy_bits``: entropy of the distribution of items over
      prefixes of length l+1 — the path entropy at that depth (max = log2 n).
    - ``path_entropy_bits``: entropy over full codes (= log2 n with no collisions).
    - ``max_items_per_prefix``: largest group under one prefix at each depth.
    """
    levels = []
    for lvl in range(codes.max_len):
        sel = codes.lengths > lvl
        k = codes.codebook_sizes[lvl]
        cnt = np.bincount(codes.codes[sel, lvl], minlength=k) if sel.any() else np.zeros(k, np.int64)
        pc = _prefix_counts(codes, lvl + 1)
        levels.append({
            "level": lvl,
            "codebook_size": int(k),
            "items_reaching": int(sel.sum()),
            "codes_used": int((cnt > 0).sum()),
            "utilisation": float((cnt > 0).mean()) if k else 0.0,
            "perplexity": float(2 ** _entropy_bits(cnt)) if cnt.sum() else 0.0,
            "prefix_entropy_bits": _entropy_bits(pc) if pc.size else 0.0,
            "distinct_prefixes": int(pc.size),
            "max_items_per_prefix": int(pc.max()) if pc.size else 0,
        })
    _, full_counts = np.unique(codes.keys(), return_counts=True)
    lens = codes.lengths
    out = {
        "n_items": codes.n,
        "levels": levels,
        "path_entropy_bits": _entropy_bits(full_counts),
        "max_path_entropy_bits": float(np.log2(max(codes.n, 1))),
        "mean_code_length": float(lens.mean()) if lens.size else 0.0,
        "code_length_hist": {int(v): int(c) for v, c in zip(*np.unique(lens, return_counts=True))},
        **codes.collision_stats(),
    }
    if popularity is not None and codes.n:
        head = head_mask(np.asarray(popularity), 0.2)   # the 20% most interacted of the interacted items
        out["mean_code_length_head20"] = float(lens[head].mean())
        out["mean_code_length_tail80"] = float(lens[~head].mean()) if (~head).any() else 0.0
        out["length_by_popularity"] = length_by_popularity(codes, np.asarray(popularity))
    return out


def length_by_popularity(codes: SidCodes, popularity: np.ndarray, n_bins: int = 5) -> list[dict]:
    """Code length (after collision resolution) per popularity bucket: the interacted items in ``n_bins`` equal-count
    bins, most interacted first, then the items without training interactions ("cold"). Each row: items, mean
    length, share of items whose code is shared with another item (bucket SIDs)."""
    _, inv, counts = np.unique(codes.keys(), return_inverse=True, return_counts=True)
    shared = counts[inv.ravel()] > 1
    warm = np.flatnonzero(popularity > 0)
    order = warm[np.argsort(-popularity[warm], kind="stable")]
    rows = []
    for b, part in enumerate(np.array_split(order, n_bins)):
        rows.append((f"pop {b * 100 // n_bins}-{(b + 1) * 100 // n_bins}%", part))
    rows.append(("cold", np.flatnonzero(popularity <= 0)))
    out = []
    for name, idx in rows:
        if idx.size == 0:
            continue
        out.append({"bucket": name, "items": int(idx.size), "mean_length": float(codes.lengths[idx].mean()),
                    "min_interactions": int(popularity[idx].min()), "shared_code_share": float(shared[idx].mean())})
    return out


def format_stats(stats: dict) -> str:
    """A short human-readable table of :func:`sid_stats` output (plus collision report if present)."""
    lines = [f"items: {stats['n_items']}   mean code length: {stats['mean_code_length']:.2f}   "
             f"path entropy: {stats['path_entropy_bits']:.2f} / {stats['max_path_entropy_bits']:.2f} bits"]
    lines.append(f"{'level':>5} {'K':>6} {'used':>6} {'util':>6} {'perplex':>8} {'H(prefix)':>9} {'max/prefix':>10}")
    for lv in stats["levels"]:
        lines.append(f"{lv['level']:>5} {lv['codebook_size']:>6} {lv['codes_used']:>6} {lv['utilisation']:>6.1%} "
                     f"{lv['perplexity']:>8.1f} {lv['prefix_entropy_bits']:>9.2f} {lv['max_items_per_prefix']:>10}")
    lp = stats.get("length_by_popularity")
    if lp:
        lines.append("code length by popularity: " + "  ".join(
            f"{r['bucket']} {r['mean_length']:.2f}" + (f" ({r['shared_code_share']:.0%} shared)"
                                                       if r["shared_code_share"] else "") for r in lp))
    col = stats.get("collisions")
    if col:
        b, a = col["before"], col["after"]
        lines.append(f"collisions ({col['method']}): before {b['collision_rate']:.2%} of items "
                     f"({b['colliding_items']} items, max {b['max_items_per_code']}/code) → after "
                     f"{a['collision_rate']:.2%} ({a['colliding_items']} items)")
        bk = col.get("buckets")
        if bk:
            lines.append(f"buckets: {bk['n_buckets']} codes for {stats['n_items']} items; {bk['items_in_shared_codes']} "
                         f"items share {bk['shared_codes']} codes (mean {bk['mean_shared_bucket_size']:.1f}, max "
                         f"{bk['max_bucket_size']})")
    return "\n".join(lines)
