"""Side features of items and users as integer tables the ranker embeds.

Every field becomes an ``(n_entities + 1, T)`` int64 table (row 0 = padding
entity) of value ids: 0 = missing/padding, 1 = out-of-vocabulary, 2.. = values.
Kinds:

* ``categorical`` — one value per entity (gender, occupation), T = 1;
* ``multi`` — a list of values (genres), T = up to ``MAX_TOKENS``, mean-pooled;
* ``bucket`` — a number (age, release year) cut into quantile bins, T = 1.

``auto_specs`` picks kinds from the data: numbers (≥ 95% of values, and no
leading zeros — "01701" is a code, not a number) → bucket, lists → multi,
strings → categorical, and drops text-like fields (more distinct values than
``max(50, n / 20)``: titles, zip codes).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any, Optional

import numpy as np

KINDS = ("categorical", "multi", "bucket")
MAX_TOKENS = 8
N_BUCKETS = 10
MIN_COUNT = 2


@dataclass
class FeatureSpec:
    """How one field is encoded.

    Attributes:
        name: field name in the dataset (e.g. ``"class"``).
        kind: categorical | multi | bucket.
        vocab: value strings with ids 2.. (categorical/multi); empty for bucket.
        edges: bucket boundaries (bucket); empty otherwise.
        width: T, values per entity in the table.
    """

    name: str
    kind: str
    vocab: list
    edges: list
    width: int

    @property
    def n_values(self) -> int:
        """Embedding rows needed: pad + OOV + values (or buckets)."""
        return 2 + (len(self.edges) + 1 if self.kind == "bucket" else len(self.vocab))

    def to_json(self) -> dict:
        return asdict(self)


def _as_float(v: Any) -> Optional[float]:
    if v is None or isinstance(v, list):
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _tokens(v: Any) -> list[str]:
    if v is None:
        return []
    if isinstance(v, list):
        return [str(t) for t in v]
    s = str(v)
    return [s] if s != "" else []


def build_spec(name: str, values: list, kind: str) -> FeatureSpec:
    """Fit a :class:`FeatureSpec` of ``kind`` on ``values`` (one entry per entity)."""
    if kind not in KINDS:
        raise ValueError(f"feature {name!r}: unknown kind {kind!r}; expected one of {list(KINDS)}")
    if kind == "bucket":
        nums = np.array([x for x in (_as_float(v) for v in values) if x is not None and np.isfinite(x)])
        if nums.size == 0:
            raise ValueError(f"feature {name!r}: kind 'bucket' needs numbers, found none")
        edges = np.unique(np.quantile(nums, np.linspace(0, 1, N_BUCKETS + 1)[1:-1])).tolist()
        return FeatureSpec(name, kind, [], edges, 1)
    counts = Counter(t for v in values for t in _tokens(v))
    vocab = sorted(t for t, c in counts.items() if c >= MIN_COUNT)
    width = 1 if kind == "categorical" else max(1, min(MAX_TOKENS, max((len(_tokens(v)) for v in values), default=1)))
    return FeatureSpec(name, kind, vocab, [], width)


def auto_specs(features: dict[str, list], n_entities: int) -> list[FeatureSpec]:
    """Pick fields and kinds from the data (see the module doc)."""
    limit = max(50, n_entities // 20)
    specs = []
    for name, values in sorted(features.items()):
        present = [v for v in values if v is not None and v != "" and v != []]
        if not present:
            continue
        numeric = sum(_as_float(v) is not None for v in present) / len(present)
        code_like = any(isinstance(v, str) and len(v) > 1 and v[0] == "0" and v[1].isdigit() for v in present)
        if numeric >= 0.95 and not code_like and len({str(v) for v in present}) > 12:  # a few junk values ("unknown") → OOV
            specs.append(build_spec(name, values, "bucket"))
            continue
        kind = "multi" if any(isinstance(v, list) for v in present) else "categorical"
        spec = build_spec(name, values, kind)
        if 0 < len(spec.vocab) <= limit:
            specs.append(spec)
    return specs


def specs_from_config(features: dict[str, list], chosen: Optional[dict], n_entities: int,
                      what: str) -> list[FeatureSpec]:
    """Specs for ``ranker.<what>_features`` (``None`` = auto); unknown fields or kinds are named in the error."""
    if chosen is None:
        return auto_specs(features, n_entities)
    out = []
    for name, kind in chosen.items():
        if name not in features:
            raise ValueError(f"ranker.{what}_features: field {name!r} is not in the dataset "
                             f"(available: {sorted(features)})")
        if kind not in KINDS:
            raise ValueError(f"ranker.{what}_features.{name}: kind {kind!r} is not one of {list(KINDS)}")
        out.append(build_spec(name, features[name], kind))
    return out


def encode(spec: FeatureSpec, values: list) -> np.ndarray:
    """(n_entities + 1, T) int64 table of value ids; row 0 is the padding entity (all zeros)."""
    n = len(values)
    table = np.zeros((n + 1, spec.width), np.int64)
    if spec.kind == "bucket":
        edges = np.asarray(spec.edges, np.float64)
        for i, v in enumerate(values):
            x = _as_float(v)
            table[i + 1, 0] = 1 if x is None or not np.isfinite(x) else 2 + int(np.searchsorted(edges, x, "right"))
        return table
    index = {t: k + 2 for k, t in enumerate(spec.vocab)}
    for i, v in enumerate(values):
        toks = _tokens(v)[: spec.width]
        for j, t in enumerate(toks):
            table[i + 1, j] = index.get(t, 1)
    return table
