"""Cold-item expansion: the mixture scores on a hand-made catalog, and a run-level check that it retrieves
held-out items the plain beam never returns."""

import math

import numpy as np
import pytest
import torch

from rl_align.config import PolicyConfig
from rl_align.eval.cold_expand import (
    ColdIndex,
    ColdRoutes,
    expand_with_cold,
    measured_cold_prior,
    parent_shares,
    parents_log_mass,
    rank_with_cold_expansion,
    user_queries,
)
from rl_align.eval.evaluate import EvalSet
from rl_align.policy.data import build_prompts
from rl_align.policy.logprobs import continuation_logprobs
from rl_align.policy.model import build_policy
from rl_align.rollouts import build_engine
from rl_align.sid import SidCatalog
from rl_align.sid.catalog import PAD
from rl_align.sid.codes import NO_CODE, SidCodes


def _catalog():
    """Items 0-2 warm, 3-6 cold. Codes (level sizes 2, 3): 0=(0,0) 1=(0,1) 2=(1,0) 3=(0,2) 4=(1,1) 5=(1,2),
    plus item 6 = (2,) with a single code (a short SA²CRQ-style code: its parent is the root)."""
    lengths = np.array([2, 2, 2, 2, 2, 2, 1], np.int32)
    codes = np.array([[0, 0], [0, 1], [1, 0], [0, 2], [1, 1], [1, 2], [2, NO_CODE]], np.int32)
    return SidCatalog([str(i) for i in range(7)], SidCodes(codes, lengths, [3, 3]))


def test_cold_index_groups_cold_items_by_parent():
    cat = _catalog()
    idx = ColdIndex.build(cat, np.array([3, 4, 5, 6]))
    a0, a1 = cat.item_tokens(0)[0], cat.item_tokens(2)[0]
    assert sorted(map(tuple, [k for k in idx.children])) == sorted([(a0,), (a1,), ()])
    assert idx.children[(a0,)].tolist() == [3] and idx.children[(a1,)].tolist() == [4, 5]
    assert idx.children[()].tolist() == [6]
    assert idx.is_cold.tolist() == [False, False, False, True, True, True, True]


def _beams(cat, items, lps):
    """(1, n, T) sequences/token log-probs for the given items with per-token log-probs ``lps``."""
    T = cat.max_sid_len
    seq = np.full((1, len(items), T), PAD, np.int64)
    tlp = np.zeros((1, len(items), T), np.float32)
    for b, (it, lp) in enumerate(zip(items, lps)):
        toks = cat.item_tokens(it)
        seq[0, b, : len(toks)] = toks
        tlp[0, b, : len(toks)] = lp
    return seq, tlp, tlp.sum(2), np.array([items], np.int64)


def test_mixture_scores_follow_the_formula():
    cat = _catalog()
    idx = ColdIndex.build(cat, np.array([3, 4, 5, 6]))
    # beam 0 = item 0: log-probs (-0.1, -0.2, -0.05); beam 1 = item 2: (-1.0, -0.5, -0.1)
    seq, tlp, slp, items = _beams(cat, [0, 2], [[-0.1, -0.2, -0.05], [-1.0, -0.5, -0.1]])
    a = 0.1
    ranked, scores = expand_with_cold(seq, tlp, slp, items, idx, a, k=7)
    got = dict(zip(ranked[0].tolist(), scores[0].tolist()))
    lw, la = math.log(1 - a), math.log(a)
    log_z = math.log(1.0 + math.exp(-0.1) + math.exp(-1.0))    # parents reached: root, (0,), (1,)
    assert got[0] == pytest.approx(-0.35 + lw) and got[2] == pytest.approx(-1.6 + lw)
    assert got[3] == pytest.approx(-0.1 - log_z + la)            # parent (0,): one cold child
    assert got[4] == pytest.approx(-1.0 - log_z + la - math.log(2))   # parent (1,): two cold children share it
    assert got[5] == pytest.approx(got[4])
    assert got[6] == pytest.approx(0.0 - log_z + la)             # parent = root, probability 1
    cold_mass = sum(math.exp(got[c]) for c in (3, 4, 5, 6))
    assert cold_mass == pytest.approx(a)                         # the cold component is a distribution × α
    assert 1 not in got                                          # warm item outside the beams: not ranked
    assert ranked[0, :4].tolist() == [0, 2, 6, 3] and (np.diff(scores[0][np.isfinite(scores[0])]) <= 0).all()


