"""Cold-item expansion: the mixture scores on a hand-made catalog, and a run-level check that it retrieves
held-out items the plain beam never returns."""

import math

import numpy as np
import pytest

from rl_align.eval.cold_expand import ColdIndex, expand_with_cold, measured_cold_prior, user_queries
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
