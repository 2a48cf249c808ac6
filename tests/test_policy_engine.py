"""Prompts, training windows, the torch rollout engine (vs brute force and HF generate), evaluation maths."""


import numpy as np
import pytest
import torch
from helpers import all_items_logprob as _all_items_logprob

from rl_align.config import PolicyConfig
from rl_align.eval.evaluate import EvalSet, metrics, rank_popularity
from rl_align.policy.data import build_prompts, prompts_from_raw, strided_windows, windows_to_batch
from rl_align.policy.model import VocabMismatchError, build_policy, load_policy, save_policy
from rl_align.rollouts import GenerationRequest, build_engine
from rl_align.sid import BOS, EOS, PAD, SidCatalog, SidCodes


@pytest.fixture(scope="module")
def small():
    """30 items with mixed-length codes, a tiny random Llama over them."""
    rng = np.random.default_rng(3)
    seen, codes, lens = set(), [], []
    while len(codes) < 30:
        L = int(rng.integers(2, 4))
        c = tuple(int(rng.integers(0, 4)) for _ in range(L))
        if c in seen or any(c[:k] in seen for k in range(1, L)) or any(s[:L] == c for s in seen):
            continue
        seen.add(c)
        codes.append(list(c) + [-1] * (3 - L))
        lens.append(L)
    cat = SidCatalog([f"i{k}" for k in range(30)], SidCodes(np.array(codes), np.array(lens), [4, 4, 4]))
    torch.manual_seed(0)
    model = build_policy(PolicyConfig(hidden_size=64, num_layers=1, num_heads=1, intermediate_size=128), cat, 5)
    return cat, model.eval()


def test_prompts_left_padded(small):
    cat, _ = small
    hist = np.array([[-1, -1, 3], [1, 2, 3]])
    ids, mask = build_prompts(hist, cat)
    row1 = [BOS] + cat.item_tokens(1) + cat.item_tokens(2) + cat.item_tokens(3)
    assert ids[1, -len(row1):].tolist() == row1 and mask[1].sum() == len(row1)
    row0 = [BOS] + cat.item_tokens(3)
    assert ids[0, -len(row0):].tolist() == row0 and (ids[0, : ids.shape[1] - len(row0)] == PAD).all()
    with pytest.raises(KeyError, match=r"history row 0, position 1: item 'nope' is not in the catalog"):
        prompts_from_raw([["i1", "nope"]], cat, 5)


def test_windows_cover_train_items_only():
    seq = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11])
    offs = np.array([0, 7, 12])
    train_len = np.diff(offs) - 2
    rng = np.random.default_rng(0)
    for _ in range(5):
        w, _ = strided_windows(seq, offs, train_len, 3, None, rng)
        items = w[w >= 0]
        # every training item appears exactly once; valid/test items (5, 6, 10, 11) never
        assert sorted(items.tolist()) == [0, 1, 2, 3, 4, 7, 8, 9]


def test_windows_to_batch_labels(small):
    cat, _ = small
    b = windows_to_batch(np.array([[-1, 4, 5]]), cat)
    toks = [BOS] + cat.item_tokens(4) + cat.item_tokens(5)
    assert b["input_ids"][0, : len(toks)].tolist() == toks
    assert b["labels"][0, 0] == -100 and b["labels"][0, 1: len(toks)].tolist() == toks[1:]
    assert (b["labels"][0, len(toks):] == -100).all()


def test_beam_search_exhaustive_equals_brute_force(small):
    cat, model = small
    eng = build_engine("torch", model=model, catalog=cat)
    ids, mask = build_prompts(np.array([[-1, 1, 2], [3, 4, 5], [-1, -1, 7]]), cat)
    B = cat.n_items  # a beam as wide as the catalog is exhaustive
    res = eng.generate(GenerationRequest(ids, mask, n=B))
    exact = _all_items_logprob(model, cat, ids, mask)
    for r in range(3):
        order = torch.argsort(exact[r], descending=True)
        assert res.items[r].tolist() == order.tolist()
        assert torch.allclose(res.seq_logprob[r], exact[r][order], atol=1e-4)
    assert torch.allclose(res.seq_logprob, res.token_logprobs.sum(-1), atol=1e-4)
    # narrower beams: valid, distinct, sorted
    res5 = eng.generate(GenerationRequest(ids, mask, n=5))
    assert (res5.items >= 0).all() and all(len(set(r.tolist())) == 5 for r in res5.items)
    assert (res5.seq_logprob[:, :-1] >= res5.seq_logprob[:, 1:]).all()


