"""The array trie against a brute-force set of prefixes, on mixed-length codes."""

import numpy as np
import pytest
import torch

from rl_align.sid import EOS, SidCatalog, SidCodes, SidTrie


def random_codes(rng, n=400, sizes=(5, 4, 3, 6), min_len=1):
    """Distinct variable-length codes (a code may be a prefix of another: the end token separates them)."""
    seen, codes, lens = set(), [], []
    while len(codes) < n:
        L = int(rng.integers(min_len, len(sizes) + 1))
        c = tuple(int(rng.integers(0, sizes[l])) for l in range(L))
        if c in seen:
            continue
        seen.add(c)
        codes.append(list(c) + [-1] * (len(sizes) - L))
        lens.append(L)
    return SidCodes(np.array(codes), np.array(lens), list(sizes))


def brute_force_allowed(seqs, prefix):
    return {s[len(prefix)] for s in seqs if len(s) > len(prefix) and tuple(s[: len(prefix)]) == tuple(prefix)}


def test_trie_matches_brute_force(rng):
    codes = random_codes(rng)
    cat = SidCatalog([str(i) for i in range(codes.n)], codes)
    seqs = [cat.item_tokens(i) for i in range(codes.n)]
    trie = cat.trie
    # every proper prefix of every item, plus random junk prefixes
    prefixes = {tuple(s[:d]) for s in seqs for d in range(len(s))}
    for _ in range(300):
        d = int(rng.integers(1, 5))
        prefixes.add(tuple(int(x) for x in rng.integers(0, cat.vocab_size, d)))
    prefixes = sorted(prefixes, key=lambda p: (len(p), p))
    T = max(len(p) for p in prefixes)
    mat = torch.zeros(len(prefixes), max(T, 1), dtype=torch.long)
    lens = torch.tensor([len(p) for p in prefixes])
    for r, p in enumerate(prefixes):
        mat[r, : len(p)] = torch.tensor(p, dtype=torch.long)
    mask = trie.allowed_next(mat, lens)
    for r, p in enumerate(prefixes):
        assert set(mask[r].nonzero().flatten().tolist()) == brute_force_allowed(seqs, p), p
    # full sequences map back to their item; anything else to -1
    full = torch.from_numpy(cat.tokens)
    assert trie.lookup(full, torch.from_numpy(cat.token_lengths)).tolist() == list(range(codes.n))
    full_set = {tuple(x) for x in seqs}
    not_item = torch.tensor([p not in full_set for p in prefixes])
    assert (trie.item_of(trie.walk(mat, lens))[not_item] == -1).all()  # proper prefixes/junk are no item


def test_mask_logits_and_step(rng):
    codes = random_codes(rng, n=100)
    cat = SidCatalog([str(i) for i in range(codes.n)], codes)
    trie = cat.trie
    states = trie.root(3)
    logits = torch.randn(3, cat.vocab_size)
    out = trie.mask_logits(logits, states)
    allowed = trie.allowed_mask(states)
    assert torch.equal(out[allowed], logits[allowed]) and torch.isinf(out[~allowed]).all()
    # stepping with a disallowed token invalidates the state; invalid stays invalid
    bad_tok = (~allowed[0]).nonzero()[0]
    s = trie.step(states[:1], bad_tok)
    assert s.item() == -1
    assert trie.step(s, torch.tensor([EOS])).item() == -1
    assert not trie.allowed_mask(s).any()


def test_greedy_constrained_walk_always_valid(rng):
    """Following any allowed token until the end token always lands on an item."""
    codes = random_codes(rng, n=200)
    cat = SidCatalog([str(i) for i in range(codes.n)], codes)
    trie = cat.trie
    N = 500
    states = trie.root(N)
    done = torch.zeros(N, dtype=torch.bool)
    items = torch.full((N,), -1)
    for _ in range(cat.max_sid_len):
        logits = trie.mask_logits(torch.randn(N, cat.vocab_size), states)
        logits[done] = 0.0  # finished rows: anything, their state is kept below
        tok = torch.distributions.Categorical(logits=logits).sample()
        nxt = trie.step(states, tok)
        states = torch.where(done, states, nxt)
        hit = (~done) & (tok == EOS)
        items[hit] = trie.item_of(states[hit])
        done |= hit
    assert done.all() and (items >= 0).all()


def test_duplicate_and_prefix_errors():
    with pytest.raises(ValueError, match="same SID token sequence"):
        SidTrie.build(np.array([[5, 6, EOS], [5, 6, EOS]]), np.array([3, 3]), 10)
    with pytest.raises(ValueError, match="strict prefix"):
        SidTrie.build(np.array([[5, 6, 0], [5, 6, 7]]), np.array([2, 3]), 10)


def test_save_load_and_size(rng, tmp_path):
    codes = random_codes(rng, n=300)
    cat = SidCatalog([str(i) for i in range(codes.n)], codes)
    cat.trie.save(tmp_path / "t.npz")
    t2 = SidTrie.load(tmp_path / "t.npz")
    s = torch.from_numpy(cat.tokens)
    assert torch.equal(t2.lookup(s, torch.from_numpy(cat.token_lengths)), torch.arange(codes.n))
    assert cat.trie.nbytes() / codes.n < 64
