import numpy as np
import pytest

from rl_align.config import EmbedConfig, SyntheticConfig
from rl_align.data.split import leave_one_out
from rl_align.data.synthetic import generate_synthetic
from rl_align.embed import embed_items
from rl_align.embed.encoders import EmbeddingError, content_key, load_npy_embeddings


def test_synthetic_catalog_properties():
    cfg = SyntheticConfig(n_items=20_000, n_users=3_000, dim=64, n_clusters=50, zipf_a=1.1, stay_prob=0.8)
    data = generate_synthetic(cfg)
    assert data.n_items == 20_000 and data.item_embeddings.shape == (20_000, 64)
    assert np.allclose(np.linalg.norm(data.item_embeddings, axis=1), 1, atol=1e-4)
    pop = np.sort(data.item_popularity())[::-1]
    assert pop[:200].sum() / pop.sum() > 0.3  # 1% of items take a large share: Zipf head
    cl = np.asarray(data.item_features["cluster"])
    s = leave_one_out(data, 20)
    seq = s.seq_items
    same_user = np.repeat(np.arange(data.n_users), np.diff(s.seq_offsets))
    nxt = same_user[1:] == same_user[:-1]
    stay = (cl[seq[1:]] == cl[seq[:-1]])[nxt].mean()
    assert stay > 0.75  # sequential users stay in their cluster
    again = generate_synthetic(cfg)
    assert np.array_equal(again.items, data.items)  # deterministic by seed


def test_minilm_embeddings_ml100k(ml100k, ml100k_emb, tmp_path):
    assert ml100k_emb.shape == (1682, 384) and ml100k_emb.dtype == np.float32
    assert np.allclose(np.linalg.norm(ml100k_emb, axis=1), 1, atol=1e-4)
    # semantically close titles are closer than unrelated ones
    titles = ml100k.item_text
    star_wars = next(i for i, t in enumerate(titles) if t.startswith("Star Wars"))
    empire = next(i for i, t in enumerate(titles) if t.startswith("Empire Strikes Back"))
    sims = ml100k_emb @ ml100k_emb[star_wars]
    assert sims[empire] > np.median(sims) + 0.2


def test_embedding_cache_hit_and_key(tmp_path):
    texts = ["a red apple", "a green pear"]
    e1, i1 = embed_items(texts, EmbedConfig(), tmp_path)
    e2, i2 = embed_items(texts, EmbedConfig(), tmp_path)
    assert i1["cache"] == "miss" and i2["cache"] == "hit" and np.array_equal(e1, e2)
    assert content_key("m", ["ab", "c"], True) != content_key("m", ["a", "bc"], True)
    with pytest.raises(EmbeddingError, match="item text #1 is empty"):
        embed_items(["x", " "], EmbedConfig(), tmp_path)


def test_npy_embeddings_validation(tmp_path):
    good = tmp_path / "e.npy"
    np.save(good, np.ones((3, 4), np.float32))
    assert load_npy_embeddings(good, 3).shape == (3, 4)
    bad = tmp_path / "nan.npy"
    arr = np.ones((3, 4), np.float32)
    arr[1, 2] = np.nan
    np.save(bad, arr)
    with pytest.raises(EmbeddingError, match=r"nan\.npy: 1 row\(s\) contain NaN/inf \(first: row 1\)"):
        load_npy_embeddings(bad, 3)
    with pytest.raises(EmbeddingError, match=r"e\.npy: has 3 rows, expected 5"):
        load_npy_embeddings(good, 5)
    obj = tmp_path / "obj.npy"
    np.save(obj, np.array([{"a": 1}] * 3, dtype=object), allow_pickle=True)
    with pytest.raises(EmbeddingError, match="not a plain .npy"):
        load_npy_embeddings(obj, 3)
    with pytest.raises(EmbeddingError, match="not found"):
        load_npy_embeddings(tmp_path / "missing.npy", 3)
    cfg = EmbedConfig(source="npy", npy_path=str(good), normalize=True)
    e, info = embed_items(["a", "b", "c"], cfg)
    assert info["source"] == "npy" and np.allclose(np.linalg.norm(e, axis=1), 1)
