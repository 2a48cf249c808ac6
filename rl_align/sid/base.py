"""The SID tokenizer interface and its registry.

A tokenizer maps item embeddings to (possibly variable-length) codes:
``fit(emb)`` learns codebooks, ``encode(emb)`` assigns codes, ``save``/``load``
use plain files (JSON + NPZ/safetensors), never pickle.
"""

from __future__ import annotations

import abc
import dataclasses
from pathlib import Path
from typing import Optional

import numpy as np

from rl_align.config import SidConfig, from_dict
from rl_align.sid.codes import SidCodes
from rl_align.sid.faiss_device import faiss_gpu
from rl_align.utils.io import read_json, write_json
from rl_align.utils.registry import Registry

TOKENIZERS: Registry[type["SidTokenizer"]] = Registry("SID tokenizer")


class SidTokenizer(abc.ABC):
    """Learns codebooks on item embeddings and assigns each item a code."""

    #: the name it is registered under (set by ``@TOKENIZERS.register``; what :meth:`save` records)
    registry_name: str = ""
    #: True when codes may stop early (lengths differ): ``sid.collision: item_token`` then does not apply
    variable_length: bool = False

    def __init__(self, cfg: SidConfig) -> None:
        self.cfg = cfg
        self.gpu = faiss_gpu(cfg.faiss_gpu)  # k-means and assignment on the GPU(s) faiss sees

    @property
    @abc.abstractmethod
    def codebook_sizes(self) -> list[int]:
        """Codes available per level."""

    @abc.abstractmethod
    def fit(self, emb: np.ndarray, popularity: Optional[np.ndarray] = None) -> "SidTokenizer":
        """Learn codebooks from (n, d) float32 ``emb``; ``popularity`` (n,) is used by adaptive tokenizers."""

    @abc.abstractmethod
    def encode(self, emb: np.ndarray) -> SidCodes:
        """Assign codes to (n, d) ``emb``."""

    @abc.abstractmethod
    def last_level_candidates(self, emb: np.ndarray, codes: SidCodes, topn: int) -> tuple[np.ndarray, np.ndarray]:
        """Alternatives for each item's last code, nearest first, given its prefix.

        Returns:
            cand: (n, topn) int64 candidate codes at the item's last level.
            dist: (n, topn) float32 squared distance of each candidate.
        """

    @abc.abstractmethod
    def _save_state(self, directory: Path) -> None:
        """Write learned state (arrays/weights) into ``directory``."""

    @abc.abstractmethod
    def _load_state(self, directory: Path) -> None:
        """Read learned state written by :meth:`_save_state`."""

    def fit_encode(self, emb: np.ndarray, popularity: Optional[np.ndarray] = None) -> SidCodes:
        """``fit`` then ``encode`` on the same embeddings."""
        return self.fit(emb, popularity).encode(emb)

    def save(self, directory: str | Path) -> None:
        """Save config + state as plain files into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self._save_state(directory)
        write_json(directory / "tokenizer.json", {"name": self.registry_name, "config": dataclasses.asdict(self.cfg)})

    @staticmethod
    def load(directory: str | Path) -> "SidTokenizer":
        """Load a tokenizer saved by :meth:`save`, whatever its registered class."""

        directory = Path(directory)
        meta = read_json(directory / "tokenizer.json")
        cls = TOKENIZERS.get(meta["name"])
        tok = cls(from_dict(SidConfig, meta["config"], source=str(directory / "tokenizer.json")))
        tok._load_state(directory)
        return tok


def build_tokenizer(cfg: SidConfig) -> SidTokenizer:
    """Instantiate the tokenizer ``cfg.tokenizer`` names (built-ins register when :mod:`rl_align.sid` loads)."""
    return TOKENIZERS.get(cfg.tokenizer)(cfg)
