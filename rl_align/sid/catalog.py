"""SidCatalog: item ↔ SID maps, the policy's token layout, and the prefix trie.

Token layout (one vocabulary shared by prompts and targets)::

    0 <pad>   1 <bos>   2 <eos> (ends every SID)   3 <sep> (between history items)
    4 <unk>   then level 0 codes, level 1 codes, ... (each level has its own range)
    then, with ``sid.user_tokens``, the user tokens (prompt context only: rl_align/sid/user_tokens.py)
    then, with ``sid.history: items``, one history token per item (``<i_k>`` for dense item k: prompt context
    only, one position per history item; the target is still generated as SID tokens)

Files in a catalog directory: ``catalog.json`` (layout, item ids, stats),
``codes.npz`` (codes, lengths), ``trie.npz``, ``user_tokens.{json,npz}`` with user tokens and, for a bucket
catalog, ``buckets.npz`` (the within-bucket scorer's inputs) — plain JSON/NPZ, no pickle.

A *bucket* catalog (``buckets=True``, from ``sid.collision: bucket``) lets items share a code: the code stands
for its bucket and :attr:`SidCatalog.buckets` ranks the items inside it (rl_align/sid/buckets.py).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from rl_align.sid.buckets import Buckets, BucketScorer
from rl_align.sid.codes import SidCodes
from rl_align.sid.trie import SidTrie
from rl_align.sid.user_tokens import UserTokens
from rl_align.utils.io import atomic_dir, load_npz, read_json, write_json, write_npz

SPECIALS = ["<pad>", "<bos>", "<eos>", "<sep>", "<unk>"]
PAD, BOS, EOS, SEP, UNK = range(5)
LEVEL_NAMES = "abcdefghijklmnopqrstuvwxyz"


@dataclass
class TokenLayout:
    """Where each level's codes sit in the vocabulary.

    Attributes:
        codebook_sizes: codes per level.
        offsets: first token id of each level's range.
        vocab_size: specials + all level codes + the user tokens + the history item tokens.
        user_sizes: token ids of each user feature (after the level codes: :attr:`user_offset`).
        n_history: history item tokens (``sid.history: items``: one per item, after the user tokens:
            :attr:`history_offset`; 0 = items are written as their SID tokens).
    """

    codebook_sizes: list[int]
    offsets: list[int]
    vocab_size: int
    user_sizes: tuple = ()
    n_history: int = 0

    @property
    def user_offset(self) -> int:
        """First user token id: right after the last level's codes (the end of the code range)."""
        return self.history_offset - int(sum(self.user_sizes))

    @property
    def history_offset(self) -> int:
        """First history item token id (``<i_0>``): right after the user tokens."""
        return self.vocab_size - int(self.n_history)

    @classmethod
    def for_sizes(cls, sizes: Sequence[int], user_sizes: Sequence[int] = (), n_history: int = 0) -> "TokenLayout":
        offsets, o = [], len(SPECIALS)
        for k in sizes:
            offsets.append(o)
            o += int(k)
        return cls(list(map(int, sizes)), offsets, o + int(sum(user_sizes)) + int(n_history),
                   tuple(map(int, user_sizes)), int(n_history))

    def token_names(self, user_tokens: Optional[UserTokens] = None) -> list[str]:
        """Readable name of every token id, e.g. ``<a_12>`` for level 0 code 12, ``<u.gender_2>`` and ``<i_7>``
        (the history token of dense item 7)."""
        names = list(SPECIALS)
        for lvl, k in enumerate(self.codebook_sizes):
            names.extend(f"<{LEVEL_NAMES[lvl]}_{c}>" for c in range(k))
        names += user_tokens.token_names() if user_tokens is not None else []
        return names + [f"<i_{k}>" for k in range(self.n_history)]

    def is_code(self, tokens: torch.Tensor) -> torch.Tensor:
        """(...) token ids → (...) bool: a level code (what a SID is made of), not a special, user or history
        token."""
        return (tokens >= len(SPECIALS)) & (tokens < self.user_offset)

    def level_of(self, tokens: torch.Tensor) -> torch.Tensor:
        """(...) token ids → (...) level index, -1 for specials, user and history tokens."""
        off = torch.tensor(self.offsets + [self.user_offset], device=tokens.device)
        lvl = torch.searchsorted(off, tokens, right=True) - 1
        return torch.where(self.is_code(tokens), lvl, torch.full_like(lvl, -1))


