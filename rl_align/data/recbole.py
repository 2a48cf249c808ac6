"""Build an :class:`InteractionData` from RecBole atomic files (used for MovieLens-100K)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rl_align.data.atomic_files import DataFileError, read_atomic
from rl_align.data.dataset import InteractionData

USER, ITEM, TIME = "user_id", "item_id", "timestamp"


def _item_text(cols: dict[str, list], i: int) -> str:
    """Title (year); genres — from whichever of the usual RecBole item fields exist."""
    parts = []
    title = cols.get("movie_title") or cols.get("title")
    if title is not None:
        t = title[i]
        parts.append(" ".join(t) if isinstance(t, list) else str(t))
    year = cols.get("release_year")
    if year is not None and str(year[i]).strip():
        y = year[i]
        parts[-1:] = [f"{parts[-1]} ({y})"] if parts else [f"({y})"]
    for key, label in (("class", "genres"), ("genre", "genres"), ("categories", "categories"), ("brand", "brand")):
        v = cols.get(key)
        if v is not None and v[i]:
            val = ", ".join(v[i]) if isinstance(v[i], list) else str(v[i])
            parts.append(f"{label}: {val}")
    return "; ".join(p for p in parts if p.strip())


def load_recbole(directory: str | Path, name: str | None = None, allow_empty_text: bool = False) -> InteractionData:
    """Load ``<dir>/<name>.inter`` (+ optional ``.item``, ``.user``).

    Item dense ids follow the ``.item`` file order, then any item that only
    appears in ``.inter`` is an error (the catalog must describe every item).
    Without a ``.item`` file, items are numbered in order of first appearance and
    have no text (``allow_empty_text`` must then be true).
    """
    directory = Path(directory)
    name = name or directory.name
    inter_path = directory / f"{name}.inter"
    inter = read_atomic(inter_path, required=[USER, ITEM, TIME])
    item_path = directory / f"{name}.item"
    if item_path.exists():
        item_ids, item_text, item_features = _read_items(item_path, allow_empty_text)
    else:
        if not allow_empty_text:
            raise DataFileError(
                f"{item_path}: file not found; items need text for embeddings "
                "(add the .item file, use embed.source: npy, or set data.allow_empty_text: true)"
            )
        item_ids = list(dict.fromkeys(inter[ITEM]))
        item_text, item_features = [f"item {iid}" for iid in item_ids], {}
    index = {iid: k for k, iid in enumerate(item_ids)}
    items = np.empty(len(inter[ITEM]), np.int64)
    for row, iid in enumerate(inter[ITEM]):
        k = index.get(iid)
        if k is None:
            raise DataFileError(f"{inter_path}: line {row + 2}: item_id {iid!r} is not in {item_path.name}")
        items[row] = k
    user_ids = list(dict.fromkeys(inter[USER]))
    umap = {u: k for k, u in enumerate(user_ids)}
    users = np.fromiter((umap[u] for u in inter[USER]), np.int64, count=len(inter[USER]))
    ts = np.asarray(inter[TIME], np.float64)
    bad = np.flatnonzero(~np.isfinite(ts))
    if bad.size:
        raise DataFileError(f"{inter_path}: line {bad[0] + 2}: field 'timestamp' is empty or not finite")
    data = InteractionData(name=name, user_ids=user_ids, item_ids=list(item_ids), users=users, items=items,
                           timestamps=ts, item_text=item_text, item_features=item_features,
                           user_features=_read_user_features(directory / f"{name}.user", user_ids))
    data.validate()
    return data


def _read_items(item_path: Path, allow_empty_text: bool) -> tuple[list[str], list[str], dict[str, list]]:
    """Item ids (file order, unique), their texts and the other ``.item`` columns; one line naming a duplicate id
    or an empty text (unless ``allow_empty_text``, which puts a placeholder there)."""
    item_cols = read_atomic(item_path, required=[ITEM])
    item_ids = item_cols[ITEM]
    seen: dict[str, int] = {}
    for k, iid in enumerate(item_ids):
        if iid in seen:
            raise DataFileError(f"{item_path}: line {k + 2}: duplicate item_id {iid!r} (first at line {seen[iid] + 2})")
        seen[iid] = k
    item_text = []
    for k in range(len(item_ids)):
        text = _item_text(item_cols, k)
        if not text.strip():
            if not allow_empty_text:
                raise DataFileError(
                    f"{item_path}: line {k + 2}: item {item_ids[k]!r} has empty text "
                    "(set data.allow_empty_text: true to use a placeholder)"
                )
            text = f"item {item_ids[k]}"
        item_text.append(text)
    return item_ids, item_text, {k: v for k, v in item_cols.items() if k != ITEM}


def _read_user_features(user_path: Path, user_ids: list[str]) -> dict[str, list]:
    """``.user`` columns aligned to ``user_ids`` (None for a user the file lacks); {} without the file."""
    if not user_path.exists():
        return {}
    ucols = read_atomic(user_path, required=[USER])
    pos = {u: k for k, u in enumerate(ucols[USER])}
    return {col: [vals[pos[u]] if u in pos else None for u in user_ids] for col, vals in ucols.items() if col != USER}
