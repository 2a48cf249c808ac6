"""Bucket SIDs (``sid.collision: bucket``): short codes shared by several items, ranked inside by a scorer; and the
anchored tail codewords of SA²CRQ."""

import numpy as np
import pytest
import torch
from test_sa2crq import _tok, _vae  # the SA²CRQ tests' tokenizer settings (catalog: conftest.zipf_items)

from rl_align.config import PolicyConfig
from rl_align.eval.cold_expand import ColdIndex, ColdRoutes, cold_route_items, rank_with_cold_expansion
from rl_align.eval.evaluate import EvalSet, rank_with_engine
from rl_align.policy.data import build_prompts
from rl_align.policy.model import build_policy
from rl_align.rollouts import GenerationRequest, build_engine
from rl_align.sid import SidCatalog, SidCodes, resolve_collisions
from rl_align.sid.buckets import Buckets, build_scorer
from rl_align.sid.sa2crq import lookup_mass, prefix_keys
from rl_align.sid.stats import sid_stats
from rl_align.utils.popularity import head_mask


def test_bucket_codes_keep_tail_short_and_round_trip(zipf_items, tmp_path):
    emb, pop = zipf_items
    tok = _tok(tau=0.01, tail_stop="start_level")
    codes = tok.fit_encode(emb, pop)
    resolved, rep = resolve_collisions(codes, "bucket", tok, emb)
    full = codes.lengths == codes.max_len
    # only items that stopped early share codes; their codes are not lengthened
    np.testing.assert_array_equal(resolved.lengths[~full], codes.lengths[~full])
    _, inv, cnt = np.unique(resolved.keys(), return_inverse=True, return_counts=True)
    assert not (full & (cnt[inv.ravel()] > 1)).any() and rep["buckets"]["shared_codes"] > 0
    head = head_mask(pop, 0.2)
    assert resolved.lengths[head].mean() - resolved.lengths[~head].mean() >= 0.5
    # "append" lengthens the same tail codes again: the gap shrinks
    appended, _ = resolve_collisions(codes, "append", tok, emb)
    assert (appended.lengths[head].mean() - appended.lengths[~head].mean()
            < resolved.lengths[head].mean() - resolved.lengths[~head].mean())
    stats = sid_stats(resolved, pop)
    assert [r["bucket"] for r in stats["length_by_popularity"]][0] == "pop 0-20%"
    with pytest.raises(ValueError, match="collision-free"):
        SidCatalog([f"i{k}" for k in range(len(emb))], resolved)
    cat = SidCatalog([f"i{k}" for k in range(len(emb))], resolved, buckets=True,
                     bucket_scorer=build_scorer("content", pop, emb))
    cat.save(tmp_path / "cat")
    back = SidCatalog.load(tmp_path / "cat")
    assert back.has_buckets and back.fingerprint() == cat.fingerprint()
    np.testing.assert_array_equal(back.buckets.bucket_of, cat.buckets.bucket_of)
    assert back.buckets.scorer.registry_name == "content"
    np.testing.assert_allclose(back.buckets.scorer.vectors, cat.buckets.scorer.vectors, atol=1e-3)  # float16 on disk
    # a shared code decodes to its bucket's representative (lowest index), and the trie has one leaf per bucket
    rep_of = np.array([cat.buckets.items_of(i)[0] for i in range(cat.n_items)])
    np.testing.assert_array_equal(cat.decode(cat.tokens), rep_of)
    assert int(torch.unique(cat.trie.term_node).numel()) == cat.buckets.n_buckets


def test_head_codes_use_the_head_codewords_only(zipf_items):
    emb, pop = zipf_items
    hybrid = _tok(tau=0.002).fit_encode(emb, pop)
    tok = _tok(tau=0.002, head_codes="head")
    codes = tok.fit_encode(emb, pop)
    head, K = head_mask(pop, 0.2), 16
    inside = np.arange(3)[None, :] < codes.lengths[:, None]
    assert (codes.codes[head][inside[head]] < K).all()
    assert (hybrid.codes[head][inside[head]] >= K).any()           # the hybrid books did pull some head items
    np.testing.assert_array_equal(codes.codes[~head], hybrid.codes[~head])   # tail items unchanged
    assert codes.lengths[head].mean() > hybrid.lengths[head].mean()        # their prefixes carry head mass


@pytest.mark.parametrize("flavour", ["kmeans", "vae"])
def test_hybrid_priors_keep_head_items_on_tail_codewords_long(zipf_items, flavour):
    """priors: hybrid recounts the stop rule's masses where hybrid head codes put the head: the codebooks and the
    tail's codes are unchanged, and head items pulled onto a tail codeword no longer stop for lack of head mass."""
    emb, pop = zipf_items
    make = _tok if flavour == "kmeans" else _vae
    kw = dict(tau=0.002, tail_codebook_size=8, tail_stop="start_level")
    old_tok, new_tok = make(**kw), make(priors="hybrid", **kw)
    old, new = old_tok.fit_encode(emb, pop), new_tok.fit_encode(emb, pop)
    books = (lambda t: t.codebooks if flavour == "kmeans" else t.books)
    np.testing.assert_array_equal(books(old_tok), books(new_tok))
    head, K = head_mask(pop, 0.2), 16
    np.testing.assert_array_equal(old.codes[~head], new.codes[~head])
    np.testing.assert_array_equal(new.codes[head][:, :2], old.codes[head][:, :2])   # same greedy path, cut later
    pulled = head & (old.codes[:, :2] >= K).any(axis=1)
    assert pulled.any() and (old.lengths[pulled] == 2).all()   # stage-1 priors: no head mass there, so they stop
    assert new.lengths[pulled].mean() > 2 and new.lengths[head].mean() > old.lengths[head].mean()
    # every depth's masses sum to 1 over the head; the pulled items' 2-token prefixes had none and now carry some
    for keys, mass in new_tok.tables:
        assert mass.sum() == pytest.approx(1.0) and len(keys) <= head.sum()
    prefix = prefix_keys(old.codes[pulled], 2, K + 8)
    assert (lookup_mass(old_tok.tables[1], prefix) == 0).all() and (lookup_mass(new_tok.tables[1], prefix) > 0).all()