def test_prior_zero_is_the_plain_beam_and_banned_items_are_dropped():
    cat = _catalog()
    idx = ColdIndex.build(cat, np.array([3, 4, 5, 6]))
    seq, tlp, slp, items = _beams(cat, [0, 2], [[-0.1, -0.2, -0.05], [-1.0, -0.5, -0.1]])
    ranked, _ = expand_with_cold(seq, tlp, slp, items, idx, 0.0, k=4)
    assert ranked[0].tolist() == [0, 2, -1, -1]
    ranked, _ = expand_with_cold(seq, tlp, slp, items, idx, 0.2, k=7, banned=np.array([[6, 0, -1]]))
    assert 6 not in ranked[0] and 0 not in ranked[0] and 3 in ranked[0]
    with pytest.raises(ValueError, match="cold_prior"):
        expand_with_cold(seq, tlp, slp, items, idx, 1.0, k=4)


def test_siblings_are_ordered_by_content_similarity_to_the_user():
    cat = _catalog()
    idx = ColdIndex.build(cat, np.array([3, 4, 5, 6]))
    seq, tlp, slp, items = _beams(cat, [2], [[-0.2, -0.2, -0.1]])
    vecs = np.eye(7, dtype=np.float32)
    q = user_queries(np.array([[5, -1]]), vecs)          # the user looks like item 5
    ranked, _ = expand_with_cold(seq, tlp, slp, items, idx, 0.3, k=4, query=q, item_vecs=vecs)
    r = ranked[0].tolist()
    assert r.index(5) < r.index(4)
    q = user_queries(np.array([[4, -1]]), vecs)
    r = expand_with_cold(seq, tlp, slp, items, idx, 0.3, k=4, query=q, item_vecs=vecs)[0][0].tolist()
    assert r.index(4) < r.index(5)


def test_measured_prior_is_the_share_of_cold_interactions():
    split = {"seq_items": np.arange(97), "cold_targets": np.arange(3)}
    assert measured_cold_prior(split) == pytest.approx(0.03)
    assert measured_cold_prior({"seq_items": np.arange(10)}) == 0.0


def test_all_routes_rank_a_cold_item_no_beam_reached_with_the_exact_normaliser():
    """eval.cold_routes: all. Only item 0's beam is returned, so the beams reach parents () and (0,); parent (1,)
    (items 4, 5) is reached by no beam. With every parent's log-prob given, items 4 and 5 are ranked and Z(x)
    sums all three parents."""
    cat = _catalog()
    idx = ColdIndex.build(cat, np.array([3, 4, 5, 6]))
    seq, tlp, slp, items = _beams(cat, [0], [[-0.1, -0.2, -0.05]])
    a = 0.1
    beams_only = dict(zip(*[x[0].tolist() for x in expand_with_cold(seq, tlp, slp, items, idx, a, k=7)]))
    assert not {4, 5} & set(beams_only)
    lp = {(): 0.0, (cat.item_tokens(0)[0],): -0.1, (cat.item_tokens(2)[0],): -1.0}
    keys = list(idx.children)
    ranked, scores = expand_with_cold(seq, tlp, slp, items, idx, a, k=7,
                                      route_logp=(keys, np.array([[lp[k] for k in keys]])))
    got = dict(zip(ranked[0].tolist(), scores[0].tolist()))
    log_z, la = math.log(1.0 + math.exp(-0.1) + math.exp(-1.0)), math.log(a)
    assert got[4] == pytest.approx(-1.0 - log_z + la - math.log(2)) and got[5] == pytest.approx(got[4])
    assert got[3] == pytest.approx(-0.1 - log_z + la) and got[6] == pytest.approx(-log_z + la)
    assert sum(math.exp(got[c]) for c in (3, 4, 5, 6)) == pytest.approx(a)
    assert got[0] == pytest.approx(beams_only[0])                # the warm part is the beams' own
    assert beams_only[3] > got[3]                                # the beams' Z left out parent (1,)


