"""User side features as prompt tokens (``sid.user_tokens``): pure numpy.

Each chosen feature becomes one token written after ``<bos>`` and before the history, so every prompt and training
window reads ``<bos> <u.gender_3> <u.age_5> <u.occupation_14> a_3 b_17 c_0 <eos> ...``. The tokens are context only:
they are never a label and the trie never allows them, so decoding is unchanged.

Features are encoded by :mod:`rl_align.data.features` (the ranker's encoder): a number (age) is cut into quantile
bins, a string (gender, occupation) is a category, and text-like fields (zip codes: more distinct values than
``max(50, n / 20)``) are refused. ``user_id`` is the user's own token, one per training user (TIGER's user token).
Value id 1 is "unknown" (a missing value, a value seen once, or a user the catalog does not know, as in serving);
id 0 (padding) is never written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rl_align.data.features import auto_specs, encode
from rl_align.utils.io import load_npz, read_json, write_json, write_npz

USER_ID = "user_id"
UNKNOWN = 1


@dataclass
class UserTokens:
    """The user-token vocabulary and every user's tokens.

    Attributes:
        names: the features, in prompt order.
        sizes: token ids each feature takes (padding, unknown, then its values or bins).
        table: (n_users, F) int64 value ids (≥ 1) of each user, in the split's dense user order.
        specs: the data features' encodings as JSON (``None`` for ``user_id``), to encode a new user's profile.
    """

    names: list[str]
    sizes: list[int]
    table: np.ndarray
    specs: list

    @classmethod
    def fit(cls, names: list[str], user_features: dict[str, list], n_users: int) -> "UserTokens":
        """Encode the features ``names`` of ``n_users`` users (``user_features``: name → one value per user)."""
        cols, sizes, specs = [], [], []
        for name in names:
            if name == USER_ID:
                cols.append(np.arange(n_users, dtype=np.int64) + 2)
                sizes.append(n_users + 2)
                specs.append(None)
                continue
            if name not in user_features:
                raise ValueError(f"sid.user_tokens: {name!r} is not a user feature of this dataset "
                                 f"(available: {sorted(user_features) + [USER_ID]})")
            found = auto_specs({name: user_features[name]}, n_users)
            if not found or found[0].kind == "multi":
                raise ValueError(f"sid.user_tokens: {name!r} is text-like or a list (too many distinct values for "
                                 "one token), so it cannot be a prompt token")
            spec = found[0]
            cols.append(np.maximum(encode(spec, user_features[name])[1:, 0], UNKNOWN))
            sizes.append(spec.n_values)
            specs.append(spec.to_json())
        table = np.stack(cols, 1) if cols else np.zeros((n_users, 0), np.int64)
        return cls(list(names), sizes, table.astype(np.int64), specs)

    @property
    def n_features(self) -> int:
        return len(self.names)

    @property
    def n_tokens(self) -> int:
        """Vocabulary ids the user tokens take."""
        return int(sum(self.sizes))

    def value_ids(self, users: np.ndarray) -> np.ndarray:
        """(N,) dense user indices (-1 or out of range = unknown user) → (N, F) value ids."""
        users = np.asarray(users, np.int64)
        known = (users >= 0) & (users < self.table.shape[0])
        return np.where(known[:, None], self.table[np.where(known, users, 0)], UNKNOWN)

    def token_names(self) -> list[str]:
        """Readable names, e.g. ``<u.gender_2>`` (value id 2 of feature gender)."""
        return [f"<u.{n}_{v}>" for n, k in zip(self.names, self.sizes) for v in range(k)]

    def save(self, path: Path) -> None:
        write_npz(Path(path).with_suffix(".npz"), table=self.table)
        write_json(Path(path).with_suffix(".json"), {"names": self.names, "sizes": self.sizes, "specs": self.specs})

    @classmethod
    def load(cls, path: Path) -> "UserTokens":
        meta = read_json(Path(path).with_suffix(".json"))
        return cls(meta["names"], [int(s) for s in meta["sizes"]], load_npz(Path(path).with_suffix(".npz"))["table"],
                   meta["specs"])

    def fingerprint_bytes(self) -> bytes:
        return (str(self.names) + str(self.sizes)).encode() + np.ascontiguousarray(self.table).tobytes()


__all__ = ["UserTokens", "USER_ID"]