def test_cap_splits_large_buckets(zipf_items):
    emb, pop = zipf_items
    tok = _tok(tau=0.01, tail_stop="start_level")
    codes = tok.fit_encode(emb, pop)
    capped, rep = resolve_collisions(codes, "bucket", tok, emb, bucket_cap=3)
    assert rep["buckets"]["max_bucket_size"] <= 3 and rep["buckets"]["bucket_cap"] == 3


def _bucket_catalog():
    """8 items, codes of length 1–2 (codebooks 3 × 3): items 0-2 share (0,), items 3-4 share (1,), the rest are
    full-length and unique."""
    codes = np.array([[0, -1], [0, -1], [0, -1], [1, -1], [1, -1], [2, 0], [2, 1], [2, 2]])
    lens = np.array([1, 1, 1, 1, 1, 2, 2, 2])
    pop = np.array([5, 50, 20, 1, 9, 3, 3, 3], np.float64)
    return SidCatalog([f"i{k}" for k in range(8)], SidCodes(codes, lens, [3, 3]), buckets=True,
                      bucket_scorer=build_scorer("popularity", pop))


def test_a_bucket_code_retrieves_every_item_of_its_bucket_in_scorer_order():
    cat = _bucket_catalog()
    torch.manual_seed(0)
    model = build_policy(PolicyConfig(hidden_size=64, num_layers=1, num_heads=1, intermediate_size=128), cat, 4).eval()
    engine = build_engine("torch", model=model, catalog=cat)
    es = EvalSet(users=np.arange(2), targets=np.array([2, 6]), history=np.array([[5, 6], [7, 5]]),
                 seen=np.array([[5, 6, -1], [1, 7, 5]]))
    ranked, scores = rank_with_engine(engine, cat, es, beams=8, exclude_history=True)
    by_pop = {0: [1, 2, 0], 1: [4, 3]}   # popularity order inside each bucket
    pop = np.array([5, 50, 20, 1, 9, 3, 3, 3], np.float64)
    res = engine.generate(GenerationRequest(*build_prompts(es.history, cat), n=8, mode="beam", constrained=True,
                                            banned_items=torch.from_numpy(es.seen)))
    for r in range(2):
        row = [int(i) for i in ranked[r] if i >= 0]
        seen = set(es.seen[r][es.seen[r] >= 0].tolist())
        # every unseen item is ranked exactly once; the list counts items (8 beams → up to 8 items)
        assert sorted(row) == sorted(set(range(8)) - seen)
        code_lp = {int(cat.buckets.bucket_of[i]): float(s) for i, s in zip(res.items[r].tolist(),
                                                                           res.seq_logprob[r].tolist()) if i >= 0}
        for b, order in by_pop.items():
            want = [i for i in order if i not in seen]
            pos = [row.index(i) for i in want]
            assert pos == sorted(pos)                                     # scorer order inside the bucket
            # score = log P(code | x) + log P(item | code), P(item | code) ∝ 1 + training count
            members = cat.buckets.items_of(want[0])
            share = np.log1p(pop[want]) - np.log((1 + pop[members]).sum())
            np.testing.assert_allclose(scores[r][pos], code_lp[int(cat.buckets.bucket_of[want[0]])] + share, atol=1e-6)
        assert (np.diff(scores[r][: len(row)]) <= 1e-9).all()           # one ranking by joint log-prob
    # user 1 has seen item 1 (bucket 0's most popular): the bucket stays alive, item 1 never appears
    assert 1 not in ranked[1].tolist() and 2 in ranked[1].tolist()
    # resolve: one item per generated code, the scorer's first unbanned one
    reps = np.array([[0, 3, 5], [0, 3, -1]])
    got = cat.buckets.resolve(reps, es.history, np.array([[-1, -1], [1, 4]]))
    np.testing.assert_array_equal(got, [[1, 4, 5], [2, 3, -1]])


class _TableReward(torch.nn.Module):
    """A reward model with the ranker's call whose click logit is a fixed (user, item) table."""

    def __init__(self, table):
        super().__init__()
        self.table = torch.as_tensor(table, dtype=torch.float64)

    def forward(self, users, history, candidates):
        return self.table[users[:, None], candidates]


def test_a_reward_model_orders_each_users_bucket_and_is_never_saved(tmp_path):
    from rl_align.rewards.bucket_scorer import RewardModelScorer

    cat = _bucket_catalog()
    pop = cat.buckets.scorer.popularity
    table = np.zeros((2, 8))
    table[0, [0, 1, 2]] = [4.0, -4.0, 0.0]     # user 0 prefers 0 > 2 > 1 inside bucket (0,); popularity says 1 > 2 > 0
    table[1, [0, 1, 2]] = [-4.0, 0.0, 4.0]     # user 1 prefers 2 > 1 > 0
    saved = cat.buckets.scorer
    cat.buckets.scorer = RewardModelScorer(pop, None, 0.5, _TableReward(table))
    reps, hist = np.array([[0], [0]]), np.array([[5, 6], [7, 5]])
    items, valid, logp = cat.buckets._ordered(reps, hist, users=np.array([0, 1]))
    assert items[0, 0].tolist() == [0, 2, 1] and items[1, 0].tolist() == [2, 1, 0]
    # log P(item | code, user) = log-softmax of log(1 + count) + log σ(z) / T over the bucket
    logit = np.log1p(pop[[0, 1, 2]]) + np.log(1 / (1 + np.exp(-table[0, [0, 1, 2]]))) / 0.5
    want = logit - np.log(np.exp(logit).sum())
    np.testing.assert_allclose(logp[0, 0], want[[0, 2, 1]], atol=1e-9)
    np.testing.assert_array_equal(cat.buckets.resolve(reps, hist, users=np.array([0, 1])), [[0], [2]])
    with pytest.raises(ValueError, match="needs each row's user"):
        cat.buckets.resolve(reps, hist)
    # attached at evaluation only: saving keeps the catalog's own scorer file untouched, and building it refuses
    cat.buckets.scorer = saved
    cat.save(tmp_path / "cat")
    cat.buckets.scorer = RewardModelScorer(pop, None, 1.0, _TableReward(table))
    cat.save(tmp_path / "cat2")
    assert SidCatalog.load(tmp_path / "cat").buckets.scorer.registry_name == "popularity"
    assert SidCatalog.load(tmp_path / "cat2").buckets.scorer is None
    with pytest.raises(ValueError, match="attach it at evaluation"):
        build_scorer("reward", pop)


