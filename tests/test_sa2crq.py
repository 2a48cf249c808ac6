"""SA²CRQ: the stop rule on hand-made distributions, frozen head codebooks, round trips, mixed-length tries."""

import numpy as np
import pytest
import torch

from rl_align.config import Sa2crqConfig, SidConfig
from rl_align.sid import SidCatalog, SidTokenizer, build_tokenizer, resolve_collisions
from rl_align.sid.sa2crq import adaptive_lengths, prefix_mass_tables
from rl_align.utils.popularity import head_mask


def test_stop_rule_on_a_hand_made_distribution():
    # 6 items, 3 levels, radix 4. Prefix masses (item counts) at depth 2: (0,0) holds 4 items, (1,0) 1, (2,0) 1.
    codes = np.array([[0, 0, 0], [0, 0, 1], [0, 0, 2], [0, 0, 3], [1, 0, 0], [2, 0, 1]], np.int32)
    tables = prefix_mass_tables(codes, np.ones(6), radix=4)
    assert tables[0][1].tolist() == pytest.approx([4 / 6, 1 / 6, 1 / 6])      # depth 1: prefixes 0, 1, 2
    # τ = 1/6: items alone under their prefix stop; start at level 1 → items 4, 5 stop at length 1
    assert adaptive_lengths(codes, tables, 1 / 6, 1, 4).tolist() == [3, 3, 3, 3, 1, 1]
    # N = 2: nobody may stop before level 2
    assert adaptive_lengths(codes, tables, 1 / 6, 2, 4).tolist() == [3, 3, 3, 3, 2, 2]
    # τ = 0: nothing is rare enough, every code keeps all levels; τ = 1: every code stops at N
    assert adaptive_lengths(codes, tables, 0.0, 1, 4).tolist() == [3] * 6
    assert adaptive_lengths(codes, tables, 1.0, 2, 4).tolist() == [2] * 6
    # popularity weights: item 4 is the head (mass 0.9 under prefix 1) → keeps its long code
    w = np.array([0.02, 0.02, 0.02, 0.02, 0.9, 0.02])
    tw = prefix_mass_tables(codes, w, radix=4)
    assert adaptive_lengths(codes, tw, 0.05, 1, 4).tolist() == [3, 3, 3, 3, 3, 1]
    # prefixes the priors never saw have mass 0 and stop at N
    unseen = np.array([[3, 3, 3]], np.int32)
    assert adaptive_lengths(unseen, tables, 0.0, 2, 4).tolist() == [2]
    # unique_stop: two items that would stop with the same prefix continue instead
    twins = np.array([[3, 1, 0], [3, 1, 2]], np.int32)
    assert adaptive_lengths(twins, tables, 0.0, 2, 4, unique=False).tolist() == [2, 2]
    assert adaptive_lengths(twins, tables, 0.0, 2, 4, unique=True).tolist() == [3, 3]


def test_head_mask_takes_the_most_interacted_share():
    pop = np.array([5, 100, 7, 100, 1, 50, 0, 3, 9, 2])
    assert np.where(head_mask(pop, 0.3))[0].tolist() == [1, 3, 5]
    assert head_mask(pop, 0.01).sum() == 1
    # the share is of interacted items: 9 interacted → round(0.3 × 9) = 3; never-interacted items are never head
    sparse = np.concatenate([pop, np.zeros(90)])
    assert np.where(head_mask(sparse, 0.3))[0].tolist() == [1, 3, 5]
    assert not head_mask(sparse, 1.0)[pop.size:].any() and head_mask(sparse, 1.0).sum() == 9
    assert head_mask(np.zeros(4), 0.5).sum() == 2   # no interactions at all: a share of the catalog


def test_cold_items_come_from_the_tail_of_a_sparse_catalog():
    """Most of a big catalog has no interactions: the cold items must still come from the interacted tail."""
    from rl_align.data.cold import choose_cold_items

    rng = np.random.default_rng(0)
    pop = np.zeros(10_000)
    pop[rng.choice(10_000, 1_000, replace=False)] = rng.zipf(1.5, 1_000)
    cold = choose_cold_items(pop, 0.1, head_share=0.2, seed=0)
    assert cold.size == 80 and (pop[cold] > 0).all() and not head_mask(pop, 0.2)[cold].any()


def _tok(**kw):
    return build_tokenizer(SidConfig(tokenizer="sa2crq", levels=3, codebook_size=16, kmeans_iters=10,
                                     sa2crq=Sa2crqConfig(**kw)))


def test_stage_two_leaves_the_head_codebooks_frozen(zipf_items):
    emb, pop = zipf_items
    tok = _tok(tail_codebook_size=8)
    tok.fit(emb, pop)
    K = 16
    assert tok.codebooks.shape == (3, 24, 16)
    np.testing.assert_array_equal(tok.codebooks[:, :K], tok.head_codebooks)   # stage 2 did not touch them
    # and they are exactly what stage 1 alone learns (no curriculum, same head)
    head_only = _tok(curriculum=True, tail_codebook_size=1)
    head_only.fit(emb, pop)
    np.testing.assert_array_equal(head_only.codebooks[:, :K], tok.codebooks[:, :K])
    # tail items do use the new codewords
    codes = tok.encode(emb)
    tail = ~head_mask(pop, 0.2)
    assert (codes.codes[tail, 0] >= K).mean() > 0.2   # 0.295 with 5 k-means restarts per level


def test_head_items_get_longer_codes_than_tail_items(zipf_items):
    emb, pop = zipf_items
    tok = _tok(tau=0.002)
    codes = tok.fit_encode(emb, pop)
    head = head_mask(pop, 0.2)
    assert codes.lengths.min() >= 2 and set(np.unique(codes.lengths)) <= {2, 3}
    assert codes.lengths[head].mean() > codes.lengths[~head].mean()