def test_beam_matches_hf_generate(small):
    cat, model = small
    fixed = SidCatalog([f"j{k}" for k in range(40)], SidCodes(
        np.array([[a, b, c] for a in range(4) for b in range(4) for c in range(4)][:40]), np.full(40, 3), [4, 4, 4]))
    torch.manual_seed(1)
    m = build_policy(PolicyConfig(hidden_size=64, num_layers=1, num_heads=1, intermediate_size=128), fixed, 5).eval()
    eng = build_engine("torch", model=m, catalog=fixed)
    ids, mask = build_prompts(np.array([[-1, 1, 2], [3, 4, 5]]), fixed)
    B = 8
    ours = eng.generate(GenerationRequest(ids, mask, n=B)).items
    P = ids.shape[1]

    def allowed(_, input_ids):
        mask_ = fixed.trie.allowed_next(input_ids[P:][None], None)[0]
        return mask_.nonzero().flatten().tolist() or [PAD]

    out = m.generate(input_ids=ids, attention_mask=mask, num_beams=B, num_return_sequences=B, max_new_tokens=4,
                     prefix_allowed_tokens_fn=allowed, do_sample=False, length_penalty=0.0, early_stopping=True,
                     pad_token_id=PAD, eos_token_id=EOS)
    hf = torch.from_numpy(fixed.decode(out[:, P:].numpy()).reshape(2, B))
    assert torch.equal(ours, hf)


def test_banned_items_and_sampling(small):
    cat, model = small
    eng = build_engine("torch", model=model, catalog=cat)
    ids, mask = build_prompts(np.array([[-1, 1, 2], [3, 4, 5]]), cat)
    banned = torch.tensor([[1, 2, -1], [3, 4, 5]])
    res = eng.generate(GenerationRequest(ids, mask, n=10, banned_items=banned))
    for r in range(2):
        assert not set(res.items[r].tolist()) & set(banned[r].tolist()) - {-1}
    torch.manual_seed(0)
    s = eng.generate(GenerationRequest(ids, mask, n=64, mode="sample", temperature=1.0))
    assert s.valid.all()  # constrained sampling: 0 invalid SIDs by construction
    assert torch.allclose(s.seq_logprob, s.token_logprobs.sum(-1))
    free = eng.generate(GenerationRequest(ids, mask, n=64, mode="sample", constrained=False))
    assert (~free.valid).any()  # an untrained policy hallucinates when free
    dec = cat.decode(free.sequences.view(-1, free.sequences.shape[-1]).numpy())
    assert np.array_equal(dec, free.items.view(-1).numpy())


def test_load_weights_versioned(small):
    cat, model = small
    eng = build_engine("torch", model=model, catalog=cat)
    ids, mask = build_prompts(np.array([[1, 2, 3]]), cat)
    before = eng.generate(GenerationRequest(ids, mask, n=3)).seq_logprob
    sd = {k: v + 0.05 * torch.randn_like(v) for k, v in model.state_dict().items()}
    orig = {k: v.clone() for k, v in model.state_dict().items()}
    eng.load_weights(sd, version=7)
    res = eng.generate(GenerationRequest(ids, mask, n=3))
    assert res.version == 7 and not torch.allclose(before, res.seq_logprob)
    eng.load_weights(orig, version=8)
    with pytest.raises(ValueError, match="unexpected"):
        eng.load_weights({"bogus.weight": torch.zeros(1)}, version=9)


def test_policy_vocab_mismatch_refused(small, tmp_path):
    cat, model = small
    save_policy(model, tmp_path / "p", cat)
    assert load_policy(tmp_path / "p", cat).config.vocab_size == cat.vocab_size
    other = SidCatalog(["a", "b"], SidCodes(np.array([[0], [1]]), np.array([1, 1]), [2]))
    with pytest.raises(VocabMismatchError, match="trained on another catalog"):
        load_policy(tmp_path / "p", other)
    with pytest.raises(VocabMismatchError, match="not an rl-align policy"):
        load_policy(tmp_path, cat)


