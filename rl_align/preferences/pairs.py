"""Preference pairs for DPO-family alignment: per prompt, positives and negatives with provenance (Parquet).

For each prompt row (a training example; ``rl.recent_prompts`` picks which):

* **positives**: y* and, with ``rl.preference.positives_window`` = W > 1, the user's next W − 1 *training* events
  (multi-label prompts; nothing held out for valid/test is used);
* **negatives**, ``negatives`` of them: a share ``exposure_share`` from the prompt's impression in the exposure
  logs — items shown and not clicked (implicit, noisy feedback: some were simply not examined) — and the rest from
  the SFT policy's own constrained beam (history excluded, as at evaluation) that are not positives, best-ranked
  first (the hard negatives the policy actually confuses). A source that runs short is filled from the other.

Every negative keeps its source (``exposure``/``beam``) and position (slate slot or beam rank) in the table.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rl_align.data.prompts import future_events, recent_examples, seen_before
from rl_align.eval.evaluate import EvalSet, rank_with_engine
from rl_align.policy.model import load_policy
from rl_align.rollouts import build_engine
from rl_align.sid.catalog import PAD, SidCatalog
from rl_align.utils.io import load_npz, read_json, write_json

log = logging.getLogger("rl_align")

SOURCES = ("exposure", "beam")


@dataclass
class PreferenceTable:
    """Pairs of one run, as arrays. R prompt rows, P positive slots, N negative slots.

    Attributes:
        rows: (R,) training-example rows of the split. positives: (R, P) items, y* first, -1 padded.
        negatives: (R, N) items, -1 padded. neg_source: (R, N) int8 index into :data:`SOURCES` (-1 = empty).
        neg_position: (R, N) int16 slate slot (exposure) or beam rank (beam) of each negative.
    """

    rows: np.ndarray
    positives: np.ndarray
    negatives: np.ndarray
    neg_source: np.ndarray
    neg_position: np.ndarray

    def candidates(self, idx: np.ndarray, catalog: SidCatalog) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Batch fields of table rows ``idx``: items (b, K) positives then negatives (-1 = empty), tokens
        (b, K, Tg) with ``<pad>`` for empty slots, positive (b, K) bool."""
        items = np.concatenate([self.positives[idx], self.negatives[idx]], 1)
        positive = np.zeros(items.shape, bool)
        positive[:, : self.positives.shape[1]] = self.positives[idx] >= 0
        tokens = catalog.tokens[np.maximum(items, 0)].astype(np.int64)
        tokens[items < 0] = PAD
        return items.astype(np.int64), tokens, positive


def pairs_fingerprint(cfg, policy_dir: Path) -> str:
    """What the table depends on: the preference settings that shape it, the prompt pool, the seed, the exposure
    settings and the SFT policy's weights."""
    pc, r = cfg.rl.preference, cfg.rl
    weights = Path(policy_dir) / "model.safetensors"
    key = {"positives_window": pc.positives_window, "negatives": pc.negatives, "exposure_share": pc.exposure_share,
           "beam": pc.beam, "recent_prompts": r.recent_prompts, "seed": r.seed,
           "exposure": json.dumps(cfg.exposure.__dict__, sort_keys=True, default=str),
           "policy": hashlib.sha256(weights.read_bytes()).hexdigest() if weights.exists() else str(policy_dir)}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def exposure_negatives(run_path: Path, split: dict, rows: np.ndarray, positives: np.ndarray) -> tuple[list, list]:
    """Per row, the non-clicked items of its impression (slate order) that are not positives, and their slots.

    Impressions are matched to training examples by (user, consumed item); an unmatched row gets none."""
    lg = load_npz(run_path / "exposure" / "log.npz")
    key = lg["users"].astype(np.int64) * (1 << 32) + lg["targets"].astype(np.int64)
    order = np.argsort(key, kind="stable")
    want = split["train_users"][rows].astype(np.int64) * (1 << 32) + split["train_targets"][rows].astype(np.int64)
    at = np.searchsorted(key[order], want)
    found = (at < key.size) & (key[order][np.minimum(at, key.size - 1)] == want)
    items, slots = [], []
    for i in range(rows.size):
        if not found[i]:
            items.append([]), slots.append([])
            continue
        e = order[at[i]]
        shown, clicked = lg["shown"][e], lg["clicks"][e]
        ok = (shown >= 0) & ~clicked & ~np.isin(shown, positives[i])
        items.append(shown[ok].tolist()), slots.append(np.flatnonzero(ok).tolist())
    return items, slots


def beam_negatives(run_path: Path, split: dict, rows: np.ndarray, positives: np.ndarray, beams: int,
                   batch_size: int = 128) -> list:
    """Per row, the SFT policy's beam items (history excluded, best first) that are not positives."""
    catalog = SidCatalog.load(run_path / "sids" / "catalog")
    model = load_policy(run_path / "sft" / "best_policy", catalog)
    engine = build_engine("torch", model=model, catalog=catalog)
    es = EvalSet(users=split["train_users"][rows], targets=split["train_targets"][rows],
                 history=split["train_history"][rows], seen=seen_before(split, rows))
    ranked, _ = rank_with_engine(engine, catalog, es, beams, True, batch_size)
    return [[int(x) for x in r if x >= 0 and x not in positives[i]] for i, r in enumerate(ranked)]


