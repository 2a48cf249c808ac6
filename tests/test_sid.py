"""Tokenizers (round trips, no collapse), collision resolution, catalog."""

import numpy as np
import pytest

from rl_align.config import RqVaeConfig, SidConfig
from rl_align.sid import SidCatalog, SidCodes, SidTokenizer, build_tokenizer, resolve_collisions
from rl_align.sid.collisions import append_level, item_level
from rl_align.sid.stats import sid_stats


@pytest.fixture(scope="module")
def blobs():
    from rl_align.data.synthetic import synthetic_embeddings

    x, _ = synthetic_embeddings(3000, 32, 40, 0.8, seed=1)
    return x


def test_rq_kmeans_roundtrip(blobs, tmp_path):
    tok = build_tokenizer(SidConfig(levels=3, codebook_size=16))
    codes = tok.fit_encode(blobs)
    assert codes.codes.shape == (3000, 3) and (codes.lengths == 3).all()
    tok.save(tmp_path / "tok")
    again = SidTokenizer.load(tmp_path / "tok")
    assert np.array_equal(again.encode(blobs).codes, codes.codes)
    # each level lowers the reconstruction error
    errs = []
    for L in (1, 2, 3):
        sub = SidCodes(codes.codes[:, :L], codes.lengths.clip(max=L), [16] * L)
        errs.append(((blobs - tok.reconstruct(sub)) ** 2).sum(1).mean())
    assert errs[0] > errs[1] > errs[2]


def test_rq_vae_roundtrip_no_collapse(blobs, tmp_path):
    cfg = SidConfig(tokenizer="rq_vae", levels=3, codebook_size=16,
                    rq_vae=RqVaeConfig(hidden_dims=[64], latent_dim=16, epochs=40, batch_size=512))
    tok = build_tokenizer(cfg)
    codes = tok.fit_encode(blobs)
    st = sid_stats(codes)
    for lv in st["levels"]:
        assert lv["utilisation"] >= 0.9, lv  # dead-code restarts keep codebooks in use
        assert lv["perplexity"] >= 0.8 * 16, lv  # codes are used evenly, not collapsed onto a few
    km = sid_stats(build_tokenizer(SidConfig(levels=3, codebook_size=16)).fit_encode(blobs))
    assert st["collision_rate"] <= km["collision_rate"]  # at least as discriminative as RQ-KMeans here
    tok.save(tmp_path / "vae")
    assert (tmp_path / "vae" / "rq_vae.safetensors").exists()
    again = SidTokenizer.load(tmp_path / "vae")
    assert np.array_equal(again.encode(blobs).codes, codes.codes)


@pytest.mark.parametrize("method", ["append", "reassign"])
def test_collision_resolution(blobs, method):
    tok = build_tokenizer(SidConfig(levels=2, codebook_size=8))  # 64 codes for 3000 items: many collisions
    codes = tok.fit_encode(blobs)
    resolved, report = resolve_collisions(codes, method, tok, blobs)
    assert report["before"]["collision_rate"] > 0.5
    assert report["after"]["collision_rate"] == 0.0 and resolved.collision_stats()["colliding_items"] == 0
    # prefixes of non-colliding items are untouched
    uniq = SidCodes(codes.codes, codes.lengths, codes.codebook_sizes).collision_stats()
    assert uniq["unique_codes"] <= resolved.collision_stats()["unique_codes"] == 3000


def test_reassign_keeps_length_when_room(blobs):
    K = 32
    tok = build_tokenizer(SidConfig(levels=3, codebook_size=K))
    codes = tok.fit_encode(blobs)
    resolved, report = resolve_collisions(codes, "reassign", tok, blobs)
    assert report["before"]["colliding_items"] > 0
    assert (resolved.codes[:, :2] == codes.codes[:, :2]).all()  # only the last level moves
    changed = (resolved.codes[:, :3] != codes.codes[:, :3]).any(1)
    assert changed.sum() <= report["before"]["colliding_items"]
    # an item gets a 4th (disambiguation) level only when its 2-level prefix holds more than K items
    prefix = codes.codes[:, 0] * K + codes.codes[:, 1]
    per_prefix = np.bincount(prefix, minlength=K * K)
    longer = resolved.lengths == 4
    assert longer.sum() > 0 and (per_prefix[prefix[longer]] > K).all()
    assert (resolved.lengths[per_prefix[prefix] <= K] == 3).all()


def test_append_level_variable_length():
    codes = SidCodes(np.array([[1, 2], [1, 2], [1, -1], [1, -1], [0, 1]]), np.array([2, 2, 1, 1, 2]), [3, 3])
    out = append_level(codes, np.array([0.5, 0.1, 0.0, 0.0, 0.0]))
    assert out.as_tuples() == [(1, 2, 1), (1, 2, 0), (1, 0), (1, 1), (0, 1)]
    assert out.codebook_sizes == [3, 3, 2]


