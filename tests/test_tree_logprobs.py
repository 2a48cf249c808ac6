"""Tree attention: K sequences' log-probs from one forward of their distinct prefixes equal the grouped teacher
forcing's, whatever the batching, with prefixes without ``<eos>`` and empty sequences among them."""

import itertools

import numpy as np
import pytest
import torch

from rl_align.config import PolicyConfig
from rl_align.policy.logprobs import sequence_logprobs
from rl_align.policy.model import build_policy
from rl_align.policy.tree_logprobs import PrefixTree, tree_logprobs
from rl_align.sid import SidCatalog
from rl_align.sid.catalog import PAD
from rl_align.sid.codes import SidCodes


def _setup():
    codes = np.array(list(itertools.product(range(4), range(4), range(4)))[::3], np.int32)     # 22 unique codes
    cat = SidCatalog([str(i) for i in range(len(codes))], SidCodes(codes, np.full(len(codes), 3, np.int32), [4] * 3))
    torch.manual_seed(0)
    model = build_policy(PolicyConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64), cat, 8).eval()
    seqs = np.concatenate([cat.tokens[:15], np.full((3, cat.tokens.shape[1]), PAD)])
    seqs[15, :2] = cat.tokens[5, :2]                      # a parent prefix, no <eos>
    seqs[16, :1] = cat.tokens[9, :1]                      # a one-token prefix; row 17 stays empty (the root)
    return cat, model, seqs


def test_prefix_tree_holds_each_prefix_once_parents_first():
    _, _, seqs = _setup()
    tree = PrefixTree.build(seqs)
    prefixes = {tuple(r[:d + 1]) for r in seqs.tolist() for d in range(len(r)) if r[d] != PAD and PAD not in r[:d]}
    assert tree.token.size == len(prefixes)                       # the full codes' prefixes, deduplicated
    assert (tree.parent < np.arange(tree.token.size)).all()
    assert tree.end[17] == -1 and tree.depth[tree.end[16]] == 0 and tree.depth[tree.end[15]] == 1
    anc = tree.ancestors()
    assert anc.diagonal().all() and anc.sum() == sum(tree.depth[f] + 1 for f in tree.feed)


@pytest.mark.parametrize("max_cells", [1, 300, 1 << 24])
def test_tree_logprobs_equal_the_grouped_teacher_forcing(max_cells):
    cat, model, seqs = _setup()
    rng = np.random.default_rng(0)
    hist = rng.integers(-1, cat.n_items, (7, 5))
    hist[3] = -1                                          # an empty history: a prompt of prefix tokens only
    users = np.arange(7)
    got = tree_logprobs(model, cat, hist, users, PrefixTree.build(seqs), max_cells=max_cells)
    want = sequence_logprobs(model, cat, hist, users, np.broadcast_to(seqs, (7,) + seqs.shape))
    np.testing.assert_allclose(got, want, atol=1e-4)
    np.testing.assert_array_equal(got[:, 17], 0.0)
    assert (got[:, 5] <= got[:, 15] + 1e-6).all() and (got[:, 9] <= got[:, 16] + 1e-6).all()   # a code ≤ its prefix
    assert np.unique(np.round(got[:, :15], 4)).size > 10
