"""Data layer: loaders (RecBole atomic files, Amazon reviews, synthetic), splits, statistics."""

from __future__ import annotations

from pathlib import Path

from rl_align.config import DataConfig
from rl_align.data.amazon import load_amazon
from rl_align.data.atomic_files import read_header
from rl_align.data.dataset import InteractionData, drop_short_users, k_core
from rl_align.data.fetch import ML100K_USER_FIELDS, fetch_ml100k
from rl_align.data.recbole import USER, load_recbole
from rl_align.data.split import LeaveOneOutSplit, SequenceExamples, leave_one_out
from rl_align.data.synthetic import generate_synthetic

__all__ = ["InteractionData", "LeaveOneOutSplit", "SequenceExamples", "leave_one_out", "load_dataset",
           "user_feature_names"]


def load_dataset(cfg: DataConfig) -> InteractionData:
    """Load the dataset ``cfg`` names, then apply k-core and minimum-length filters."""
    if cfg.dataset == "ml-100k":
        data = load_recbole(fetch_ml100k(cfg.cache_dir), "ml-100k", cfg.allow_empty_text)
    elif cfg.dataset == "recbole":
        if not cfg.path:
            raise ValueError("data.path: required for dataset 'recbole' (directory of <name>.inter/.item)")
        data = load_recbole(cfg.path, cfg.name, cfg.allow_empty_text)
    elif cfg.dataset == "amazon":
        if not cfg.path:
            raise ValueError("data.path: required for dataset 'amazon' (the reviews_*.json.gz file)")
        data = load_amazon(cfg.path, cfg.meta_path, cfg.name, cfg.allow_empty_text)
    elif cfg.dataset == "synthetic":
        data = generate_synthetic(cfg.synthetic)
    else:
        raise ValueError(f"data.dataset: unknown dataset {cfg.dataset!r}")
    if cfg.k_core > 1:
        data = k_core(data, cfg.k_core)
    if cfg.min_user_interactions > 1:
        data, _ = drop_short_users(data, max(cfg.min_user_interactions, 1))
    return data


def user_feature_names(cfg: DataConfig) -> list[str] | None:
    """The user side features ``cfg``'s dataset carries, known before loading it (None: not knowable yet, e.g. a
    recbole directory that does not exist, which the data stage reports)."""
    if cfg.dataset == "ml-100k":
        return list(ML100K_USER_FIELDS)
    if cfg.dataset != "recbole":
        return []  # amazon reviews and the synthetic catalog have no user features
    if not cfg.path:
        return None
    user = Path(cfg.path) / f"{cfg.name or Path(cfg.path).name}.user"
    if not user.is_file():
        return [] if Path(cfg.path).is_dir() else None
    return [n for n in read_header(user) if n != USER]