def test_item_token_level(blobs, tmp_path):
    """item_token: semantic levels may collide; a final level holding the item's own index makes every SID unique,
    and the catalog's trie then has exactly one child under each full semantic prefix + item token."""
    tok = build_tokenizer(SidConfig(levels=2, codebook_size=8))
    codes = tok.fit_encode(blobs)
    out, report = resolve_collisions(codes, "item_token", tok, blobs)
    assert report["before"]["collision_rate"] > 0.5 and report["after"]["collision_rate"] == 0.0
    assert (out.codes[:, :2] == codes.codes).all() and (out.codes[:, 2] == np.arange(3000)).all()
    assert out.codebook_sizes == [8, 8, 3000] and (out.lengths == 3).all()
    cat = SidCatalog([str(i) for i in range(3000)], out)
    cat.save(tmp_path / "cat")
    back = SidCatalog.load(tmp_path / "cat")
    assert back.fingerprint() == cat.fingerprint() and back.vocab_size == 5 + 16 + 3000
    seqs = np.stack([back.tokens[i, : back.token_lengths[i]] for i in (0, 1234, 2999)])
    assert back.decode(seqs).tolist() == [0, 1234, 2999]
    with pytest.raises(ValueError, match="item_token needs fixed-length codes"):
        item_level(SidCodes(np.array([[0, 1], [1, -1]]), np.array([2, 1]), [2, 2]))


def test_ml100k_rq_kmeans_zero_collisions(ml100k, ml100k_emb, tmp_path):
    cfg = SidConfig(levels=3, codebook_size=32, collision="reassign")
    tok = build_tokenizer(cfg)
    codes = tok.fit_encode(ml100k_emb)
    resolved, report = resolve_collisions(codes, cfg.collision, tok, ml100k_emb)
    stats = sid_stats(resolved, ml100k.item_popularity())
    assert report["after"]["collision_rate"] == 0.0 and (resolved.lengths == 3).all()
    assert stats["levels"][0]["utilisation"] == 1.0
    assert stats["path_entropy_bits"] == pytest.approx(np.log2(1682))
    cat = SidCatalog(ml100k.item_ids, resolved, stats)
    cat.save(tmp_path / "cat")
    back = SidCatalog.load(tmp_path / "cat")
    assert back.fingerprint() == cat.fingerprint() and back.sid_string(0) == cat.sid_string(0)
    assert back.decode(cat.tokens).tolist() == list(range(1682))
    assert back.index_of("50") == ml100k.item_ids.index("50")
    with pytest.raises(KeyError, match="'99999' is not in the catalog"):
        back.index_of("99999")


def test_catalog_tamper_detected(tmp_path):
    codes = SidCodes(np.array([[0, 1], [1, 0]]), np.array([2, 2]), [2, 2])
    SidCatalog(["a", "b"], codes).save(tmp_path / "c")
    import json

    meta = json.loads((tmp_path / "c" / "catalog.json").read_text())
    meta["item_ids"] = ["b", "a"]
    (tmp_path / "c" / "catalog.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="fingerprint mismatch"):
        SidCatalog.load(tmp_path / "c")
    with pytest.raises(ValueError, match="collision-free"):
        SidCatalog(["a", "b"], SidCodes(np.array([[0, 1], [0, 1]]), np.array([2, 2]), [2, 2]))


def test_decode_rejects_hallucinations():
    codes = SidCodes(np.array([[0, 1], [1, 0]]), np.array([2, 2]), [2, 2])
    cat = SidCatalog(["a", "b"], codes)
    seqs = np.array([cat.item_tokens(0), cat.item_tokens(1), [cat.item_tokens(0)[0], cat.item_tokens(0)[0], 2],
                     [cat.item_tokens(0)[0], 0, 0]])
    assert cat.decode(seqs).tolist() == [0, 1, -1, -1]


def test_ml100k_rq_kmeans_levels_do_not_collapse(ml100k_emb):
    """One k-means run on ML-100K's level-3 residuals (seed 2) puts 96% of items into one code; the restarts
    (``sid.kmeans_redo``, lowest inertia kept) must leave every level of every seed spread out."""

    def worst_share(cfg):
        codes = build_tokenizer(cfg).fit_encode(ml100k_emb)
        return max(np.bincount(codes.codes[:, lvl][codes.codes[:, lvl] >= 0]).max() / codes.n
                   for lvl in range(cfg.levels))

    assert worst_share(SidConfig(levels=3, codebook_size=32, seed=2, kmeans_redo=1)) > 0.9  # the failure exists
    for seed in range(4):
        assert worst_share(SidConfig(levels=3, codebook_size=32, seed=seed)) < 0.3, seed
    with pytest.raises(ValueError, match="kmeans_redo must be ≥ 1"):
        build_tokenizer(SidConfig(kmeans_redo=0)).fit(ml100k_emb)


def test_faiss_gpu_setting_falls_back_to_cpu_and_refuses_on_without_a_gpu():
    """CPU machines: `auto` runs faiss on the CPU with the same codes as `off`; `on` fails with a clear line."""
    import faiss

    from rl_align.config import SidConfig
    from rl_align.sid import build_tokenizer

    emb = np.random.default_rng(0).normal(size=(400, 16)).astype(np.float32)
    if faiss.get_num_gpus() == 0:
        auto = build_tokenizer(SidConfig(levels=2, codebook_size=8, faiss_gpu="auto"))
        off = build_tokenizer(SidConfig(levels=2, codebook_size=8, faiss_gpu="off"))
        assert not auto.gpu
        np.testing.assert_array_equal(auto.fit_encode(emb).codes, off.fit_encode(emb).codes)
        with pytest.raises(ValueError, match="sid.faiss_gpu: on, but faiss reports no GPU"):
            build_tokenizer(SidConfig(levels=2, codebook_size=8, faiss_gpu="on"))
    else:  # GPU machines: the GPU path gives codes of the same shape, every item assigned
        codes = build_tokenizer(SidConfig(levels=2, codebook_size=8, faiss_gpu="on")).fit_encode(emb)
        assert codes.codes.shape == (400, 2) and (codes.codes >= 0).all()