def test_metrics_second_implementation():
    rng = np.random.default_rng(0)
    ranked = np.stack([rng.permutation(50)[:20] for _ in range(200)])
    targets = rng.integers(0, 50, 200)
    m = metrics(ranked, targets, [1, 5, 10, 20])
    for k in (1, 5, 10, 20):
        hr = ndcg = 0.0
        for row, t in zip(ranked.tolist(), targets.tolist()):
            if t in row[:k]:
                hr += 1
                ndcg += 1 / np.log2(row.index(t) + 2)
        assert m[f"hr@{k}"] == pytest.approx(hr / 200) and m[f"ndcg@{k}"] == pytest.approx(ndcg / 200)


def test_popularity_excludes_history():
    pop = np.array([10, 9, 8, 7, 6])
    es = EvalSet(np.array([0]), np.array([3]), np.array([[0, 1]]), np.array([[0, 2, -1]]))
    assert rank_popularity(pop, es, 3, True).tolist() == [[1, 3, 4]]
    assert rank_popularity(pop, es, 3, False).tolist() == [[0, 1, 2]]


def test_per_prompt_seeds_make_samples_independent_of_the_batch(small):
    """A prompt's samples depend only on its seed: alone or batched with others, same draws; the empirical
    distribution matches the policy's (Gumbel-max is exact sampling)."""
    cat, model = small
    eng = build_engine("torch", model=model, catalog=cat)
    hist = np.array([[-1, 1, 2], [3, 4, 5], [0, 6, 7]])
    ids, mask = build_prompts(hist, cat)
    seeds = torch.tensor([11, 22, 33])
    both = eng.generate(GenerationRequest(ids, mask, n=16, mode="sample", seeds=seeds))
    for r in range(3):
        i1, m1 = build_prompts(hist[r:r + 1], cat)
        one = eng.generate(GenerationRequest(i1, m1, n=16, mode="sample", seeds=seeds[r:r + 1]))
        assert torch.equal(one.items[0], both.items[r])
        torch.testing.assert_close(one.seq_logprob[0], both.seq_logprob[r], rtol=1e-5, atol=1e-5)
    other = eng.generate(GenerationRequest(ids, mask, n=16, mode="sample", seeds=torch.tensor([11, 23, 33])))
    assert torch.equal(other.items[0], both.items[0]) and not torch.equal(other.items[1], both.items[1])
    # same distribution as the unseeded (multinomial) sampler: item frequencies over many draws agree
    big = eng.generate(GenerationRequest(ids[:1], mask[:1], n=6000, mode="sample", seeds=torch.tensor([5])))
    torch.manual_seed(0)
    ref = eng.generate(GenerationRequest(ids[:1], mask[:1], n=6000, mode="sample"))
    f1, f2 = (torch.bincount(x.items[0], minlength=cat.n_items).float() / 6000 for x in (big, ref))
    assert (f1 - f2).abs().max() < 0.025 and f1.max() < 0.5


@pytest.mark.parametrize("arch,heads,kv_heads", [("llama", 1, None), ("llama", 2, 1), ("qwen2", 2, 2)])
def test_shared_prefix_attention_equals_replicated_cache(small, arch, heads, kv_heads):
    """Decoding with the prompt KV kept once per prompt gives what copying it into every beam/sample row gives."""
    cat, _ = small
    torch.manual_seed(4)
    cfg = PolicyConfig(arch=arch, hidden_size=64 * heads, num_layers=2, num_heads=heads, num_kv_heads=kv_heads,
                       intermediate_size=128)
    hist = np.array([[-1, -1, 1, 2], [3, 4, 5, 6], [-1, -1, -1, 7], [8, 9, 1, 0]])  # mixed left padding
    ids, mask = build_prompts(hist, cat)
    banned = torch.tensor([[1, 2, -1], [3, 4, 5], [-1, -1, -1], [0, 8, 9]])
    seeds = torch.arange(4) + 11
    engines = []
    for shared in (True, False):
        model = build_policy(cfg, cat, 5)
        model.load_state_dict(engines[0].model.state_dict() if engines else model.state_dict())
        engines.append(build_engine("torch", model=model, catalog=cat, shared_prefix=shared))
    fast, slow = engines
    assert fast.shared_prefix and not slow.shared_prefix
    for req in (GenerationRequest(ids, mask, n=7, banned_items=banned),
                GenerationRequest(ids, mask, n=cat.n_items),
                GenerationRequest(ids, mask, n=6, constrained=False),
                GenerationRequest(ids, mask, n=9, mode="sample", seeds=seeds),
                GenerationRequest(ids, mask, n=9, mode="sample", constrained=False, seeds=seeds)):
        a, b = fast.generate(req), slow.generate(req)
        assert torch.equal(a.sequences, b.sequences) and torch.equal(a.items, b.items)
        assert torch.allclose(a.token_logprobs, b.token_logprobs, atol=1e-5)
        assert torch.allclose(a.seq_logprob, b.seq_logprob, atol=1e-5)
    # the switched model still scores (and trains) exactly as SDPA does: the dispatcher is plain SDPA there
    fast.model.train()
    slow.model.train()
    with torch.no_grad():
        torch.manual_seed(0)
        la = fast.model(input_ids=ids, attention_mask=mask).logits
        torch.manual_seed(0)
        lb = slow.model(input_ids=ids, attention_mask=mask).logits
    assert torch.allclose(la, lb, atol=1e-6)


