"""Prefix-level exclusion of banned (seen) items: the trie's dead-node sets and the torch engine's guarantees.

Every ranked list must hold min(B, unseen items) valid, distinct, unseen items; a banned item never appears;
with a beam as wide as the catalog the ranking equals brute-force scoring of every unseen item.
"""

import numpy as np
import pytest
import torch
from helpers import all_items_logprob

from rl_align.config import PolicyConfig
from rl_align.policy.data import build_prompts
from rl_align.policy.model import build_policy
from rl_align.rollouts import GenerationRequest, build_engine
from rl_align.sid import SidCatalog, SidCodes


def _random_catalog(rng: np.random.Generator, n_items: int, K: int = 4) -> SidCatalog:
    """``n_items`` items with random prefix-free codes of length 1..3 over K codes per level."""
    codes: list[tuple[int, ...]] = []
    while len(codes) < n_items:
        codes = []
        for a in range(K):
            if rng.random() < 0.15:
                codes.append((a,))
                continue
            for b in range(K):
                if rng.random() < 0.3:
                    codes.append((a, b))
                    continue
                codes.extend((a, b, c) for c in range(K))
    pick = [codes[i] for i in rng.permutation(len(codes))[:n_items]]
    arr = np.array([list(c) + [-1] * (3 - len(c)) for c in pick])
    lens = np.array([len(c) for c in pick])
    return SidCatalog([f"i{k}" for k in range(n_items)], SidCodes(arr, lens, [K] * 3))


def _policy(cat: SidCatalog, seed: int):
    torch.manual_seed(seed)
    return build_policy(PolicyConfig(hidden_size=64, num_layers=1, num_heads=1, intermediate_size=128), cat, 5).eval()


def _random_bans(rng: np.random.Generator, n_req: int, n_items: int) -> torch.Tensor:
    """(n_req, n_items) bans of random sizes 0..n_items (with a repeated item), -1 padded."""
    out = np.full((n_req, n_items + 1), -1, np.int64)
    for r in range(n_req):
        k = int(rng.integers(0, n_items + 1))
        pick = rng.permutation(n_items)[:k]
        if k:
            pick = np.append(pick, pick[0])  # duplicates must not count twice
        out[r, : pick.size] = pick
    return torch.from_numpy(out)


@pytest.mark.parametrize("seed", range(6))
def test_dead_nodes_equal_brute_force(seed):
    rng = np.random.default_rng(seed)
    cat = _random_catalog(rng, int(rng.integers(5, 40)))
    trie = cat.trie
    bans = _random_bans(rng, 5, cat.n_items)
    dead = set(trie.dead_nodes(bans).tolist())
    # brute force: a node is dead for request r iff every item whose path passes through it is banned
    below: dict[int, set[int]] = {}
    for i in range(cat.n_items):
        toks = cat.item_tokens(i)
        for d in range(len(toks) + 1):
            node = int(trie.walk(torch.tensor([toks[:d]], dtype=torch.long))[0])
            below.setdefault(node, set()).add(i)
    for r in range(bans.shape[0]):
        banned = set(bans[r][bans[r] >= 0].tolist())
        for node, items in below.items():
            assert ((r * trie.n_nodes + node) in dead) == items.issubset(banned), (r, node)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("shared_prefix", [True, False])
def test_beam_lists_are_full_distinct_and_unseen(seed, shared_prefix):
    rng = np.random.default_rng(100 + seed)
    cat = _random_catalog(rng, int(rng.integers(6, 30)))
    model = _policy(cat, seed)
    eng = build_engine("torch", model=model, catalog=cat, shared_prefix=shared_prefix)
    hist = rng.integers(-1, cat.n_items, size=(6, 3))
    ids, mask = build_prompts(hist, cat)
    bans = _random_bans(rng, 6, cat.n_items)
    exact = all_items_logprob(model, cat, ids, mask)
    for B in sorted({1, 3, int(rng.integers(2, cat.n_items + 4)), cat.n_items, cat.n_items + 2}):
        res = eng.generate(GenerationRequest(ids, mask, n=B, banned_items=bans))
        for r in range(6):
            banned = set(bans[r][bans[r] >= 0].tolist())
            allowed = [i for i in range(cat.n_items) if i not in banned]
            got = res.items[r][res.items[r] >= 0].tolist()
            assert len(got) == min(B, len(allowed)), (B, r, got)
            assert len(set(got)) == len(got) and not set(got) & banned
            assert (res.items[r][: len(got)] >= 0).all()           # valid items first, empty slots last
            assert torch.isfinite(res.seq_logprob[r, : len(got)]).all()
            assert not torch.isfinite(res.seq_logprob[r, len(got):]).any()
            if B >= cat.n_items:  # a beam as wide as the catalog is exhaustive: it equals brute force
                order = sorted(allowed, key=lambda i: -float(exact[r, i]))
                assert got == order
                assert torch.allclose(res.seq_logprob[r, : len(got)], exact[r, order], atol=1e-4)


def test_all_but_five_seen_gets_exactly_those_five():
    rng = np.random.default_rng(7)
    cat = _random_catalog(rng, 40)
    eng = build_engine("torch", model=_policy(cat, 1), catalog=cat)
    keep = [3, 11, 17, 28, 39]
    bans = torch.tensor([[i for i in range(40) if i not in keep]])
    ids, mask = build_prompts(np.array([[0, 1, 2]]), cat)
    for B in (5, 10, 20):
        res = eng.generate(GenerationRequest(ids, mask, n=B, banned_items=bans))
        assert sorted(res.items[0][:5].tolist()) == keep and (res.items[0][5:] == -1).all()
    everything = torch.arange(40)[None]
    res = eng.generate(GenerationRequest(ids, mask, n=4, banned_items=everything))
    assert (res.items == -1).all() and not torch.isfinite(res.seq_logprob).any()


@pytest.mark.parametrize("seed", range(4))
def test_samples_never_banned_and_never_lost(seed):
    rng = np.random.default_rng(200 + seed)
    cat = _random_catalog(rng, 25)
    eng = build_engine("torch", model=_policy(cat, seed), catalog=cat)
    hist = rng.integers(-1, cat.n_items, size=(5, 3))
    ids, mask = build_prompts(hist, cat)
    bans = _random_bans(rng, 5, cat.n_items)
    bans[0] = -1
    bans[0, : cat.n_items] = torch.arange(cat.n_items)   # everything banned: nothing to sample
    res = eng.generate(GenerationRequest(ids, mask, n=16, mode="sample", banned_items=bans,
                                         seeds=torch.arange(5)))
    assert (res.items[0] == -1).all()
    for r in range(1, 5):
        banned = set(bans[r][bans[r] >= 0].tolist())
        if len(banned) == cat.n_items:
            continue
        assert (res.items[r] >= 0).all(), r                  # every sample reaches an allowed item
        assert not set(res.items[r].tolist()) & banned


def test_banned_needs_constrained_decoding():
    rng = np.random.default_rng(0)
    cat = _random_catalog(rng, 10)
    eng = build_engine("torch", model=_policy(cat, 0), catalog=cat)
    ids, mask = build_prompts(np.array([[0, 1]]), cat)
    with pytest.raises(ValueError, match="constrained"):
        eng.generate(GenerationRequest(ids, mask, n=3, constrained=False, banned_items=torch.tensor([[1]])))