def _round_trip(tok, codes, emb, path):
    """Save, load and re-encode (same codes), then resolve collisions into a catalog. Returns (catalog, codes)."""
    tok.save(path)
    c2 = SidTokenizer.load(path).encode(emb)
    np.testing.assert_array_equal(c2.codes, codes.codes)
    np.testing.assert_array_equal(c2.lengths, codes.lengths)
    resolved, rep = resolve_collisions(codes, "reassign", tok, emb)
    assert rep["after"]["collision_rate"] == 0.0
    return SidCatalog([f"i{k}" for k in range(len(emb))], resolved), resolved


def test_round_trip_save_load_encode_decode(zipf_items, tmp_path):
    emb, pop = zipf_items
    tok = _tok()
    codes = tok.fit_encode(emb, pop)
    cat, resolved = _round_trip(tok, codes, emb, tmp_path / "tok")
    # every item's tokens decode back to it; the trie accepts exactly the catalog's mixed-length SIDs
    seqs = np.full((cat.n_items, cat.tokens.shape[1]), 0, np.int64)
    seqs[:] = cat.tokens
    assert (cat.decode(seqs) == np.arange(cat.n_items)).all()
    assert len(set(resolved.lengths.tolist())) > 1                      # mixed lengths really present
    state = cat.trie.root(cat.n_items)
    toks = torch.from_numpy(cat.tokens)
    for t in range(cat.tokens.shape[1]):
        live = torch.from_numpy(cat.token_lengths > t)
        allowed = cat.trie.allowed_mask(state)                            # (n, V) bool
        assert allowed[live, toks[live, t]].all()
        state = torch.where(live, cat.trie.step(state, toks[:, t]), state)
    # cold items (not seen in fit) still get codes of valid lengths from the head priors
    cold = tok.encode(emb[:5] + 0.01)
    assert ((cold.lengths >= 2) & (cold.lengths <= 3)).all()


def test_bad_settings_fail_with_the_key_name(zipf_items):
    emb, pop = zipf_items
    with pytest.raises(ValueError, match="sid.sa2crq.tau"):
        _tok(tau=1.5).fit(emb, pop)
    with pytest.raises(ValueError, match="sid.sa2crq.start_level"):
        _tok(start_level=5).fit(emb, pop)
    with pytest.raises(ValueError, match="needs item popularity"):
        _tok().fit(emb)


@pytest.mark.parametrize("curriculum,unique", [(True, False), (False, False), (True, True)])
def test_early_stopping_encode_equals_full_codes_cut_by_the_stop_rule(zipf_items, curriculum, unique):
    """Encoding skips deeper levels for stopped items; the codes must equal full greedy codes cut afterwards."""
    from rl_align.sid.codes import NO_CODE

    emb, pop = zipf_items
    tok = _tok(tau=0.002, curriculum=curriculum, unique_stop=unique)
    tok.fit(emb, pop)
    got = tok.encode(emb, chunk=97)   # several chunks, one partial
    full = tok.assign_levels(tok._prep(emb), tok.codebooks)
    s = tok.cfg.sa2crq
    lengths = adaptive_lengths(full, tok.tables, s.tau, s.start_level, tok._k_total, unique)
    want = np.where(np.arange(full.shape[1])[None, :] < lengths[:, None], full, NO_CODE)
    assert len(set(lengths.tolist())) > 1
    np.testing.assert_array_equal(got.lengths, lengths)
    np.testing.assert_array_equal(got.codes, want)


def _vae(**kw):
    from rl_align.config import RqVaeConfig

    return build_tokenizer(SidConfig(tokenizer="sa2crq_vae", levels=3, codebook_size=16, kmeans_iters=10,
                                     rq_vae=RqVaeConfig(hidden_dims=[32], latent_dim=8, epochs=15, batch_size=256),
                                     sa2crq=Sa2crqConfig(**kw)))


def test_vae_flavour_freezes_the_head_and_encodes_with_the_hybrid_books(zipf_items, tmp_path):
    """sa2crq_vae: stage 1 trains the RQ-VAE on head items only, stage 2 adds tail codewords and leaves the encoder
    and head codebooks untouched; head items get longer codes; save/load reproduces the codes."""
    from rl_align.sid.rq_vae import RQVAE

    emb, pop = zipf_items
    tok = _vae(tau=0.002, tail_codebook_size=8)
    # stage 1 alone (an RQ-VAE fitted on the head with the same seed) gives the same encoder and head books
    head = head_mask(pop, 0.2)
    ref = RQVAE(tok.cfg).fit(emb[head])
    tok.fit(emb, pop)
    for (k, a), b in zip(ref.model.state_dict().items(), tok.model.state_dict().values()):
        assert torch.equal(a, b), k
    K = 16
    np.testing.assert_array_equal(tok.books[:, :K], tok.head_codebooks)
    np.testing.assert_array_equal(tok.head_codebooks, ref.model.codebooks.detach().numpy())
    assert tok.books.shape == (3, 24, 8) and (tok.books[:, K:] < 1e5).all()   # 8 new tail codewords per level
    codes = tok.encode(emb)
    assert codes.codebook_sizes == [24, 24, 24] and len(set(codes.lengths.tolist())) > 1
    assert codes.lengths[head].mean() > codes.lengths[~head].mean()
    assert (codes.codes[~head][:, 0] >= 0).all()
    cat, _ = _round_trip(tok, codes, emb, tmp_path / "vae")
    assert (cat.decode(cat.tokens) == np.arange(cat.n_items)).all()
    with pytest.raises(ValueError, match="needs item popularity"):
        _vae().fit(emb)
