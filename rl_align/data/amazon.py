"""Loader for Amazon-reviews files users bring (2014 and 2018 releases).

- reviews: ``reviews_<Cat>_5.json.gz`` (2014) or ``<Cat>_5.json.gz`` (2018), one
  JSON object per line with ``reviewerID``, ``asin``, ``unixReviewTime``.
- meta: ``meta_<Cat>.json.gz``; 2014 lines are Python dict literals (parsed with
  ``ast.literal_eval``, never ``eval``), 2018 lines are JSON. Text = title,
  brand, categories (2014 ``categories`` is a list of lists; 2018 ``category`` a list).
Plain (uncompressed) files work too.
"""

from __future__ import annotations

import ast
import gzip
import json
from pathlib import Path
from typing import Iterator

import numpy as np

from rl_align.data.atomic_files import DataFileError
from rl_align.data.dataset import InteractionData


def _open(path: Path):
    if not path.exists():
        raise DataFileError(f"{path}: file not found")
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, "rt", encoding="utf-8")


def _records(path: Path) -> Iterator[tuple[int, dict]]:
    with _open(path) as f:
        try:
            for lineno, line in enumerate(f, start=1):
                line = line.strip()
                if not line:
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    try:
                        rec = ast.literal_eval(line)  # 2014 meta: Python literals, safe to parse
                    except (ValueError, SyntaxError):
                        raise DataFileError(f"{path}: line {lineno}: neither JSON nor a Python dict literal") from None
                if not isinstance(rec, dict):
                    raise DataFileError(f"{path}: line {lineno}: expected an object, got {type(rec).__name__}")
                yield lineno, rec
        except (OSError, EOFError) as e:  # truncated/corrupt gzip
            raise DataFileError(f"{path}: cannot read ({e})") from None


def _categories(rec: dict) -> list[str]:
    cats = rec.get("categories", rec.get("category"))
    out: list[str] = []
    if isinstance(cats, list):
        for c in cats:
            if isinstance(c, list):
                out.extend(str(x) for x in c)
            elif c:
                out.append(str(c))
    return list(dict.fromkeys(x.strip() for x in out if str(x).strip()))


def _text(rec: dict) -> str:
    parts = []
    title = str(rec.get("title") or "").strip()
    if title:
        parts.append(title)
    brand = str(rec.get("brand") or "").strip()
    if brand:
        parts.append(f"brand: {brand}")
    cats = _categories(rec)
    if cats:
        parts.append("categories: " + ", ".join(cats[:8]))
    return "; ".join(parts)


def load_amazon(reviews_path: str | Path, meta_path: str | Path | None, name: str | None = None,
                allow_empty_text: bool = False) -> InteractionData:
    """Load one Amazon category into :class:`InteractionData`.

    Items are the reviewed ASINs in order of first appearance; every one needs a
    non-empty text from the meta file unless ``allow_empty_text``.
    """
    reviews_path = Path(reviews_path)
    users_raw, items_raw, ts = _read_reviews(reviews_path)
    item_ids = list(dict.fromkeys(items_raw))
    imap = {a: k for k, a in enumerate(item_ids)}
    user_ids = list(dict.fromkeys(users_raw))
    umap = {u: k for k, u in enumerate(user_ids)}
    meta_path = Path(meta_path) if meta_path is not None else None
    texts, where, feats = _read_meta(meta_path, imap) if meta_path is not None else ({}, {}, _no_features())
    data = InteractionData(
        name=name or reviews_path.name.split(".")[0],
        user_ids=user_ids,
        item_ids=item_ids,
        users=np.fromiter((umap[u] for u in users_raw), np.int64, len(users_raw)),
        items=np.fromiter((imap[i] for i in items_raw), np.int64, len(items_raw)),
        timestamps=np.asarray(ts, np.float64),
        item_text=_item_texts(item_ids, texts, where, meta_path, allow_empty_text),
        item_features={k: [v.get(a, "") for a in item_ids] for k, v in feats.items()},
    )
    data.validate()
    return data


def _read_reviews(reviews_path: Path) -> tuple[list[str], list[str], list[float]]:
    """(reviewer ids, ASINs, review times) of every review line, in file order; one line naming a bad field."""
    users_raw, items_raw, ts = [], [], []
    for lineno, rec in _records(reviews_path):
        for key in ("reviewerID", "asin", "unixReviewTime"):
            if key not in rec:
                raise DataFileError(f"{reviews_path}: line {lineno}: missing field {key!r}")
        try:
            t = float(rec["unixReviewTime"])
        except (TypeError, ValueError):
            raise DataFileError(
                f"{reviews_path}: line {lineno}: field 'unixReviewTime': {rec['unixReviewTime']!r} is not a number"
            ) from None
        users_raw.append(str(rec["reviewerID"]))
        items_raw.append(str(rec["asin"]))
        ts.append(t)
    if not users_raw:
        raise DataFileError(f"{reviews_path}: no reviews found")
    return users_raw, items_raw, ts


def _no_features() -> dict[str, dict[str, object]]:
    return {"brand": {}, "categories": {}}


def _read_meta(meta_path: Path, imap: dict[str, int]) -> tuple[dict[str, str], dict[str, int], dict]:
    """Texts, meta-file line numbers and side features (brand, categories) of the reviewed ASINs in ``imap``."""
    texts: dict[str, str] = {}
    where: dict[str, int] = {}
    feats = _no_features()
    for lineno, rec in _records(meta_path):
        asin = rec.get("asin")
        if asin is None:
            raise DataFileError(f"{meta_path}: line {lineno}: missing field 'asin'")
        asin = str(asin)
        if asin in imap:
            texts[asin] = _text(rec)
            where[asin] = lineno
            feats["brand"][asin] = str(rec.get("brand") or "")
            feats["categories"][asin] = _categories(rec)
    return texts, where, feats


def _item_texts(item_ids: list[str], texts: dict[str, str], where: dict[str, int], meta_path: Path | None,
                allow_empty_text: bool) -> list[str]:
    """Each item's text; an item without one is an error naming its meta line (or a placeholder when allowed)."""
    item_text = []
    for a in item_ids:
        t = texts.get(a, "")
        if not t:
            if not allow_empty_text:
                loc = f"{meta_path}: line {where[a]}" if a in where else f"{meta_path or '<no meta file>'}"
                raise DataFileError(
                    f"{loc}: item {a!r} has empty text (no title/brand/categories); "
                    "set data.allow_empty_text: true to use a placeholder"
                )
            t = f"item {a}"
        item_text.append(t)
    return item_text
