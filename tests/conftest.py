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


@pytest.fixture(scope="session")
def zipf_items():
    """2,000 items in 40 clusters, Zipf popularity: the head is the most interacted 20%."""
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(40, 16)).astype(np.float32) * 3
    lab = rng.integers(0, 40, 2000)
    emb = centers[lab] + rng.normal(size=(2000, 16)).astype(np.float32)
    pop = rng.zipf(1.3, 2000).astype(np.float64)
    return emb, np.minimum(pop, 1e5)