def test_a_saved_scorer_rebuilt_at_its_own_temperature_scores_bit_for_bit_as_saved(tmp_path):
    import rl_align.rewards  # noqa: F401  (registers the attach-only "reward" scorer)
    from rl_align.sid.buckets import rebuild_scorer

    rng = np.random.default_rng(0)
    pop, vec = rng.integers(0, 30, 50).astype(float), rng.normal(size=(50, 8))
    Buckets(np.arange(50) % 4, build_scorer("content", pop, vec)).save_scorer(tmp_path / "buckets.npz")
    saved = Buckets.load_scorer(tmp_path / "buckets.npz")                 # float16 vectors, as every run loads them
    hist, cand = rng.integers(0, 50, (6, 5)), rng.integers(0, 50, (6, 12))
    same = rebuild_scorer(saved, "content")
    assert same.temperature == saved.temperature == 0.1
    assert np.array_equal(same.score(hist, cand), saved.score(hist, cand))
    warmer = rebuild_scorer(saved, "content", 0.5)
    assert np.allclose((warmer.score(hist, cand) - np.log1p(pop[cand])) * 0.5,
                       (saved.score(hist, cand) - np.log1p(pop[cand])) * 0.1)   # the cosine term, T apart
    assert np.array_equal(rebuild_scorer(saved, "popularity").score(hist, cand), np.log1p(pop[cand]))
    with pytest.raises(ValueError, match="no temperature"):
        rebuild_scorer(saved, "popularity", 1.0)
    with pytest.raises(ValueError, match="needs item vectors"):
        rebuild_scorer(build_scorer("popularity", pop), "content")
    with pytest.raises(ValueError, match="trained after the sids stage"):
        rebuild_scorer(saved, "reward")


def test_the_bucket_cold_mixture_puts_mass_alpha_on_new_items():
    """With cold_prior α, items without training interactions share α over the reached codes (normalised by the
    code mass that holds them, as the RQ cold expansion does) and the other items 1 - α: one distribution."""
    codes = np.array([[0, -1], [0, -1], [0, -1], [1, -1], [1, -1], [2, 0], [2, 1], [2, 2]])
    lens = np.array([1, 1, 1, 1, 1, 2, 2, 2])
    pop = np.array([0, 50, 20, 0, 9, 3, 3, 3], np.float64)          # items 0 and 3 are new
    cat = SidCatalog([f"i{k}" for k in range(8)], SidCodes(codes, lens, [3, 3]), buckets=True,
                     bucket_scorer=build_scorer("popularity", pop))
    reps, p_code = np.array([[1, 4, 5]]), np.array([[0.5, 0.3, 0.2]])
    items, scores = cat.buckets.expand(reps, np.log(p_code), np.array([[6, 7]]), k=8, cold_prior=0.1)
    prob = {i: p for i, p in zip(items[0].tolist(), np.exp(scores[0]).tolist()) if i >= 0}
    assert set(prob) == {0, 1, 2, 3, 4, 5}
    np.testing.assert_allclose(sum(prob.values()), 1.0, atol=1e-9)
    np.testing.assert_allclose(prob[0] + prob[3], 0.1, atol=1e-9)              # new with probability α
    np.testing.assert_allclose(prob[0], 0.1 * 0.5 / 0.8, atol=1e-9)            # where the code mass is
    np.testing.assert_allclose(prob[1], 0.9 * 0.5 * 51 / 72, atol=1e-9)        # warm: (1 - α) · code · share


def test_one_item_codes_still_carry_the_mixture_weights():
    """When every reached code holds one item, a warm item still gets (1 - α) · P(code) and a new one
    α · P(code) / Z(x): the one-item shortcut (log P(item | code) = 0) applies only without the mixture."""
    codes = np.array([[0, -1], [1, -1], [2, -1], [2, 0], [2, 1]])
    lens = np.array([1, 1, 1, 2, 2])
    pop = np.array([5, 0, 3, 0, 2], np.float64)                      # items 1 and 3 are new
    cat = SidCatalog([f"i{k}" for k in range(5)], SidCodes(codes, lens, [3, 3]), buckets=True,
                     bucket_scorer=build_scorer("popularity", pop))
    assert (cat.buckets.sizes == 1).all()
    items, scores = cat.buckets.expand(np.array([[0, 1, 2]]), np.log([[0.5, 0.3, 0.2]]), np.array([[4, -1]]), k=3,
                                       cold_prior=0.1)
    prob = dict(zip(items[0].tolist(), np.exp(scores[0]).tolist()))
    np.testing.assert_allclose([prob[0], prob[2], prob[1]], [0.9 * 0.5, 0.9 * 0.2, 0.1], atol=1e-12)


