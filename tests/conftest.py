"""Shared fixtures: one ML-100K fetch and one MiniLM embedding per test session."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")


@pytest.fixture(scope="session")
def ml100k():
    """The real ML-100K dataset (fetched from the recbole wheel once, then cached)."""
    from rl_align.config import DataConfig
    from rl_align.data import load_dataset

    return load_dataset(DataConfig())


@pytest.fixture(scope="session")
def ml100k_emb(ml100k):
    """MiniLM embeddings of ML-100K's item texts (disk-cached)."""
    from rl_align.config import EmbedConfig
    from rl_align.data.fetch import cache_root
    from rl_align.embed import embed_items

    emb, _ = embed_items(ml100k.item_text, EmbedConfig(), cache_root())
    return emb


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray (loopback) for the whole test run; its dashboard off 8265, which the job-submit test's head uses."""
    import socket

    import ray

    from rl_align.ray_utils import init_ray

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    init_ray(dashboard_port=port)
    yield
    ray.shutdown()