def test_corrupt_policy_weights_name_the_file(small, tmp_path):
    cat, model = small
    save_policy(model, tmp_path / "p", cat)
    (tmp_path / "p" / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match=r"model\.safetensors: cannot load the policy weights"):
        load_policy(tmp_path / "p", cat)


def test_sampled_hallucination_rate_counts_free_samples(small):
    """The sampled rate is the share of invalid SIDs among free samples at T, seeded per user (so independent of
    the batch size) and equal to what the engine's free sampling with those seeds returns."""
    from rl_align.eval.evaluate import sampled_hallucination_rate

    cat, model = small
    eng = build_engine("torch", model=model, catalog=cat)
    hist = np.array([[-1, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10, 11]])
    es = EvalSet(users=np.arange(4), history=hist, targets=np.array([0, 1, 2, 3]),
                 seen=np.full((4, 1), -1))
    r3 = sampled_hallucination_rate(eng, cat, es, n=32, temperature=1.0, batch_size=3)
    r4 = sampled_hallucination_rate(eng, cat, es, n=32, temperature=1.0, batch_size=4)
    ids, mask = build_prompts(hist, cat)
    free = eng.generate(GenerationRequest(ids, mask, n=32, mode="sample", constrained=False,
                                          seeds=torch.arange(4)))
    assert r3 == r4 == float((free.items < 0).float().mean()) and r3 > 0.0   # an untrained policy hallucinates
    cons = eng.generate(GenerationRequest(ids, mask, n=32, mode="sample", constrained=True, seeds=torch.arange(4)))
    assert cons.valid.all()


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_hidden_dropout_acts_in_training_only(small, arch):
    """policy.hidden_dropout drops ~p of each sub-layer output (scaled by 1/(1-p)) in training; eval is untouched."""
    from rl_align.policy.model import add_hidden_dropout

    cat, _ = small
    cfg = PolicyConfig(arch=arch, hidden_size=64, num_layers=2, num_heads=1, intermediate_size=128,
                       attention_dropout=0.0)
    plain, hooked = build_policy(cfg, cat, 5, seed=1), build_policy(cfg, cat, 5, seed=1)
    add_hidden_dropout(hooked, 0.5)
    seen = {}
    for name in ("self_attn", "mlp"):
        getattr(hooked.model.layers[1], name).register_forward_hook(
            lambda m, a, out, name=name: seen.__setitem__(name, out[0] if isinstance(out, tuple) else out))
    ids, mask = build_prompts(np.array([[1, 2, 3, 4]]), cat)
    plain.eval(), hooked.eval()
    assert torch.equal(plain(ids, attention_mask=mask).logits, hooked(ids, attention_mask=mask).logits)
    assert (seen["mlp"] == 0).float().mean() < 0.01
    hooked.train()
    torch.manual_seed(0)
    a = hooked(ids, attention_mask=mask).logits
    for name in ("self_attn", "mlp"):
        zero = (seen[name] == 0).float().mean().item()
        assert 0.35 < zero < 0.65, (name, zero)
    assert not torch.allclose(a, hooked(ids, attention_mask=mask).logits)
    with pytest.raises(ValueError, match="hidden_dropout"):
        add_hidden_dropout(plain, 1.0)
