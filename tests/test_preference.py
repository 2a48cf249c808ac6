"""Preference objectives (dpo, sdpo, simpo, rad_dpo): TLGD gradients, RDRW weights, packing, and the pair builder."""

import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from rl_align.algos import OBJECTIVES, LossInputs
from rl_align.algos.preference import (
    PreferenceInputs,
    RdrwWeights,
    listwise_loss,
    pair_mask,
    sequence_scores,
    shared_prefix,
    tlgd_scores,
)
from rl_align.config import RlConfig
from rl_align.policy.logprobs import continuation_logprobs, grouped_continuation_logprobs
from rl_align.preferences.pairs import PreferenceTable, choose_negatives, read_table, write_table
from rl_align.sid.catalog import BOS, EOS, PAD

# one prompt, K = 4 slots: y*, a second positive, two negatives; 3 SID tokens + <eos>
TOKENS = torch.tensor([[[10, 20, 30, EOS], [11, 21, 31, EOS], [10, 20, 33, EOS], [10, 25, 35, EOS]]])
POSITIVE = torch.tensor([[True, True, False, False]])


def _inputs(seed=0, hidden=True):
    g = torch.Generator().manual_seed(seed)
    logp = (-torch.rand(1, 4, 4, generator=g) * 3).requires_grad_(True)
    h = torch.randn(1, 4, 8, generator=g).requires_grad_(True) if hidden else None
    return PreferenceInputs(logp=logp, mask=torch.ones(1, 4, 4), tokens=TOKENS, positive=POSITIVE,
                            valid=torch.ones(1, 4, dtype=torch.bool), hidden=h)


def _objective(name, **pref):
    cfg = RlConfig(algo=name)
    for k, v in pref.items():
        setattr(cfg.preference, k, v)
    return OBJECTIVES.get(name)(cfg)


def test_tlgd_zeroes_exactly_the_gradient_on_the_shared_prefix():
    """Negative 2 shares (10, 20) with y*, negative 3 shares (10,): with TLGD and y* only (MLGC off) their
    gradient is exactly 0 there and non-zero from the first differing token; without TLGD it is non-zero."""
    x = _inputs()
    obj = _objective("rad_dpo", tlgd=True, rdrw=False, mlgc=False, sft_weight=0.0)
    loss, _ = obj(LossInputs(gt_logp=x.logp[:, 0], gt_mask=x.mask[:, 0], pref=x))
    loss.backward()
    g = x.logp.grad[0]
    assert torch.all(g[2, :2] == 0) and torch.all(g[2, 2:] != 0)
    assert torch.all(g[3, :1] == 0) and torch.all(g[3, 1:] != 0)
    assert torch.all(g[1] == 0)                       # a second positive is not contrasted without MLGC
    y = _inputs()
    loss, _ = _objective("rad_dpo", tlgd=False, rdrw=False, mlgc=False, sft_weight=0.0)(
        LossInputs(gt_logp=y.logp[:, 0], gt_mask=y.mask[:, 0], pref=y))
    loss.backward()
    assert torch.all(y.logp.grad[0, 2:] != 0)
    torch.testing.assert_close(loss, _objective("rad_dpo", tlgd=True, rdrw=False, mlgc=False, sft_weight=0.0)(
        LossInputs(gt_logp=y.logp[:, 0], gt_mask=y.mask[:, 0], pref=y))[0])   # TLGD changes gradients, not values


def test_tlgd_scores_equal_plain_scores_and_prefixes_are_right():
    x = _inputs()
    sp = shared_prefix(TOKENS)
    assert sp[0, 0, 2].tolist() == [True, True, False, False] and sp[0, 0, 1].tolist() == [False] * 4
    torch.testing.assert_close(tlgd_scores(x, True)[0, 0], sequence_scores(x.logp, x.mask, True)[0])


def test_mlgc_contrasts_every_positive():
    x = _inputs()
    assert pair_mask(x, True)[0].sum() == 4 and pair_mask(x, False)[0].sum() == 2
    loss, _ = _objective("rad_dpo", rdrw=False, mlgc=True, sft_weight=0.0)(
        LossInputs(gt_logp=x.logp[:, 0], gt_mask=x.mask[:, 0], pref=x))
    loss.backward()
    assert torch.all(x.logp.grad[0, 1] != 0)


def test_rdrw_weights_lie_in_range_carry_no_gradient_and_downweight_similar_negatives():
    x = _inputs()
    x.hidden.data[0, 2] = x.hidden.data[0, 0] + 1e-3        # negative 2 ≈ y*: the most similar pair
    rd = RdrwWeights(size=64, min_weight=0.5)
    pairs = pair_mask(x, True)
    w = rd(x.hidden, pairs)
    assert not w.requires_grad
    assert torch.all((w[pairs] >= 0.5) & (w[pairs] <= 1.0)) and torch.all(w[~pairs] == 1)
    assert w[0, 0, 2] == w[pairs].min() == 0.5
    assert rd.buffer.numel() == 4
    loss, m = _objective("rad_dpo", rdrw=True)(LossInputs(gt_logp=x.logp[:, 0], gt_mask=x.mask[:, 0], pref=x))
    loss.backward()
    assert x.hidden.grad is None and 0.5 <= m["rdrw_weight_mean"] <= 1.0
    for _ in range(40):                                       # the buffer keeps only the most recent values
        rd(x.hidden, pairs)
    assert rd.buffer.numel() == 64


