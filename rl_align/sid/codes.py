"""Variable-length Semantic ID codes.

A code is a tuple of length 1..L_max; codes are stored padded with -1 in an
(n, L_max) int32 array plus an (n,) lengths array. Fixed-length baselines simply
have every length equal to L. Tokenisation appends an end token to every code.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NO_CODE = -1


@dataclass
class SidCodes:
    """Codes of n items.

    Attributes:
        codes: (n, L_max) int32, entries past each item's length are -1.
        lengths: (n,) int32 code length of each item (1..L_max).
        codebook_sizes: codes available at each level, length L_max.
    """

    codes: np.ndarray
    lengths: np.ndarray
    codebook_sizes: list[int]

    def __post_init__(self) -> None:
        self.codes = np.ascontiguousarray(self.codes, dtype=np.int32)
        self.lengths = np.ascontiguousarray(self.lengths, dtype=np.int32)
        self.codebook_sizes = [int(k) for k in self.codebook_sizes]
        self.validate()

    @classmethod
    def fixed(cls, codes: np.ndarray, codebook_sizes: list[int]) -> "SidCodes":
        """All items with the full length ``codes.shape[1]``."""
        return cls(codes, np.full(codes.shape[0], codes.shape[1], np.int32), codebook_sizes)

    @property
    def n(self) -> int:
        return int(self.codes.shape[0])

    @property
    def max_len(self) -> int:
        return int(self.codes.shape[1])

    def validate(self) -> None:
        """Raise ValueError when shapes, lengths, padding or code ranges are inconsistent."""
        n, L = self.codes.shape
        if self.lengths.shape != (n,):
            raise ValueError(f"lengths has shape {self.lengths.shape}, expected ({n},)")
        if len(self.codebook_sizes) != L:
            raise ValueError(f"{len(self.codebook_sizes)} codebook sizes for {L} levels")
        if n == 0:
            return
        if self.lengths.min() < 1 or self.lengths.max() > L:
            raise ValueError(f"code lengths must lie in [1, {L}], got [{self.lengths.min()}, {self.lengths.max()}]")
        inside = np.arange(L)[None, :] < self.lengths[:, None]
        if (self.codes[~inside] != NO_CODE).any():
            raise ValueError("codes past an item's length must be -1")
        sizes = np.asarray(self.codebook_sizes)[None, :].repeat(n, 0)
        if ((self.codes < 0) | (self.codes >= sizes))[inside].any():
            raise ValueError("a code lies outside its level's codebook")

    def as_tuples(self) -> list[tuple[int, ...]]:
        """Each item's code as a Python tuple (for tests and small catalogs)."""
        return [tuple(int(c) for c in row[:l]) for row, l in zip(self.codes, self.lengths)]

    def keys(self) -> np.ndarray:
        """One int64/bytes key per item identifying its full code (for collision counting).

        Returns:
            (n,) array; equal keys ⇔ equal codes (length included).
        """
        L = self.max_len
        bits = [max(1, int(np.ceil(np.log2(k + 1)))) for k in self.codebook_sizes]
        if sum(bits) + 8 <= 63:
            key = self.lengths.astype(np.int64)
            for lvl in range(L):
                key = (key << bits[lvl]) | (self.codes[:, lvl].astype(np.int64) + 1)
            return key
        padded = np.concatenate([self.lengths[:, None], self.codes], axis=1).astype(np.int32)
        return np.ascontiguousarray(padded).view(np.dtype((np.void, padded.dtype.itemsize * padded.shape[1]))).ravel()

    def collision_stats(self) -> dict:
        """collision_rate = share of items whose code is shared with another item; plus max items per code."""
        if self.n == 0:
            return {"collision_rate": 0.0, "colliding_items": 0, "colliding_codes": 0, "max_items_per_code": 0,
                    "unique_codes": 0}
        _, inv, counts = np.unique(self.keys(), return_inverse=True, return_counts=True)
        per_item = counts[inv]
        return {
            "collision_rate": float((per_item > 1).mean()),
            "colliding_items": int((per_item > 1).sum()),
            "colliding_codes": int((counts > 1).sum()),
            "max_items_per_code": int(counts.max()),
            "unique_codes": int(counts.size),
        }