def test_every_code_holding_new_items_enters_the_cold_mixture_with_all_routes():
    """eval.cold_routes: all in a bucket catalog. The beams reach only code (0,); with every code holding new
    items given (teacher-forced), item 3 in code (1,) is ranked too and Z(x) sums both codes. When the beams reach
    both codes with those same log-probs, the result is the beams' own."""
    codes = np.array([[0, -1], [0, -1], [0, -1], [1, -1], [1, -1], [2, 0], [2, 1], [2, 2]])
    lens = np.array([1, 1, 1, 1, 1, 2, 2, 2])
    pop = np.array([0, 50, 20, 0, 9, 3, 3, 3], np.float64)          # items 0 and 3 are new
    cat = SidCatalog([f"i{k}" for k in range(8)], SidCodes(codes, lens, [3, 3]), buckets=True,
                     bucket_scorer=build_scorer("popularity", pop))
    reps_new = cat.buckets.new_item_codes()
    np.testing.assert_array_equal(reps_new, [0, 3])                  # the lowest member of each such code
    lp_new = np.log(np.array([[0.5, 0.3]]))
    hist = np.array([[6, 7]])
    items, scores = cat.buckets.expand(np.array([[1, 5]]), np.log([[0.5, 0.2]]), hist, k=8, cold_prior=0.1,
                                       cold_codes=(reps_new, lp_new))
    prob = {i: p for i, p in zip(items[0].tolist(), np.exp(scores[0]).tolist()) if i >= 0}
    assert set(prob) == {0, 1, 2, 3, 5}
    np.testing.assert_allclose(prob[3], 0.1 * 0.3 / 0.8, atol=1e-9)            # no beam reached code (1,)
    np.testing.assert_allclose(prob[0] + prob[3], 0.1, atol=1e-9)
    np.testing.assert_allclose(prob[1], 0.9 * 0.5 * 51 / 72, atol=1e-9)        # warm items: the beams' own
    beams = cat.buckets.expand(np.array([[1, 4, 5]]), np.log([[0.5, 0.3, 0.2]]), hist, k=8, cold_prior=0.1)
    every = cat.buckets.expand(np.array([[1, 4, 5]]), np.log([[0.5, 0.3, 0.2]]), hist, k=8, cold_prior=0.1,
                               cold_codes=(reps_new, lp_new))
    np.testing.assert_array_equal(every[0], beams[0])
    np.testing.assert_allclose(every[1], beams[1], atol=1e-12)
    # no code holds a new item (e.g. α given on a catalog without any): the warm part alone, new items left out
    none = cat.buckets.expand(np.array([[1, 4, 5]]), np.log([[0.5, 0.3, 0.2]]), hist, k=8, cold_prior=0.1,
                              cold_codes=(np.zeros(0, np.int64), np.zeros((1, 0))))
    warm = {i: v for i, v in zip(beams[0][0].tolist(), beams[1][0].tolist()) if i not in (-1, 0, 3)}
    assert dict(zip(none[0][0].tolist()[: len(warm)], none[1][0].tolist())) == pytest.approx(warm)
    assert not {0, 3} & set(none[0][0].tolist())
    with pytest.raises(ValueError, match="parent_cold is for the beams"):
        cat.buckets.expand(np.array([[1]]), np.log([[0.5]]), hist, k=8, cold_prior=0.1,
                           cold_codes=(reps_new, lp_new), parent_cold=([{}], np.array([0.0])))
    # the routes of a bucket catalog are the whole codes, <eos> included: a beam's own log-prob
    routes = ColdRoutes.build(cat, ColdIndex.build(cat, cold_route_items(cat, pop)))
    np.testing.assert_array_equal(routes.reps, [0, 3])
    np.testing.assert_array_equal(routes.tokens, cat.tokens[[0, 3]])
    torch.manual_seed(0)
    model = build_policy(PolicyConfig(hidden_size=32, num_layers=1, num_heads=1, intermediate_size=64), cat, 4).eval()
    from rl_align.policy.logprobs import item_logprobs
    got = routes.logprobs(model, cat, np.array([[5, 6], [7, -1]]), np.arange(2))
    want = item_logprobs(model, cat, np.array([[5, 6], [7, -1]]), np.arange(2), np.array([[0, 3], [0, 3]]))
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_an_attached_reward_model_leaves_new_items_to_the_saved_scorer():
    """A reward model attached at evaluation orders the items with training interactions; the items without any
    (which it never saw) keep the catalog's saved content scorer inside the cold-start mixture."""
    from rl_align.rewards.bucket_scorer import RewardModelScorer

    codes = np.array([[0, -1], [0, -1], [0, -1], [0, -1], [1, -1], [1, -1]])
    pop = np.array([0, 0, 5, 5, 3, 3], np.float64)                       # items 0 and 1 are new
    vec = np.array([[1, 0], [0, 1], [1, 0], [0, 1], [1, 1], [1, -1]], np.float64)
    cat = SidCatalog([f"i{k}" for k in range(6)], SidCodes(codes, np.ones(6, np.int64), [2, 2]), buckets=True,
                     bucket_scorer=build_scorer("content", pop, vec, 0.1))
    table = np.zeros((1, 6))
    table[0, [0, 1, 2, 3]] = [-6.0, 6.0, -6.0, 6.0]                       # the model prefers 1 > 0 and 3 > 2
    reward = RewardModelScorer(pop, None, 1.0, _TableReward(table))
    reps, hist, user = np.array([[0]]), np.array([[4, 2]]), np.array([0])  # the history points at (1, 0)
    content = cat.buckets.scorer
    cat.buckets.attach(reward)
    assert cat.buckets.scorer is reward and cat.buckets.cold_scorer is content
    cat.buckets.attach(RewardModelScorer(pop, None, 1.0, _TableReward(table)))    # again: content still orders new
    assert cat.buckets.cold_scorer is content
    cat.buckets.attach(reward)
    items, valid, logp = cat.buckets._ordered(reps, hist, cold_prior=0.2, users=user)
    lp = dict(zip(items[0, 0].tolist(), logp[0, 0].tolist()))
    assert lp[3] > lp[2] and lp[0] > lp[1]               # warm by the reward model, new by content (vector (1, 0))
    np.testing.assert_allclose(np.exp(lp[0]) + np.exp(lp[1]), 0.2, atol=1e-9)
    cold_logit = content.score(hist, np.array([[0, 1]]))[0]
    np.testing.assert_allclose([lp[0], lp[1]], np.log(0.2) + cold_logit - np.logaddexp(*cold_logit), atol=1e-9)
    cat.buckets.attach(content)                            # a saved-kind scorer orders every item itself
    assert cat.buckets.scorer is content and cat.buckets.cold_scorer is None
    # set directly (no attach), the reward model orders the new items too
    plain = SidCatalog([f"i{k}" for k in range(6)], SidCodes(codes, np.ones(6, np.int64), [2, 2]), buckets=True,
                       bucket_scorer=reward)
    items, _, logp = plain.buckets._ordered(reps, hist, cold_prior=0.2, users=user)
    lp = dict(zip(items[0, 0].tolist(), logp[0, 0].tolist()))
    assert lp[1] > lp[0]


