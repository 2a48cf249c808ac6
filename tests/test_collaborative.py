"""Collaborative item vectors for the tokenizer: training interactions only, spectral factors, blending."""

import numpy as np
import pytest

from rl_align.data.split import train_popularity, training_pairs
from rl_align.embed.collaborative import blend, cf_vectors


def _csr(seqs):
    offs = np.concatenate([[0], np.cumsum([len(s) for s in seqs])]).astype(np.int64)
    return np.concatenate(seqs).astype(np.int64), offs


def test_training_pairs_drop_each_users_valid_and_test_items():
    items, offs = _csr([[0, 1, 2, 3], [4, 5, 6], [7, 8]])
    it, us = training_pairs(items, offs)
    assert it.tolist() == [0, 1, 4] and us.tolist() == [0, 0, 1]


def test_train_popularity_counts_training_events_only_even_for_short_users():
    """One count for the evaluator, the bucket scorers, the ranker's evaluation and the exposure simulator: a user's
    last two items are valid/test targets, and a user with fewer than three items contributes nothing (an earlier
    mask that cut offsets[1:] - 2 would have cut the previous user's last training item instead)."""
    items, offs = _csr([[0, 1, 2, 3], [4, 5], [6], [1, 1, 7, 8]])
    pop = train_popularity({"seq_items": items, "seq_offsets": offs}, 9)
    assert pop.tolist() == [1, 3, 0, 0, 0, 0, 0, 0, 0]


def test_cf_vectors_group_co_consumed_items_and_ignore_held_out_events():
    rng = np.random.default_rng(0)
    # users 0-39 watch items 0-9, users 40-79 items 10-19; item 20 is only ever a held-out (test) item
    seqs = []
    for u in range(80):
        pool = np.arange(10) if u < 40 else np.arange(10, 20)
        seqs.append(list(rng.choice(pool, 6, replace=False)) + [int(rng.integers(0, 20)), 20])
    items, offs = _csr(seqs)
    it, us = training_pairs(items, offs)
    v = cf_vectors(it, us, 21, 80, dim=8, seed=0)
    assert v.shape == (21, 8)
    assert np.allclose(np.linalg.norm(v[:20], axis=1), 1.0, atol=1e-5)
    assert not v[20].any()  # never trained on → zero
    cos = v[:20] @ v[:20].T
    same = np.mean([cos[a, b] for a in range(10) for b in range(10) if a != b])
    cross = np.mean([cos[a, b] for a in range(10) for b in range(10, 20)])
    assert same > 0.5 > cross + 0.4, (same, cross)
    # deterministic, and blind to what sits in the held-out positions
    seqs2 = [s[:-2] + [int(rng.integers(0, 21)), int(rng.integers(0, 21))] for s in seqs]
    it2, us2 = training_pairs(*_csr(seqs2))
    assert np.array_equal(cf_vectors(it2, us2, 21, 80, dim=8, seed=0), v)
    with pytest.raises(ValueError, match="cf_dim must be ≥ 1"):
        cf_vectors(it, us, 21, 80, dim=0)


def test_blend_makes_cosine_a_weighted_sum_of_the_views():
    rng = np.random.default_rng(1)
    t = rng.normal(size=(5, 7)).astype(np.float32)
    c = rng.normal(size=(5, 3)).astype(np.float32)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    b = blend(t, c, 0.3)
    tn = t / np.linalg.norm(t, axis=1, keepdims=True)
    assert b.shape == (5, 10) and np.allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
    assert np.allclose(b @ b.T, 0.7 * tn @ tn.T + 0.3 * c @ c.T, atol=1e-5)
    with pytest.raises(ValueError, match="cf_weight must be in"):
        blend(t, c, 1.5)