def test_sdpo_with_one_negative_is_dpo():
    x = _inputs(hidden=False)
    x.ref_logp = -torch.rand(1, 4, 4)
    x.valid = torch.tensor([[True, False, True, False]])       # y* and one negative
    d = _objective("dpo", sft_weight=0.0)(LossInputs(gt_logp=x.logp[:, 0], gt_mask=x.mask[:, 0], pref=x))[0]
    s = _objective("sdpo", sft_weight=0.0)(LossInputs(gt_logp=x.logp[:, 0], gt_mask=x.mask[:, 0], pref=x))[0]
    torch.testing.assert_close(d, s)
    r = sequence_scores(x.logp, x.mask, False) - sequence_scores(x.ref_logp, x.mask, False)
    torch.testing.assert_close(d, torch.nn.functional.softplus(-(r[0, 0] - r[0, 2])))


def test_the_sft_term_is_on_for_rad_dpo_and_off_for_dpo_by_default():
    x = _inputs()
    x.ref_logp = x.logp.detach().clone()
    nll = -(x.logp.detach() * x.mask)[0, :2].sum(-1).mean()
    li = LossInputs(gt_logp=x.logp[:, 0], gt_mask=x.mask[:, 0], pref=x)
    for name, w in (("rad_dpo", 1.0), ("dpo", 0.0), ("sdpo", 0.0)):
        loss, m = _objective(name)(li)
        torch.testing.assert_close(loss.detach(), torch.tensor(m["pref_loss"]) + w * nll)
    loss, m = _objective("dpo", sft_weight=0.5)(li)
    torch.testing.assert_close(loss.detach(), torch.tensor(m["pref_loss"]) + 0.5 * nll)


def test_listwise_loss_ignores_prompts_without_negatives():
    r = torch.zeros(2, 3)
    pairs = torch.zeros(2, 3, 3, dtype=torch.bool)
    pairs[0, 0, 2] = True
    out = listwise_loss(r, r[:, None, :], pairs)
    torch.testing.assert_close(out, torch.nn.functional.softplus(torch.tensor(0.0)))


def _model(vocab=40):
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=1,
                      intermediate_size=64, max_position_embeddings=64, pad_token_id=PAD)
    return LlamaForCausalLM(cfg).eval()


def test_packed_candidates_give_the_same_loss_hidden_states_and_gradients():
    """The learner packs a prompt's K candidates (one prompt forward, a shared KV cache); loss, end-of-SID hidden
    states and every parameter gradient equal the unpacked per-sequence computation."""
    g = torch.Generator().manual_seed(3)
    N, P = 2, 7
    prompt = torch.randint(5, 40, (N, P), generator=g)
    mask = torch.ones(N, P, dtype=torch.long)
    prompt[1, :2], mask[1, :2] = PAD, 0
    prompt[:, 0], prompt[1, 2] = BOS, BOS
    cand = torch.stack([TOKENS[0], TOKENS[0].flip(0).roll(1, 1)])            # (N, K, T)
    cand[1, :, -1] = EOS
    out = []
    for packed in (True, False):
        model = _model()
        if packed:
            lp, m, h = grouped_continuation_logprobs(model, prompt, mask, cand, return_hidden=True)
        else:
            rep = torch.arange(N).repeat_interleave(4)
            lp, m, h = continuation_logprobs(model, prompt[rep], mask[rep], cand.reshape(N * 4, 4), return_hidden=True)
            lp, m, h = lp.reshape(N, 4, 4), m.reshape(N, 4, 4), h.reshape(N, 4, -1)
        x = PreferenceInputs(logp=lp, mask=m, tokens=cand, positive=POSITIVE.expand(N, 4),
                             valid=torch.ones(N, 4, dtype=torch.bool), hidden=h)
        loss, _ = _objective("rad_dpo")(LossInputs(gt_logp=lp[:, 0], gt_mask=m[:, 0], pref=x))
        loss.backward()
        out.append((loss.detach(), h.detach(), torch.cat([p.grad.flatten() for p in model.parameters()])))
    torch.testing.assert_close(out[0][0], out[1][0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out[0][1], out[1][1], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out[0][2], out[1][2], rtol=1e-4, atol=1e-5)


def test_negatives_mix_sources_without_repeats_and_keep_provenance():
    rng = np.random.default_rng(0)
    neg, src, pos = choose_negatives([[5, 6, 7], []], [[0, 2, 3], []], [[7, 8, 9], [8, 9]], 3, 0.5, rng)
    assert (src[0] == 0).sum() == 2 and (src[0] == 1).sum() == 1           # round(3·0.5) = 2 from exposure
    assert len(set(neg[0].tolist())) == 3
    assert neg[1].tolist() == [8, 9, -1] and src[1].tolist() == [1, 1, -1] and pos[1].tolist() == [0, 1, -1]
    for k in range(3):
        if src[0, k] == 0:
            assert pos[0, k] == {5: 0, 6: 2, 7: 3}[int(neg[0, k])]


def test_pair_table_round_trips_through_parquet(tmp_path):
    t = PreferenceTable(np.array([3, 9]), np.array([[1, 2], [4, -1]]), np.array([[5, 6, -1], [7, 8, 9]]),
                        np.array([[0, 1, -1], [1, 1, 0]], np.int8), np.array([[4, 0, -1], [0, 1, 7]], np.int16))
    write_table(t, tmp_path, "abc")
    back, meta = read_table(tmp_path)
    assert meta["fingerprint"] == "abc" and meta["multi_label_share"] == 0.5
    for f in ("rows", "positives", "negatives", "neg_source", "neg_position"):
        np.testing.assert_array_equal(getattr(back, f), getattr(t, f))