def test_all_routes_are_the_policys_own_log_probs_and_equal_the_beams_when_the_beams_reach_every_parent():
    cat = _catalog()
    idx = ColdIndex.build(cat, np.array([3, 4, 5, 6]))
    routes = ColdRoutes.build(cat, idx)
    assert routes.n == 3 and routes.reps is None
    torch.manual_seed(0)
    model = build_policy(PolicyConfig(hidden_size=32, num_layers=1, num_heads=1, intermediate_size=64), cat, 4).eval()
    hist, users = np.array([[0, 1], [2, -1], [1, 2]]), np.arange(3)
    lp = routes.logprobs(model, cat, hist, users, max_cells=1)           # 1 prompt a forward: batching checked
    ids, mask = build_prompts(hist, cat, users)
    for j, parent in enumerate(routes.parents):
        if not parent:
            np.testing.assert_array_equal(lp[:, j], 0.0)                # the root has probability 1
            continue
        cont = torch.tensor([list(parent)] * 3)
        with torch.no_grad():
            want, m = continuation_logprobs(model, ids, mask, cont)
        np.testing.assert_allclose(lp[:, j], (want * m).sum(1).numpy(), atol=1e-5)
    # 7 beams return every code, so every parent is reached: both settings give the same lists and scores
    engine = build_engine("torch", model=model, catalog=cat)
    es = EvalSet(users=users, targets=np.array([3, 4, 5]), history=hist, seen=np.full((3, 1), -1))
    vecs = np.eye(7, dtype=np.float32)
    r_b, s_b = rank_with_cold_expansion(engine, cat, es, 7, False, 8, idx, 0.2, vecs)
    r_a, s_a = rank_with_cold_expansion(engine, cat, es, 7, False, 8, idx, 0.2, vecs, routes)
    np.testing.assert_array_equal(r_a, r_b)
    np.testing.assert_allclose(s_a, s_b, atol=1e-4)


@pytest.mark.parametrize("k", [5, 60])
def test_all_routes_dense_shares_rank_as_the_per_item_mixture(k):
    """With every route given, the cold shares are computed densely and cut at each row's (k + banned + warm)-th
    best: the lists and scores must equal the per-item form (:func:`parent_shares` over every parent, merged by
    ``merge_and_rank``), ties among siblings broken by content as before, warm beams on new items merged."""
    from rl_align.utils.ranking import merge_and_rank

    rng = np.random.default_rng(1)
    n_items = 3000
    cold = rng.choice(n_items, 2000, replace=False)
    is_cold = np.zeros(n_items, bool)
    is_cold[cold] = True
    parents = [(a, b) for a in range(8) for b in range(8)]
    idx = ColdIndex({p: np.sort(c) for p, c in zip(parents, np.array_split(cold, 64))}, is_cold)
    N, nb = 12, 10
    seq, tlp = rng.integers(0, 8, (N, nb, 4)), -rng.random((N, nb, 4))
    slp = tlp.sum(2)
    items = rng.integers(0, n_items, (N, nb))
    items[2, :3] = cold[:3]                                      # beams that emit new items: the two parts merge
    banned = np.where(rng.random((N, 30)) < 0.7, rng.integers(0, n_items, (N, 30)), -1)
    lp = np.log(rng.dirichlet(np.ones(64) * 0.3, N))
    lp[4, :10] = -np.inf
    lp[5] = -np.inf                                              # no route has mass: no cold part, no NaN
    vecs = rng.normal(size=(n_items, 16))
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    q = rng.normal(size=(N, 16))
    got = expand_with_cold(seq, tlp, slp, items, idx, 0.05, k, banned, q, vecs, (parents, lp))
    assert not np.isnan(got[1]).any() and set(got[0][5][got[0][5] >= 0].tolist()) <= set(items[5].tolist())
    for r in range(N):
        if r == 5:
            continue
        score = {}
        for b in range(nb):
            score[int(items[r, b])] = max(score.get(int(items[r, b]), -math.inf), float(slp[r, b]) + math.log1p(-0.05))
        par = dict(zip(parents, lp[r].tolist()))
        shares = parent_shares(par, idx, parents_log_mass(par), math.log(0.05))
        cand, val = merge_and_rank(score, shares, banned[r], k, lambda c, qq=q[r]: vecs[c] @ qq)
        np.testing.assert_array_equal(got[0][r, : cand.size], cand)
        np.testing.assert_array_equal(got[1][r, : cand.size], val)