def choose_negatives(exp_items: list, exp_slots: list, beam_items: list, n: int, share: float,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(R, n) negatives, sources and positions: ``round(n·share)`` random exposed non-clicks, the rest from the beam
    in rank order; a short source is filled from the other; no item twice."""
    R = len(beam_items)
    neg = np.full((R, n), -1, np.int64)
    src = np.full((R, n), -1, np.int8)
    pos = np.full((R, n), -1, np.int16)
    n_exp = int(round(n * share))
    for i in range(R):
        e_perm = rng.permutation(len(exp_items[i])).tolist()
        exp = [(exp_items[i][j], 0, exp_slots[i][j]) for j in e_perm]
        beam = [(x, 1, k) for k, x in enumerate(beam_items[i])]
        n_beam = n - min(n_exp, len(exp))
        picked = exp[:n_exp] + beam[:n_beam]
        rest = beam[n_beam:] + exp[n_exp:]          # a beam item already taken from the slate: the next beam item
        seen, out = set(), []
        for c in picked + rest:
            if c[0] not in seen:
                seen.add(c[0])
                out.append(c)
            if len(out) == n:
                break
        for k, (item, s, p) in enumerate(out):
            neg[i, k], src[i, k], pos[i, k] = item, s, p
    return neg, src, pos


def build_pairs(cfg, run_path: Path) -> PreferenceTable:
    """Build the run's preference table (see the module doc) and write ``preferences/pairs.parquet`` + stats."""
    run_path = Path(run_path)
    pc, r = cfg.rl.preference, cfg.rl
    split = load_npz(run_path / "data" / "split.npz")
    rows = recent_examples(split["train_users"], split["train_positions"], r.recent_prompts)
    positives = future_events(split, rows, pc.positives_window)
    if pc.exposure_share > 0 and not (run_path / "exposure" / "log.npz").exists():
        raise FileNotFoundError(f"{run_path / 'exposure' / 'log.npz'}: rl.preference.exposure_share > 0 needs the "
                                "exposure logs (run the exposure stage first)")
    exp_items, exp_slots = (exposure_negatives(run_path, split, rows, positives) if pc.exposure_share > 0
                            else ([[]] * rows.size, [[]] * rows.size))
    beam = beam_negatives(run_path, split, rows, positives, pc.beam)
    neg, src, pos = choose_negatives(exp_items, exp_slots, beam, pc.negatives, pc.exposure_share,
                                     np.random.default_rng(r.seed * 7 + 11))
    table = PreferenceTable(rows.astype(np.int64), positives, neg, src, pos)
    write_table(table, run_path / "preferences", pairs_fingerprint(cfg, run_path / "sft" / "best_policy"))
    return table


def table_stats(t: PreferenceTable) -> dict:
    n_pos = (t.positives >= 0).sum(1)
    return {"prompts": int(t.rows.size), "positives_mean": float(n_pos.mean()),
            "multi_label_share": float((n_pos > 1).mean()),
            "negatives_mean": float((t.negatives >= 0).sum(1).mean()),
            **{f"negatives_from_{s}": int((t.neg_source == k).sum()) for k, s in enumerate(SOURCES)}}


def write_table(t: PreferenceTable, out: Path, fingerprint: str) -> None:
    """``pairs.parquet`` (one row per prompt, list columns) and ``pairs.json`` (fingerprint + stats), atomically."""
    out.mkdir(parents=True, exist_ok=True)
    tbl = pa.table({"row": t.rows, "positives": [x[x >= 0].tolist() for x in t.positives],
                    "negatives": [x[x >= 0].tolist() for x in t.negatives],
                    "negative_source": [[SOURCES[s] for s in x[x >= 0]] for x in t.neg_source],
                    "negative_position": [x[x >= 0].tolist() for x in t.neg_position]})
    tmp = out / "pairs.parquet.tmp"
    pq.write_table(tbl, tmp)
    tmp.replace(out / "pairs.parquet")
    write_json(out / "pairs.json", {"fingerprint": fingerprint, "positive_slots": int(t.positives.shape[1]),
                                    "negative_slots": int(t.negatives.shape[1]), **table_stats(t)})


def read_table(out: Path) -> tuple[PreferenceTable, dict]:
    """The table written by :func:`write_table` and its metadata."""
    meta = read_json(out / "pairs.json")
    tbl = pq.read_table(out / "pairs.parquet").to_pydict()
    P, N = meta["positive_slots"], meta["negative_slots"]

    def pad(lists, width, dtype, fill=-1):
        a = np.full((len(lists), width), fill, dtype)
        for i, x in enumerate(lists):
            a[i, : len(x)] = x
        return a

    src = [[SOURCES.index(s) for s in x] for x in tbl["negative_source"]]
    return PreferenceTable(np.asarray(tbl["row"], np.int64), pad(tbl["positives"], P, np.int64),
                           pad(tbl["negatives"], N, np.int64), pad(src, N, np.int8),
                           pad(tbl["negative_position"], N, np.int16)), meta


def load_or_build(cfg, run_path: Path) -> PreferenceTable:
    """The run's table when its fingerprint matches ``cfg`` and the SFT policy, else a new one."""
    out = Path(run_path) / "preferences"
    if (out / "pairs.json").exists() and (out / "pairs.parquet").exists():
        t, meta = read_table(out)
        if meta.get("fingerprint") == pairs_fingerprint(cfg, Path(run_path) / "sft" / "best_policy"):
            return t
        log.info("preferences: settings or SFT policy changed; rebuilding %s", out)
    return build_pairs(cfg, run_path)