def test_a_reward_model_over_the_saved_content_scorer_adds_its_term_to_the_content_logits(tmp_path):
    """``reward:MODEL+content``: log(1 + count) + cos / T_c + log σ(z) / T, the saved scorer loaded from the run's
    catalog; the content term can reverse an order the model alone gives; a base that is not saved is refused."""
    from rl_align.rewards.bucket_scorer import RewardModelScorer, reward_bucket_scorer

    codes = np.array([[0, -1], [0, -1], [0, -1], [1, -1]])
    pop = np.array([4, 4, 4, 2], np.float64)
    vec = np.array([[1, 0], [0, 1], [-1, 0], [1, 1]], np.float64)
    content = build_scorer("content", pop, vec, 0.5)
    table = np.zeros((1, 4))
    table[0, [0, 1, 2]] = [0.0, 0.5, 1.0]                                  # alone, the model says 2 > 1 > 0
    hist, cand, user = np.array([[3, -1]]), np.array([[0, 1, 2]]), np.array([0])   # history (1, 1)/√2
    both = RewardModelScorer(pop, None, 2.0, _TableReward(table), base=content)
    want = content.score(hist, cand) + np.log(1 / (1 + np.exp(-table[0, [0, 1, 2]]))) / 2.0
    np.testing.assert_allclose(both.score(hist, cand, user), want, atol=1e-9)
    alone = RewardModelScorer(pop, None, 2.0, _TableReward(table)).score(hist, cand, user)[0]
    assert alone.argsort().tolist() == [0, 1, 2] and both.score(hist, cand, user)[0].argsort().tolist() == [2, 0, 1]
    assert both.label == "reward+content" and RewardModelScorer(pop, None, 1.0, _TableReward(table)).label == "reward"
    with pytest.raises(ValueError, match="must be a saved scorer"):
        RewardModelScorer(pop, None, 1.0, _TableReward(table), base=both)
    # from a run directory: the base is the catalog's saved scorer, by name
    cat = SidCatalog([f"i{k}" for k in range(4)], SidCodes(codes, np.ones(4, np.int64), [2, 2]), buckets=True,
                     bucket_scorer=content)
    cat.save(tmp_path / "run" / "sids" / "catalog")
    with pytest.raises(ValueError, match="has no saved 'popularity' bucket scorer"):
        reward_bucket_scorer(tmp_path / "run", "sasrec", 1.0, over="popularity")


def _catalog_with_an_all_new_bucket():
    """The cold-mixture test's catalog (codebooks 3 × 4) plus items 8 and 9: both new, sharing code (2, 3), a
    bucket no item with training interactions sits in (parent prefix (2,), which items 5-7 share)."""
    codes = np.array([[0, -1], [0, -1], [0, -1], [1, -1], [1, -1], [2, 0], [2, 1], [2, 2], [2, 3], [2, 3]])
    lens = np.array([1, 1, 1, 1, 1, 2, 2, 2, 2, 2])
    pop = np.array([0, 50, 20, 0, 9, 3, 3, 3, 0, 0], np.float64)
    cat = SidCatalog([f"i{k}" for k in range(10)], SidCodes(codes, lens, [3, 4]), buckets=True,
                     bucket_scorer=build_scorer("popularity", pop))
    return cat, pop


def test_all_new_buckets_take_their_parent_prefix_mass():
    """eval.bucket_cold_parents: items of a bucket without any trained item get α · P(parent | x) / (n · Z), and Z
    now counts the parents' mass too, so the mixture is still one distribution with α on new items."""
    cat, pop = _catalog_with_an_all_new_bucket()
    np.testing.assert_array_equal(cold_route_items(cat, pop, bucket_parents=True), [8, 9])
    assert cold_route_items(cat, pop).size == 0                           # off: buckets keep their own mixture
    reps, p_code = np.array([[1, 4, 5]]), np.array([[0.5, 0.3, 0.2]])
    p_parent = 0.25                                                       # P((2,) | x) ≥ P((2, 0) | x)
    share = np.log(p_parent) - np.log(2)
    items, scores = cat.buckets.expand(reps, np.log(p_code), np.array([[6, 7]]), k=10, cold_prior=0.1,
                                       parent_cold=([{8: share, 9: share}], np.array([np.log(p_parent)])))
    prob = {i: p for i, p in zip(items[0].tolist(), np.exp(scores[0]).tolist()) if i >= 0}
    assert set(prob) == {0, 1, 2, 3, 4, 5, 8, 9}
    z = 0.5 + 0.3 + p_parent                                              # codes holding new items + parents
    np.testing.assert_allclose(sum(prob.values()), 1.0, atol=1e-9)
    np.testing.assert_allclose(prob[0] + prob[3] + prob[8] + prob[9], 0.1, atol=1e-9)
    np.testing.assert_allclose(prob[8], 0.1 * p_parent / (2 * z), atol=1e-9)
    np.testing.assert_allclose(prob[0], 0.1 * 0.5 / z, atol=1e-9)
    np.testing.assert_allclose(prob[1], 0.9 * 0.5 * 51 / 72, atol=1e-9)   # warm items unchanged
    assert list(items[0][:8]) == sorted(prob, key=lambda i: (-prob[i], i))
    # without a scorer there is no cold mixture (nothing knows the new items): the route is not used either
    saved, cat.buckets.scorer = cat.buckets.scorer, None
    plain, _ = cat.buckets.expand(reps, np.log(p_code), np.array([[6, 7]]), k=10, cold_prior=0.1,
                                  parent_cold=([{8: share, 9: share}], np.array([np.log(p_parent)])))
    assert not {8, 9} & set(plain[0].tolist())
    cat.buckets.scorer = saved
    # without the parent route the all-new bucket never enters the list
    items_off, _ = cat.buckets.expand(reps, np.log(p_code), np.array([[6, 7]]), k=10, cold_prior=0.1)
    assert not {8, 9} & set(items_off[0].tolist())