def test_embed_stage_joins_the_collaborative_view_and_sids_run_on_it(tmp_path, ml100k_emb):
    import json
    from pathlib import Path

    from rl_align.config import RunConfig, load_config
    from rl_align.pipeline import run_pipeline

    quick = Path(__file__).resolve().parents[1] / "experiments/configs/quick.yaml"
    cfg = load_config(quick, RunConfig, ["embed.cf_dim=16", "embed.cf_weight=0.5"])
    cfg.stages = ["data", "embed", "sids"]
    run_pipeline(cfg, tmp_path / "run")
    emb = np.load(tmp_path / "run" / "embed" / "item_emb.npy")
    assert emb.shape == (1682, ml100k_emb.shape[1] + 16)
    # the text half is the plain text embedding, scaled by √(1 − w)
    assert np.allclose(emb[:, :ml100k_emb.shape[1]], np.sqrt(0.5) * ml100k_emb, atol=1e-5)
    info = json.loads((tmp_path / "run" / "embed" / "info.json").read_text())
    # unit vectors, except items whose only events are held out: no collaborative half, norm √(1 − w)
    norm = np.linalg.norm(emb, axis=1)
    lone = np.isclose(norm, np.sqrt(0.5), atol=1e-4)
    assert np.isclose(norm[~lone], 1.0, atol=1e-4).all() and lone.sum() == 4   # ML-100K: 4 such items
    assert info["cf_items_filled_from_text_neighbours"] == 0
    # with cf_fill_neighbours those 4 items take their text neighbours' collaborative vectors instead
    from rl_align.pipeline import stage_embed
    from rl_align.run_dir import RunDir

    cfg2 = load_config(quick, RunConfig, ["embed.cf_dim=16", "embed.cf_fill_neighbours=10"])
    info2 = stage_embed(RunDir(tmp_path / "run", cfg2))
    emb2 = np.load(tmp_path / "run" / "embed" / "item_emb.npy")
    assert info2["cf_items_filled_from_text_neighbours"] == 4
    assert np.allclose(np.linalg.norm(emb2, axis=1), 1.0, atol=1e-4) and np.allclose(emb2[~lone], emb[~lone])
    assert info["cf_dim"] == 16 and info["cf_weight"] == 0.5
    stats = json.loads((tmp_path / "run" / "sids" / "stats.json").read_text())
    assert stats["collision_rate"] == 0.0 and stats["n_items"] == 1682


def test_bad_collaborative_settings_are_refused_when_the_config_loads():
    from rl_align.config import ConfigError, RunConfig, from_dict

    for bad, msg in (({"cf_dim": -1}, "embed.cf_dim: expected a value ≥ 0"),
                     ({"cf_dim": 8, "cf_weight": 1.5}, "embed.cf_weight: expected a value ≥ 0 and ≤ 1"),
                     ({"cf_dim": 8, "cf_fill_neighbours": -1}, "embed.cf_fill_neighbours: expected a value ≥ 0")):
        with pytest.raises(ConfigError, match=msg):
            from_dict(RunConfig, {"embed": bad}, source="test")


def test_items_without_interactions_borrow_their_text_neighbours_collaborative_vector():
    from rl_align.embed.collaborative import fill_from_neighbours

    rng = np.random.default_rng(2)
    text = rng.normal(size=(6, 4)).astype(np.float32)
    text[5] = text[0] + 0.01 * rng.normal(size=4)  # item 5 reads like item 0
    cf = np.eye(6, 3, dtype=np.float32)
    cf[3:] = 0.0
    cf[4] = [0, 0, 1]
    out, n = fill_from_neighbours(text, cf, k=1)
    assert n == 2 and np.allclose(out[5], cf[0]) and np.allclose(out[:3], cf[:3]) and np.allclose(out[4], cf[4])
    assert np.isclose(np.linalg.norm(out[3]), 1.0)
    same, n0 = fill_from_neighbours(text, cf, k=0)
    assert n0 == 0 and np.array_equal(same, cf)
    with pytest.raises(ValueError, match="cf_fill_neighbours must be ≥ 0"):
        fill_from_neighbours(text, cf, k=-1)
