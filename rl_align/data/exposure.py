"""Impression (exposure) logs: what a deployed recommender showed each user, and what they clicked.

A production ranker never sees the whole catalog: it learns from the slates an
earlier system chose to show. :func:`simulate_exposure` rebuilds such logs from
the training part of a leave-one-out split:

* for every training event (user, history → the item consumed next), a
  *logging policy* shows ``M`` items the user has not consumed yet —
  ``popularity`` (train-set counts), ``cooccurrence`` (an earlier item-to-item
  model: how often each item followed the user's last 3 items within 3 steps
  in *other* users' sequences), or a ``mix`` — ranked by score with Gumbel noise
  (``temperature``), and each slot replaced by a uniformly random unseen item
  with probability ``epsilon`` (exploration);
* a position-biased click model: slot ``k`` is examined with probability
  ``1 / (k + 1) ** position_bias``; the consumed item is clicked if shown and
  examined, any other examined item with probability ``click_noise``.

**The bias this creates.** Popular items fill most slates, so they collect most
impressions and nearly all clicks; a long-tail item is shown only by exploration
or when it co-occurs with the user's last item, and is rarely clicked. A ranker
trained on these logs has seen many labelled examples of head items and few or
none of tail items, so its scores are least trustworthy exactly there — the
premise of AdaGRPO's discriminability gate. :func:`exposure_stats` measures it.

Real logs in the same schema load with :func:`load_exposure_jsonl`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rl_align.config import ExposureConfig
from rl_align.data.split import train_popularity

COOC_WINDOW = 3  # the co-occurrence model counts b following a within this many steps
COOC_LAST = 3  # … and scores candidates from the user's last this many items


class ExposureLogError(ValueError):
    """A real impression-log file is malformed (the message names file, line and field)."""


@dataclass
class ExposureLog:
    """Impressions, one row per shown slate.

    Attributes:
        users: (E,) int64 dense user index.
        history: (E, H) int64 items consumed before the impression, oldest→newest, left-aligned, padded with -1.
        shown: (E, M) int64 items shown, slot order, padded with -1.
        clicks: (E, M) bool whether each shown item was clicked.
        targets: (E,) int64 item the user actually consumed next (-1 if unknown, e.g. real logs).
        heldout: (E,) bool rows held out from ranker training (each user's last events).
    """

    users: np.ndarray
    history: np.ndarray
    shown: np.ndarray
    clicks: np.ndarray
    targets: np.ndarray
    heldout: np.ndarray

    def __len__(self) -> int:
        return int(self.users.shape[0])

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k) for k in ("users", "history", "shown", "clicks", "targets", "heldout")}

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray]) -> "ExposureLog":
        return cls(**{k: a[k] for k in ("users", "history", "shown", "clicks", "targets", "heldout")})

    def subset(self, mask: np.ndarray) -> "ExposureLog":
        return ExposureLog(**{k: v[mask] for k, v in self.arrays().items()})


def _train_events(seq_items: np.ndarray, seq_offsets: np.ndarray, max_history: int):
    """Every training event: (user, target position) for positions 1 .. len-3 (the last two are valid/test)."""
    users, pos = [], []
    lens = np.diff(seq_offsets)
    for u, n in enumerate(lens):
        n_train = int(n) - 2
        if n_train >= 2:
            users.append(np.full(n_train - 1, u))
            pos.append(np.arange(1, n_train))
    users = np.concatenate(users).astype(np.int64)
    pos = np.concatenate(pos).astype(np.int64)
    return users, pos


def _histories(seq_items, seq_offsets, users, pos, max_history):
    """(E, H) left-aligned histories (the ``max_history`` items before each target), padded with -1."""
    H = max_history
    start = np.maximum(pos - H, 0)
    hl = pos - start
    cols = np.arange(H)
    idx = seq_offsets[users][:, None] + start[:, None] + cols[None, :]
    valid = cols[None, :] < hl[:, None]
    hist = np.where(valid, seq_items[np.minimum(idx, seq_items.size - 1)], -1)
    return hist.astype(np.int64)


def _cooccurrence(seq_items, seq_offsets, n_items):
    """Sparse transition counts C[a, b] (b follows a within COOC_WINDOW steps) on training parts, as CSR arrays."""
    src, dst = [], []
    for u in range(seq_offsets.size - 1):
        s = seq_items[seq_offsets[u]: seq_offsets[u + 1] - 2]
        for d in range(1, COOC_WINDOW + 1):
            if s.size > d:
                src.append(s[:-d])
                dst.append(s[d:])
    src = np.concatenate(src)
    dst = np.concatenate(dst)
    key, cnt = np.unique(src * n_items + dst, return_counts=True)
    return key, cnt


def _user_pairs(s: np.ndarray, n_items: int):
    """A user's own transition keys and counts (to take out of the co-occurrence model for that user)."""
    src = np.concatenate([s[:-d] for d in range(1, COOC_WINDOW + 1) if s.size > d] or [np.zeros(0, np.int64)])
    dst = np.concatenate([s[d:] for d in range(1, COOC_WINDOW + 1) if s.size > d] or [np.zeros(0, np.int64)])
    return np.unique(src * n_items + dst, return_counts=True)


def _cooc_rows(seq_items, offs, u, pos, ckey, ccnt, n_items) -> np.ndarray:
    """(len(pos), n_items) co-occurrence scores of user ``u``'s events: Σ_r w_r · C[h_{-r}, :] over the last
    COOC_LAST history items (w_r = 2^-r), minus the user's own transitions — the earlier model never saw this user."""
    s = seq_items[offs[u]: offs[u + 1] - 2]
    okey, ocnt = _user_pairs(s, n_items)
    osrc = okey // n_items
    rows = np.zeros((pos.size, n_items))
    for r in range(COOC_LAST):
        w = 0.5 ** r
        has = pos - 1 - r >= 0
        for j in np.flatnonzero(has):
            a = int(s[pos[j] - 1 - r])
            lo, hi = np.searchsorted(ckey, [a * n_items, (a + 1) * n_items])
            row = np.zeros(n_items)
            row[ckey[lo:hi] - a * n_items] = ccnt[lo:hi]
            m = osrc == a
            row[okey[m] - a * n_items] -= ocnt[m]
            rows[j] += w * np.maximum(row, 0)
    return rows


def simulate_exposure(split: dict[str, np.ndarray], n_items: int, cfg: ExposureConfig, max_history: int) -> ExposureLog:
    """Impression logs for every training event of a leave-one-out split (see the module doc).

    Args:
        split: the run's ``data/split.npz`` arrays (``seq_items``, ``seq_offsets`` …).
        n_items: catalog size.
        cfg: logging policy, exploration and click model.
        max_history: history length stored per impression.
    """
    if cfg.slate_size > n_items:  # the other ranges are checked when the config loads
        raise ValueError(f"exposure.slate_size must be ≤ the catalog size {n_items}, got {cfg.slate_size}")
    rng = np.random.default_rng(cfg.seed)
    seq_items = split["seq_items"].astype(np.int64)
    offs = split["seq_offsets"].astype(np.int64)
    users, pos = _train_events(seq_items, offs, max_history)
    E = users.size
    targets = seq_items[offs[users] + pos]
    hist = _histories(seq_items, offs, users, pos, max_history)
    # the logging system had not seen valid/test items: popularity of the training part
    pop_score = np.log1p(train_popularity(split, n_items).astype(np.float64))
    use_pop = {"popularity": np.ones(E, bool), "cooccurrence": np.zeros(E, bool),
               "mix": rng.random(E) < cfg.mix_popularity}[cfg.policy]   # (the draw happens for every policy)
    ev_of_user = np.split(np.arange(E), np.flatnonzero(np.diff(users)) + 1)
    shown = _logged_slates(seq_items, offs, users, pos, ev_of_user, use_pop, pop_score, cfg, rng)
    _explore(shown, seq_items, offs, users, pos, cfg.epsilon, rng, n_items)
    # position-biased clicks
    M = cfg.slate_size
    examine = 1.0 / np.arange(1, M + 1) ** cfg.position_bias
    examined = rng.random((E, M)) < examine[None, :]
    is_target = shown == targets[:, None]
    clicks = examined & (is_target | (rng.random((E, M)) < cfg.click_noise))
    heldout = np.zeros(E, bool)
    if cfg.holdout_events > 0:
        for evs in ev_of_user:
            heldout[evs[-cfg.holdout_events:]] = True
    return ExposureLog(users, hist, shown, clicks, targets, heldout)


def _logged_slates(seq_items: np.ndarray, offs: np.ndarray, users: np.ndarray, pos: np.ndarray,
                   ev_of_user: list[np.ndarray], use_pop: np.ndarray, pop_score: np.ndarray, cfg: ExposureConfig,
                   rng: np.random.Generator) -> np.ndarray:
    """(E, slate_size) the logging policy's slate per event, best first: popularity (``use_pop``) or co-occurrence
    with the user's items, Gumbel noise at ``cfg.temperature``, the user's consumed items never shown."""
    n_items, M = pop_score.size, cfg.slate_size
    if not use_pop.all():
        ckey, ccnt = _cooccurrence(seq_items, offs, n_items)
    shown = np.empty((users.size, M), np.int64)
    for evs in ev_of_user:
        u = users[evs[0]]
        s = seq_items[offs[u]: offs[u + 1] - 2]
        scores = np.broadcast_to(pop_score, (evs.size, n_items)).copy()
        co = evs[~use_pop[evs]]
        if co.size:
            scores[~use_pop[evs]] = np.log1p(_cooc_rows(seq_items, offs, u, pos[co], ckey, ccnt, n_items)) \
                + 1e-3 * pop_score
        if cfg.temperature > 0:
            scores += cfg.temperature * rng.gumbel(size=scores.shape)
        # the user's consumed items (up to this event) are never shown again
        for j, e in enumerate(evs):
            scores[j, s[: pos[e]]] = -np.inf
        top = np.argpartition(-scores, M - 1, axis=1)[:, :M]
        order = np.argsort(-np.take_along_axis(scores, top, 1), axis=1, kind="stable")
        shown[evs] = np.take_along_axis(top, order, 1)
    return shown


def _explore(shown: np.ndarray, seq_items: np.ndarray, offs: np.ndarray, users: np.ndarray, pos: np.ndarray,
             epsilon: float, rng: np.random.Generator, n_items: int) -> None:
    """In place: each slot of ``shown`` (E, M) becomes, with probability ε, a random item neither consumed nor
    already in the slate (rare clashes resampled)."""
    E, M = shown.shape
    explore = rng.random((E, M)) < epsilon
    ee, kk = np.nonzero(explore)
    cand = rng.integers(n_items, size=ee.size)
    for i in range(ee.size):
        e, u = ee[i], users[ee[i]]
        consumed = seq_items[offs[u]: offs[u] + pos[e]]
        c = int(cand[i])
        while c in shown[e] or (consumed == c).any():
            c = int(rng.integers(n_items))
        shown[e, kk[i]] = c


def load_exposure_jsonl(path: str | Path, user_index: dict[str, int], item_index: dict[str, int],
                        max_history: int, holdout_events: int = 5) -> ExposureLog:
    """Real impression logs, one JSON object per line.

    Schema: ``{"user_id": str, "history": [item ids, oldest first], "shown": [item ids, slot order],
    "clicked": [item ids ⊆ shown], "target": optional item id}``. Ids are the dataset's raw ids.
    Each user's last ``holdout_events`` lines (file order) are held out.
    """
    path = Path(path)
    if not path.exists():
        raise ExposureLogError(f"{path}: exposure log not found")
    rows = []
    with open(path, encoding="utf-8") as f:
        for ln, line in enumerate(f, 1):
            if line.strip():
                rows.append(_impression(line, f"{path}: line {ln}", user_index, item_index, max_history))
    if not rows:
        raise ExposureLogError(f"{path}: no impressions in the file")
    E, M = len(rows), max(len(r[2]) for r in rows)
    users = np.array([r[0] for r in rows], np.int64)
    history = np.full((E, max_history), -1, np.int64)
    shown = np.full((E, M), -1, np.int64)
    clicks = np.zeros((E, M), bool)
    for e, (_, h, s, c, _) in enumerate(rows):
        history[e, : len(h)] = h
        shown[e, : len(s)] = s
        clicks[e, : len(s)] = [i in c for i in s]
    targets = np.array([r[4] for r in rows], np.int64)
    heldout = np.zeros(E, bool)
    if holdout_events > 0:
        last: dict[int, list[int]] = {}
        for e, u in enumerate(users.tolist()):
            last.setdefault(u, []).append(e)
        for evs in last.values():
            heldout[evs[-holdout_events:]] = True
    return ExposureLog(users, history, shown, clicks, targets, heldout)


def _impression(line: str, where: str, user_index: dict[str, int], item_index: dict[str, int],
                max_history: int) -> tuple[int, list[int], list[int], set[int], int]:
    """One log line → (user, last ``max_history`` history items, shown items, clicked set, target or -1), dense
    indices; ``where`` ("<file>: line N") starts the one-line error of a malformed line."""
    try:
        rec = json.loads(line)
    except json.JSONDecodeError as e:
        raise ExposureLogError(f"{where}: invalid JSON ({e.msg})") from None
    if not isinstance(rec, dict):
        raise ExposureLogError(f"{where}: expected a JSON object")
    for key in ("user_id", "history", "shown", "clicked"):
        if key not in rec:
            raise ExposureLogError(f"{where}: missing field {key!r}")
    uid = str(rec["user_id"])
    if uid not in user_index:
        raise ExposureLogError(f"{where}: field 'user_id': unknown user {uid!r}")

    def items(key: str) -> list[int]:
        v = rec[key]
        if not isinstance(v, list):
            raise ExposureLogError(f"{where}: field {key!r} must be a list of item ids")
        out = []
        for iid in v:
            k = item_index.get(str(iid))
            if k is None:
                raise ExposureLogError(f"{where}: field {key!r}: unknown item {iid!r}")
            out.append(k)
        return out

    hist, shown, clicked = items("history"), items("shown"), items("clicked")
    if not shown:
        raise ExposureLogError(f"{where}: field 'shown' is empty")
    if not set(clicked) <= set(shown):
        raise ExposureLogError(f"{where}: field 'clicked' has items that are not in 'shown'")
    tgt, t = rec.get("target"), -1
    if tgt is not None:
        t = item_index.get(str(tgt), None)
        if t is None:
            raise ExposureLogError(f"{where}: field 'target': unknown item {tgt!r}")
    return user_index[uid], hist[-max_history:], shown, set(clicked), t


def popularity_buckets(popularity: np.ndarray, n_buckets: int) -> np.ndarray:
    """(n_items,) bucket of each item by popularity, 0 = tail … n_buckets-1 = head; buckets hold equal shares of
    *interactions* (so the head bucket is a few very popular items, the tail many rare ones)."""
    order = np.argsort(popularity, kind="stable")
    cum = np.cumsum(popularity[order].astype(np.float64))
    total = max(cum[-1], 1.0)
    b = np.minimum((cum / total * n_buckets - 1e-9).astype(np.int64), n_buckets - 1)
    out = np.empty_like(b)
    out[order] = np.maximum(b, 0)
    return out


def exposure_stats(log: ExposureLog, popularity: np.ndarray, n_buckets: int = 3) -> dict:
    """How skewed the logs are: impressions, clicks and coverage per popularity bucket (0 = tail)."""
    n_items = popularity.size
    valid = log.shown >= 0
    shown = log.shown[valid]
    imp = np.bincount(shown, minlength=n_items)
    clk = np.bincount(log.shown[log.clicks], minlength=n_items)
    buckets = popularity_buckets(popularity, n_buckets)
    per = []
    for b in range(n_buckets):
        m = buckets == b
        per.append({
            "bucket": b, "items": int(m.sum()),
            "share_of_interactions": float(popularity[m].sum() / max(popularity.sum(), 1)),
            "share_of_impressions": float(imp[m].sum() / max(imp.sum(), 1)),
            "share_of_clicks": float(clk[m].sum() / max(clk.sum(), 1)),
            "items_ever_shown": float((imp[m] > 0).mean()) if m.any() else 0.0,
            "items_ever_clicked": float((clk[m] > 0).mean()) if m.any() else 0.0,
            "impressions_per_item": float(imp[m].mean()) if m.any() else 0.0,
        })
    s = np.sort(imp.astype(np.float64))
    gini = float(1 - 2 * np.sum(np.cumsum(s)) / max(s.sum() * s.size, 1) + 1 / s.size) if s.sum() else 0.0
    has_target = log.targets >= 0
    shown_target = (log.shown == log.targets[:, None]).any(1) & has_target
    return {
        "impressions": int(len(log)), "slots": int(valid.sum()), "clicks": int(log.clicks.sum()),
        "ctr": float(log.clicks.sum() / max(valid.sum(), 1)),
        "events_with_click": float(log.clicks.any(1).mean()),
        "target_shown_rate": float(shown_target.sum() / max(has_target.sum(), 1)),
        "items_ever_shown": float((imp > 0).mean()), "items_ever_clicked": float((clk > 0).mean()),
        "exposure_gini": gini, "heldout_impressions": int(log.heldout.sum()),
        "buckets": per,
    }