def test_the_parent_route_through_a_real_beam_search():
    """rank_with_cold_expansion on a tiny random policy: with the route on, items 8-9 (never a trained code) are
    ranked with their parent's prefix mass from the beams' own per-token log-probs; off, they never appear."""
    cat, pop = _catalog_with_an_all_new_bucket()
    torch.manual_seed(0)
    model = build_policy(PolicyConfig(hidden_size=64, num_layers=1, num_heads=1, intermediate_size=128), cat, 4).eval()
    engine = build_engine("torch", model=model, catalog=cat)
    es = EvalSet(users=np.arange(2), targets=np.array([8, 6]), history=np.array([[5, 6], [7, 5]]),
                 seen=np.array([[5, 6], [7, 5]]))
    on = ColdIndex.build(cat, cold_route_items(cat, pop, bucket_parents=True))
    off = ColdIndex.build(cat, cold_route_items(cat, pop))
    ranked_on, s_on = rank_with_cold_expansion(engine, cat, es, 3, True, 8, on, 0.2)
    ranked_off, s_off = rank_with_cold_expansion(engine, cat, es, 3, True, 8, off, 0.2)
    res = engine.generate(GenerationRequest(*build_prompts(es.history, cat), n=3, mode="beam", constrained=True,
                                            banned_items=torch.from_numpy(es.seen)))
    for r in range(2):
        beam_items = set(res.items[r].tolist())
        assert not ({8, 9} & set(ranked_off[r].tolist())) - beam_items   # off: only a beam reaching (2, 3)
        # P((2,) | x): the first-token log-prob of a beam whose code starts with token 2 (all such beams agree)
        first = [float(res.token_logprobs[r, b, 0]) for b in range(3)
                 if res.items[r, b] >= 0 and int(cat.codes.codes[int(res.items[r, b]), 0]) == 2]
        row = ranked_on[r].tolist()
        if not first:                                        # parent (2,) not reached: nothing to add
            assert not {8, 9} & set(row)
            continue
        assert np.allclose(first, first[0], atol=1e-6)
        assert 8 in row and not set(es.seen[r].tolist()) & set(row)
        # the route adds α · P(parent) / (2 · Z) to whatever the beams gave item 8; Z ≤ 1 + P(parent) ≤ 2
        s8 = s_on[r][row.index(8)]
        lo = np.log(0.2) + first[0] - np.log(2) - np.log(2)
        assert s8 >= lo - 1e-9
        if 8 in ranked_off[r].tolist():
            assert s8 > s_off[r][ranked_off[r].tolist().index(8)]
    assert any(8 in ranked_on[r].tolist() and 8 not in ranked_off[r].tolist() for r in range(2))


def test_a_bucket_is_excluded_only_when_all_its_items_are_banned():
    cat = _bucket_catalog()
    torch.manual_seed(1)
    model = build_policy(PolicyConfig(hidden_size=64, num_layers=1, num_heads=1, intermediate_size=128), cat, 4).eval()
    engine = build_engine("torch", model=model, catalog=cat)
    ids, mask = build_prompts(np.array([[5, 6], [5, 6]]), cat)
    banned = torch.tensor([[0, 1, 2, -1], [0, 1, -1, -1]])   # row 0: bucket (0,) entirely; row 1: 2 of its 3 items
    res = engine.generate(GenerationRequest(ids, mask, n=8, mode="beam", constrained=True, banned_items=banned))
    buckets0 = {int(cat.buckets.bucket_of[i]) for i in res.items[0].tolist() if i >= 0}
    buckets1 = {int(cat.buckets.bucket_of[i]) for i in res.items[1].tolist() if i >= 0}
    b0 = int(cat.buckets.bucket_of[0])
    assert b0 not in buckets0 and b0 in buckets1


def test_anchored_tail_codewords_keep_the_head_frozen_and_stay_near_their_anchors(zipf_items):
    emb, pop = zipf_items
    free = _tok(tail_codebook_size=8)
    free.fit(emb, pop)
    anchored = _tok(tail_codebook_size=8, anchor_weight=1.0)
    anchored.fit(emb, pop)
    K = 16
    np.testing.assert_array_equal(anchored.codebooks[:, :K], anchored.head_codebooks)   # bit for bit
    np.testing.assert_array_equal(anchored.head_codebooks, free.head_codebooks)         # same stage 1
    # each anchored tail codeword lies nearer the head manifold (its nearest head codeword) than a free one
    def to_head(tok):
        return np.mean([np.min(np.linalg.norm(tok.codebooks[l, K:, None] - tok.codebooks[l, None, :K], axis=2), 1)
                        .mean() for l in range(3)])
    assert to_head(anchored) < to_head(free)
    assert len(anchored.anchor_stats) == 3 and all(s["mean_dist_to_anchor"] >= 0 for s in anchored.anchor_stats)
    strong = _tok(tail_codebook_size=8, anchor_weight=1e6)
    strong.fit(emb, pop)
    assert max(s["mean_dist_to_anchor"] for s in strong.anchor_stats) < 1e-3   # λ → ∞: the anchors themselves


def test_bucket_needs_an_adaptive_tokenizer(tmp_path):
    from rl_align.checks import config_errors
    from rl_align.config import RunConfig
    cfg = RunConfig()
    cfg.sid.collision = "bucket"
    assert any(k == "sid.collision" and "fixed lengths" in v for k, v in config_errors(cfg))
    cfg.sid.tokenizer = "sa2crq"
    assert not any(k == "sid.collision" for k, _ in config_errors(cfg))
    cfg.sid.bucket_scorer = "nope"
    assert any(k == "sid.bucket_scorer" for k, _ in config_errors(cfg))