class SidCatalog:
    """Items, their SIDs, the token layout and the trie.

    Args:
        item_ids: raw id of each item. codes: their codes. stats: free-form statistics saved with the catalog.
        buckets: allow shared codes (bucket SIDs); ``bucket_scorer`` orders the items inside a bucket.
        user_tokens: user side features written after ``<bos>`` of every prompt (``sid.user_tokens``).
        history_items: write history items as one token each (``sid.history: items``) instead of their SIDs.
    """

    def __init__(self, item_ids: list[str], codes: SidCodes, stats: Optional[dict] = None, buckets: bool = False,
                 bucket_scorer: Optional[BucketScorer] = None, user_tokens: Optional[UserTokens] = None,
                 history_items: bool = False) -> None:
        if len(item_ids) != codes.n:
            raise ValueError(f"{len(item_ids)} item ids for {codes.n} codes")
        if not buckets and codes.collision_stats()["colliding_items"]:
            raise ValueError("SidCatalog needs collision-free codes (resolve collisions first, or build a bucket "
                             "catalog with sid.collision: bucket)")
        self.item_ids = list(item_ids)
        self.codes = codes
        self.user_tokens = user_tokens if user_tokens is not None and user_tokens.n_features else None
        self.history_items = bool(history_items)
        self.layout = TokenLayout.for_sizes(codes.codebook_sizes, self.user_tokens.sizes if self.user_tokens else (),
                                            len(item_ids) if history_items else 0)
        self.stats = stats or {}
        self._index = {iid: k for k, iid in enumerate(self.item_ids)}
        self.tokens, self.token_lengths = self._tokenize(codes)
        self.trie = SidTrie.build(self.tokens, self.token_lengths, self.layout.vocab_size, shared_leaves=buckets)
        self.is_bucket_catalog = bool(buckets)
        _, bucket_of = np.unique(codes.keys(), return_inverse=True)
        self.buckets = Buckets(bucket_of.ravel(), bucket_scorer)

    @property
    def has_buckets(self) -> bool:
        """True when some code stands for more than one item."""
        return self.buckets.n_buckets < self.n_items

    def _tokenize(self, codes: SidCodes) -> tuple[np.ndarray, np.ndarray]:
        """(n, L_max+1) int64 tokens: level codes shifted into their ranges, then <eos>, then <pad>."""
        n, L = codes.codes.shape
        tok = np.full((n, L + 1), PAD, np.int64)
        inside = np.arange(L)[None, :] < codes.lengths[:, None]
        shifted = codes.codes.astype(np.int64) + np.asarray(self.layout.offsets, np.int64)[None, :]
        tok[:, :L][inside] = shifted[inside]
        tok[np.arange(n), codes.lengths] = EOS
        return tok, codes.lengths.astype(np.int64) + 1

    # ------------------------------------------------------------------ maps
    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def vocab_size(self) -> int:
        return self.layout.vocab_size

    @property
    def n_prefix(self) -> int:
        """Tokens between ``<bos>`` and the first history item: one per user feature (0 without user tokens)."""
        return self.user_tokens.n_features if self.user_tokens is not None else 0

    def prefix_tokens(self, users: Optional[np.ndarray]) -> Optional[np.ndarray]:
        """(N, n_prefix) token ids of the prompts' users ((N,) dense indices; -1 = unknown user), or None for a
        catalog without user tokens. ``users`` may be None only then: a catalog with user tokens refuses, so a
        caller that forgot them fails instead of training or decoding without the profile."""
        if self.user_tokens is None:
            return None
        if users is None:
            raise ValueError("this catalog writes user tokens (sid.user_tokens) into every prompt: pass the users")
        ids = self.user_tokens.value_ids(users)
        return ids + (self.layout.user_offset + np.cumsum((0,) + self.layout.user_sizes[:-1]))[None, :]

    def history_tokens(self, items: np.ndarray) -> np.ndarray:
        """(...) dense item indices → (...) their history tokens (``sid.history: items``; ValueError otherwise)."""
        if not self.history_items:
            raise ValueError("this catalog writes history items as SIDs (sid.history: codes): no history tokens")
        return np.asarray(items, np.int64) + self.layout.history_offset

    @property
    def max_sid_len(self) -> int:
        """Longest token sequence of an item, end token included."""
        return int(self.token_lengths.max())

    def index_of(self, raw_item_id: str) -> int:
        """Dense index of a raw item id; KeyError naming the id if it is not in the catalog."""
        try:
            return self._index[str(raw_item_id)]
        except KeyError:
            raise KeyError(f"item {raw_item_id!r} is not in the catalog ({self.n_items} items)") from None

    def item_tokens(self, item: int) -> list[int]:
        """Token ids of item ``item`` (dense index), end token included."""
        return self.tokens[item, : self.token_lengths[item]].tolist()

    def sid_string(self, item: int) -> str:
        """Readable SID, e.g. ``<a_3><b_17><c_0><eos>``."""
        names = self.layout.token_names(self.user_tokens)
        return "".join(names[t] for t in self.item_tokens(item))

    def decode(self, sequences: torch.Tensor | np.ndarray) -> np.ndarray:
        """(N, t) generated token sequences (each ending with <eos>, then anything) → (N,) item index or -1 (a
        bucket code gives its representative, the bucket's lowest item index)."""
        seq = torch.as_tensor(np.asarray(sequences), dtype=torch.long)
        # read until the first <eos> (inclusive)
        is_eos = seq == EOS
        has = is_eos.any(1)
        first = torch.where(has, is_eos.float().argmax(1), torch.full((seq.shape[0],), seq.shape[1] - 1))
        lengths = first + 1
        items = self.trie.lookup(seq, lengths)
        return torch.where(has, items, torch.full_like(items, -1)).numpy()

    def fingerprint(self) -> str:
        """SHA-256 of the layout and every item's tokens: a policy trained on one catalog checks it."""
        h = hashlib.sha256()
        h.update(str(self.layout.codebook_sizes).encode())
        h.update(np.ascontiguousarray(self.tokens).tobytes())
        h.update("\x00".join(self.item_ids).encode())
        if self.user_tokens is not None:
            h.update(self.user_tokens.fingerprint_bytes())
        if self.history_items:
            h.update(b"history:items")
        return h.hexdigest()[:16]

    # ------------------------------------------------------------------ io
    def save(self, directory: str | Path) -> None:
        """Write catalog.json, codes.npz and trie.npz atomically (the directory appears complete or not at all)."""
        with atomic_dir(directory) as tmp:
            write_npz(tmp / "codes.npz", codes=self.codes.codes, lengths=self.codes.lengths)
            self.trie.save(tmp / "trie.npz")
            write_json(tmp / "catalog.json", {
                "format": "rl-align-sid-catalog/1",
                "n_items": self.n_items,
                "codebook_sizes": self.layout.codebook_sizes,
                "offsets": self.layout.offsets,
                "vocab_size": self.layout.vocab_size,
                "specials": SPECIALS,
                "fingerprint": self.fingerprint(),
                "item_ids": self.item_ids,
                "buckets": self.is_bucket_catalog,
                "user_tokens": self.user_tokens.names if self.user_tokens is not None else [],
                "history": "items" if self.history_items else "codes",
                "stats": self.stats,
            })
            if self.user_tokens is not None:
                self.user_tokens.save(tmp / "user_tokens")
            self.buckets.save_scorer(tmp / "buckets.npz")

    @classmethod
    def load(cls, directory: str | Path) -> "SidCatalog":
        directory = Path(directory)
        meta = read_json(directory / "catalog.json")
        for key in ("item_ids", "codebook_sizes", "fingerprint"):
            if key not in meta:
                raise ValueError(f"{directory / 'catalog.json'}: missing key {key!r}")
        z = load_npz(directory / "codes.npz")
        buckets = bool(meta.get("buckets", False))
        scorer = Buckets.load_scorer(directory / "buckets.npz") if buckets else None
        users = UserTokens.load(directory / "user_tokens") if meta.get("user_tokens") else None
        cat = cls(meta["item_ids"], SidCodes(z["codes"], z["lengths"], meta["codebook_sizes"]), meta.get("stats"),
                  buckets=buckets, bucket_scorer=scorer, user_tokens=users,
                  history_items=meta.get("history", "codes") == "items")
        if cat.fingerprint() != meta["fingerprint"]:
            raise ValueError(f"{directory}: catalog fingerprint mismatch (files edited or mixed from two catalogs)")
        return cat
