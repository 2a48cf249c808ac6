"""Cold-start protocol: tail items held out of training entirely, evaluated as targets.

A share of the *tail* items (the least interacted ``1 - head_share`` of the catalog, items with at least one
interaction) is chosen at random. Every interaction with them is removed before the leave-one-out split, so
no training sequence, popularity count, exposure log or SFT window ever contains them; they stay in the
catalog and get SIDs from their content embedding alone (their popularity is 0). Each removed interaction
(u, i) becomes a cold-start case: the user's remaining (non-cold) history before it → target i, with the
items seen before it excluded from the ranking, as for the test set.

A share of the held-out items may instead form a *cold-valid* part (:func:`split_cold_valid`, evaluation time): its
cases choose cold-side settings, and the cold part that is reported keeps the cases of the other items only. No
training stage reads either part, so splitting them needs no retraining.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from rl_align.data.dataset import InteractionData
from rl_align.data.split import sort_by_user_time
from rl_align.utils.io import load_npz
from rl_align.utils.popularity import head_mask

PAD = -1


def choose_cold_items(popularity: np.ndarray, share: float, head_share: float = 0.2, seed: int = 0) -> np.ndarray:
    """Sorted indices of ``round(share × n_tail)`` random tail items (tail = all but the ``head_share`` most
    interacted items, among items with ≥ 1 interaction)."""
    if not 0.0 <= share < 1.0:
        raise ValueError(f"data.cold_share must be in [0, 1), got {share}")
    pop = np.asarray(popularity, np.float64)
    tail = np.flatnonzero(~head_mask(pop, head_share) & (pop > 0))
    k = int(round(share * tail.size))
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(tail, k, replace=False)) if k else np.zeros(0, np.int64)


def cold_start_split(data: InteractionData, cold: np.ndarray, max_history: int
                     ) -> tuple[InteractionData, dict[str, np.ndarray]]:
    """Remove every interaction with a ``cold`` item; one evaluation case per removed interaction.

    Returns:
        the data without those interactions, and case arrays ``users`` (m,), ``targets`` (m,),
        ``history`` (m, max_history) last non-cold items before the interaction (oldest first, -1 padded on the
        right, oldest first), ``history_len`` (m,) and ``positions`` (m,): how many non-cold items of the
        user's (filtered, time-sorted) sequence precede the case — what evaluation excludes as seen.
    """
    is_cold = np.zeros(data.n_items, bool)
    is_cold[cold] = True
    order, offsets = sort_by_user_time(data)
    users, targets, hists, hlens, positions = [], [], [], [], []
    for u in range(data.n_users):
        seq = data.items[order[offsets[u]: offsets[u + 1]]]
        kept = 0
        warm: list[int] = []
        for it in seq.tolist():
            if is_cold[it]:
                h = warm[-max_history:]
                users.append(u)
                targets.append(it)
                hists.append(h + [PAD] * (max_history - len(h)))
                hlens.append(len(h))
                positions.append(kept)
            else:
                warm.append(it)
                kept += 1
    keep = ~is_cold[data.items]
    filtered = dataclasses.replace(data, users=data.users[keep], items=data.items[keep],
                                   timestamps=data.timestamps[keep])
    cases = {"users": np.array(users, np.int64), "targets": np.array(targets, np.int64),
             "history": np.array(hists, np.int64).reshape(-1, max_history),
             "history_len": np.array(hlens, np.int64), "positions": np.array(positions, np.int64)}
    return filtered, cases


def split_cold_valid(split: dict[str, np.ndarray], share: float, seed: int = 0) -> dict[str, np.ndarray]:
    """Move the cases of ``round(share × n_cold_items)`` random held-out items from the ``cold_*`` arrays of a run's
    split to ``cold_valid_*`` arrays (same fields; ``cold_valid_items`` (k,) sorted); the other items' cases stay in
    ``cold_*``. Splitting by item keeps every case of an item on one side. Returns a new dict; ``share = 0``
    returns ``split`` unchanged."""
    if not 0.0 <= share < 1.0:
        raise ValueError(f"eval.cold_valid_share must be in [0, 1), got {share}")
    if share == 0:
        return split
    if "cold_items" not in split:
        raise ValueError("eval.cold_valid_share > 0 needs the cold-start protocol (data.cold_share > 0)")
    if "cold_valid_items" in split:
        raise ValueError("this split already has a cold-valid part")
    items = np.asarray(split["cold_items"], np.int64)
    k = int(round(share * items.size))
    if not 0 < k < items.size:
        raise ValueError(f"eval.cold_valid_share = {share} leaves {k} of {items.size} held-out items for cold-valid; "
                         "expected at least one on each side")
    chosen = np.sort(np.random.default_rng(seed).choice(items, k, replace=False))
    in_valid = np.isin(split["cold_targets"], chosen)
    out = {key: v for key, v in split.items() if not key.startswith("cold_")}
    for f in ("users", "targets", "history", "history_len", "positions"):
        out[f"cold_{f}"] = split[f"cold_{f}"][~in_valid]
        out[f"cold_valid_{f}"] = split[f"cold_{f}"][in_valid]
    out["cold_items"], out["cold_valid_items"] = np.setdiff1d(items, chosen), chosen
    return out


def split_as_evaluated(run_path: str | Path, metrics: dict) -> dict[str, np.ndarray]:
    """A run's ``data/split.npz`` with the cold-valid part its metrics file records (``cold_valid_split``: share and
    seed), so the ``cold_*`` / ``cold_valid_*`` arrays line up case by case with that file's ``target_rank``."""
    split, cv = load_npz(Path(run_path) / "data" / "split.npz"), metrics.get("cold_valid_split")
    return split_cold_valid(split, cv["share"], cv["seed"]) if cv else split