@pytest.mark.ray
def test_bucket_catalog_through_sft_eval_export_and_rl(tmp_path, ml100k_emb, ray_session):
    """A tiny ML-100K run on bucket SIDs, stage by stage: the catalog holds shared codes, evaluation lists are full
    lists of distinct unseen items (buckets expanded), the export has them, and GRPO trains on the items the
    within-bucket scorer resolves the rollouts to."""
    import json

    import yaml
    from helpers import TINY_RUN

    from rl_align.cli import main

    data = json.loads(json.dumps(TINY_RUN))
    data["sid"] = {"tokenizer": "sa2crq", "codebook_size": 32, "collision": "bucket",
                   "sa2crq": {"head_codes": "head", "tail_stop": "start_level"}}
    data.update(name="tiny-bucket", stages=["data", "embed", "sids", "sft", "eval", "exposure", "rl"],
                reward={"functions": {"exact_match": 1.0}, "cpus_per_replica": 0.5},
                rl={"algo": "grpo", "group_size": 4, "prompts_per_step": 8, "micro_batch_prompts": 4, "steps": 2,
                    "lr": 0.001, "cpus_per_learner": 1, "cpus_per_rollout_worker": 0.5, "eval_every": 2,
                    "eval_users": 40, "checkpoint_every": 2, "exclude_seen": True})
    cfg = tmp_path / "bucket.yaml"
    cfg.write_text(yaml.safe_dump(data))
    run = tmp_path / "run"
    assert main(["run", str(cfg), "--run-dir", str(run)]) == 0
    cat = SidCatalog.load(run / "sids" / "catalog")
    stats = json.loads((run / "sids" / "stats.json").read_text())
    assert cat.has_buckets and stats["collisions"]["buckets"]["max_bucket_size"] > 1
    assert stats["mean_code_length_head20"] - stats["mean_code_length_tail80"] >= 0.5
    m = json.loads((run / "eval" / "metrics.json").read_text())
    assert m["test"]["list_lengths"][-1] == m["test"]["n_users"]      # every user got a full list of 10 items
    assert m["test"]["seen_in_lists"] == 0
    rows = [json.loads(x) for x in (run / "eval" / "predictions_test.jsonl").read_text().splitlines()]
    assert all(len(r["items"]) == len(set(r["items"])) == 10 for r in rows)
    recs = [json.loads(x) for x in (run / "rl" / "grpo" / "metrics.jsonl").read_text().splitlines()
            if '"step"' in x and '"loss"' in x]
    assert recs and all(r["rollout_valid"] == 1.0 and r["rollout_seen"] == 0 for r in recs)
    # a reward model trained after the sids stage, attached at evaluation as the within-bucket scorer
    from rl_align.config import BaselineConfig, RankerConfig, RunConfig, load_config
    from rl_align.rewards.scorers import train_scorers

    rcfg = load_config(run / "config.yaml", RunConfig)
    rcfg.baseline = BaselineConfig(hidden=16, layers=1, epochs=2, eval_every=1, batch_size=64, lr=3e-3, threads=1)
    rcfg.ranker = RankerConfig(scorers=["din", "sasrec"], max_history=20)
    train_scorers(run, rcfg, skip=("din",))
    assert main(["eval", str(run), "--bucket-scorer", "reward:sasrec", "--bucket-temperature", "0.5"]) == 0
    mr = json.loads((run / "eval" / "metrics_sft_bucket-reward-sasrec-T0.5.json").read_text())
    assert mr["bucket_scorer"] == {"name": "reward", "temperature": 0.5, "cold_items_by": "content"}
    assert m["bucket_scorer"]["name"] == "content"
    assert mr["test"]["list_lengths"][-1] == mr["test"]["n_users"] and mr["test"]["seen_in_lists"] == 0
    assert main(["eval", str(run), "--bucket-scorer", "reward:gru4rec"]) == 2     # not trained: one-line refusal
    # a saved kind rebuilt from the catalog at evaluation: at the saved temperature, the run's own lists
    assert main(["eval", str(run), "--split", "test", "--bucket-scorer", "content",
                 "--export", str(tmp_path / "content.jsonl")]) == 0
    ms = json.loads((run / "eval" / "metrics_sft_bucket-content-T0.1.json").read_text())
    assert ms["bucket_scorer"] == {"name": "content", "temperature": 0.1, "cold_items_by": "content"}
    again = [json.loads(x)["items"] for x in (tmp_path / "content.jsonl").read_text().splitlines()]
    assert again == [r["items"] for r in rows]
    assert main(["eval", str(run), "--split", "test", "--bucket-scorer", "popularity"]) == 0
    mp = json.loads((run / "eval" / "metrics_sft_bucket-popularity.json").read_text())
    assert mp["bucket_scorer"]["name"] == "popularity" and mp["test"]["seen_in_lists"] == 0
    assert main(["eval", str(run), "--bucket-scorer", "popularity", "--bucket-temperature", "1"]) == 2   # no T
    assert main(["eval", str(run), "--bucket-scorer", "nope"]) == 2
    assert main(["eval", str(run), "--bucket-scorer", "content", "--bucket-temperature", "0"]) == 2
    # the parent route for all-new buckets, from the CLI; --split all needs cold cases (none in this run)
    assert main(["eval", str(run), "--split", "both", "--cold-expansion", "--bucket-cold-parents"]) == 0
    mc = json.loads((run / "eval" / "metrics_sft_cold-expansion_bucket-parents.json").read_text())
    assert mc["cold_expansion"]["bucket_cold_parents"] and set(mc) >= {"valid", "test"}
    assert mc["test"]["seen_in_lists"] == 0 and mc["test"]["list_lengths"][-1] == mc["test"]["n_users"]
    assert main(["eval", str(run), "--bucket-cold-parents"]) == 2                 # needs --cold-expansion
    # every bucket code holding new items teacher-forced (eval.cold_routes: all), at a given α (no cold protocol here)
    assert main(["eval", str(run), "--split", "both", "--cold-expansion", "--cold-prior", "0.05",
                 "--cold-routes", "all"]) == 0
    ma = json.loads((run / "eval" / "metrics_sft_cold-expansion_prior0.05_all-routes.json").read_text())
    new = cat.buckets.scorer.popularity <= 0                                       # items without training events
    assert ma["cold_expansion"]["routes"] == "all"
    assert ma["cold_expansion"]["routes_scored"] == np.unique(cat.buckets.bucket_of[new]).size
    assert ma["test"]["seen_in_lists"] == 0 and ma["test"]["list_lengths"][-1] == ma["test"]["n_users"]
    assert main(["eval", str(run), "--cold-expansion", "--cold-routes", "all", "--bucket-cold-parents"]) == 2
    assert main(["eval", str(run), "--split", "all"]) == 2                        # no cold-start cases here
    # a cold-valid part (eval.cold_valid_share) splits the cold cases by item, every case on one side. This run has
    # no cold protocol, so its test cases stand in for cold cases: ranking a part does not depend on that
    from rl_align.utils.io import load_npz, write_npz

    assert main(["eval", str(run), "--split", "cold", "--cold-valid-share", "0.5"]) == 2   # no held-out items
    sp = load_npz(run / "data" / "split.npz")
    fake = {f"cold_{f}": sp[f"test_{f}"] for f in ("users", "targets", "history", "history_len", "positions")}
    write_npz(run / "data" / "split.npz", **sp, **fake, cold_items=np.unique(sp["test_targets"]))
    assert main(["eval", str(run), "--split", "cold"]) == 0
    one = json.loads((run / "eval" / "metrics_sft.json").read_text())
    assert main(["eval", str(run), "--split", "cold", "--cold-valid-share", "0.5"]) == 0
    two = json.loads((run / "eval" / "metrics_sft_cold-valid0.5.json").read_text())
    n_items = np.unique(sp["test_targets"]).size
    assert two["cold_valid_split"] == {"share": 0.5, "seed": 0, "cold_valid_items": round(n_items / 2),
                                       "cold_items": n_items - round(n_items / 2)}
    assert two["cold"]["n_users"] + two["cold_valid"]["n_users"] == one["cold"]["n_users"]
    assert 0 < two["cold_valid"]["n_users"] < one["cold"]["n_users"]
    hits = [round(m[p]["policy"]["hr@10"] * m[p]["n_users"]) for m, p in ((two, "cold"), (two, "cold_valid"),
                                                                          (one, "cold"))]
    assert abs(hits[0] + hits[1] - hits[2]) <= 1        # the same ranking per case (batch padding aside)


def test_vae_tail_encoder_learns_against_the_frozen_head_decoder(zipf_items, tmp_path):
    """sa2crq_vae with a tail encoder: the model (encoder, decoder, head codebooks) is bit-for-bit what the same fit
    without it gives; the tail encoder reconstructs the tail through the frozen decoder better than the head
    encoder does; fit_encode uses it for tail items only; it survives save/load."""
    from rl_align.sid import SidTokenizer

    emb, pop = zipf_items
    plain = _vae(tau=0.002, tail_codebook_size=8, head_codes="head")
    codes_plain = plain.fit_encode(emb, pop)
    tok = _vae(tau=0.002, tail_codebook_size=8, head_codes="head", tail_encoder_epochs=5)
    codes = tok.fit_encode(emb, pop)
    for (k, a), b in zip(plain.model.state_dict().items(), tok.model.state_dict().values()):
        assert torch.equal(a, b), k                                   # head decoder and encoder untouched
    np.testing.assert_array_equal(tok.books[:, :16], plain.books[:, :16])   # head codewords frozen
    assert tok.tail_history[-1] < tok.tail_history[0]                 # the tail encoder learned
    head = head_mask(pop, 0.2)
    np.testing.assert_array_equal(codes.codes[head], codes_plain.codes[head])   # head items: head encoder + books
    assert not np.array_equal(codes.codes[~head], codes_plain.codes[~head])
    tok.save(tmp_path / "tok")
    back = SidTokenizer.load(tmp_path / "tok")
    for (k, a), b in zip(tok.tail_encoder.state_dict().items(), back.tail_encoder.state_dict().values()):
        assert torch.equal(a, b), k


@pytest.mark.parametrize("k", [3, 40])
def test_all_routes_dense_mixture_equals_the_per_code_mixture_on_a_large_catalog(k):
    """The all-routes cold mixture is computed densely over every new item (one shared scoring call, a segment
    log-softmax per code, a cut at each row's (k + banned)-th best). It must rank exactly as the per-code form:
    every code's members ordered and scored by ``_ordered``, then the top k of everything."""
    rng = np.random.default_rng(0)
    n, n_codes = 600, 30
    codes = np.stack([rng.integers(0, n_codes, n), np.full(n, -1)], 1)
    cat = SidCatalog([f"i{j}" for j in range(n)], SidCodes(codes, np.ones(n, np.int64), [n_codes, 3]), buckets=True,
                     bucket_scorer=build_scorer("content", np.where(rng.random(n) < 0.6, 0.0, rng.integers(1, 50, n)),
                                                rng.normal(size=(n, 8)), temperature=0.2))
    b = cat.buckets
    reps_new = b.new_item_codes()
    N = 6
    hist = rng.integers(-1, n, (N, 5))
    lp = np.log(rng.dirichlet(np.ones(reps_new.size), N))
    lp[2, :4] = -np.inf                                           # codes the policy gives no mass
    beams = np.stack([rng.choice(b.members[b.offsets[:-1]], 4, replace=False) for _ in range(N)])
    bscores = np.sort(np.log(rng.random((N, 4))), 1)[:, ::-1] - 6.0      # low: new items compete for places
    banned = np.where(rng.random((N, 20)) < 0.6, rng.integers(0, n, (N, 20)), -1)
    got = b.expand(beams, bscores, hist, k, banned, cold_prior=0.3, cold_codes=(reps_new, lp))
    # the per-code form
    items, valid, logp = b._ordered(beams, hist, 0.3)
    warm = np.where(valid & ~b._new(items, valid), bscores[..., None] + logp, -np.inf)
    c_items, c_valid, c_logp = b._ordered(np.broadcast_to(reps_new, (N, reps_new.size)), hist, 0.3)
    log_z = np.logaddexp.reduce(lp, axis=1)
    c_joint = np.where(b._new(c_items, c_valid), lp[..., None] + c_logp - log_z[:, None, None], -np.inf)
    want = b._top_unique(np.concatenate([items.reshape(N, -1), c_items.reshape(N, -1)], 1),
                         np.concatenate([warm.reshape(N, -1), c_joint.reshape(N, -1)], 1), k, banned)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_allclose(got[1], want[1], rtol=1e-6)
    assert (got[0] >= 0).all() and b._new(got[0], got[0] >= 0).any()    # full lists, new items among them
