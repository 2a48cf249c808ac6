"""The learner's shared-prefix log-probs equal the plain per-sequence ones, values and gradients."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from rl_align.policy.logprobs import continuation_logprobs, grouped_continuation_logprobs
from rl_align.sid.catalog import BOS, EOS, PAD


def _model(vocab=40):
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=64, num_hidden_layers=2, num_attention_heads=1,
                      intermediate_size=96, max_position_embeddings=64, pad_token_id=PAD)
    return LlamaForCausalLM(cfg).eval()


def _batch(N=3, K=4, P=9, T=4, vocab=40):
    g = torch.Generator().manual_seed(1)
    prompt = torch.randint(5, vocab, (N, P), generator=g)
    mask = torch.ones(N, P, dtype=torch.long)
    for i, n_pad in enumerate([0, 3, 5][:N]):            # left padding of different lengths
        prompt[i, :n_pad], mask[i, :n_pad] = PAD, 0
        prompt[i, n_pad] = BOS
    conts = torch.randint(5, vocab, (N, K, T), generator=g)
    conts[:, :, -1] = EOS
    conts[0, 1, 2], conts[0, 1, 3] = EOS, PAD           # a shorter continuation, then padding
    conts[1, 2, 1] = EOS                                # tokens after the first <eos> do not count
    return prompt, mask, conts


def test_grouped_logprobs_equal_plain_ones():
    model = _model()
    prompt, mask, conts = _batch()
    N, K, T = conts.shape
    with torch.no_grad():
        a, am = grouped_continuation_logprobs(model, prompt, mask, conts)
        rep = torch.arange(N).repeat_interleave(K)
        b, bm = continuation_logprobs(model, prompt[rep], mask[rep], conts.reshape(N * K, T))
    assert a.shape == (N, K, T)
    assert torch.equal(am.reshape(N * K, T), bm)
    assert bm[K + 2].tolist() == [1, 1, 0, 0] and bm[1].tolist() == [1, 1, 1, 0]
    torch.testing.assert_close(a.reshape(N * K, T), b, rtol=1e-5, atol=1e-5)


def test_grouped_logprobs_give_the_same_gradients():
    prompt, mask, conts = _batch()
    N, K, T = conts.shape
    grads = []
    for grouped in (True, False):
        model = _model()
        if grouped:
            lp, _ = grouped_continuation_logprobs(model, prompt, mask, conts)
        else:
            rep = torch.arange(N).repeat_interleave(K)
            lp, _ = continuation_logprobs(model, prompt[rep], mask[rep], conts.reshape(N * K, T))
        w = torch.linspace(-1, 1, lp.numel()).reshape(lp.shape)
        (lp * w).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("T", [1, 2])
def test_grouped_logprobs_short_continuations(T):
    model = _model()
    prompt, mask, conts = _batch(T=4)
    conts = conts[:, :, :T].clone()
    conts[:, :, -1] = EOS
    N, K, _ = conts.shape
    with torch.no_grad():
        a, _ = grouped_continuation_logprobs(model, prompt, mask, conts)
        rep = torch.arange(N).repeat_interleave(K)
        b, _ = continuation_logprobs(model, prompt[rep], mask[rep], conts.reshape(N * K, T))
    torch.testing.assert_close(a.reshape(N * K, T), b, rtol=1e-5, atol=1e-5)


def test_disable_dropout_makes_training_mode_deterministic():
    from transformers import LlamaConfig as C

    from rl_align.policy.model import disable_dropout

    torch.manual_seed(0)
    model = LlamaForCausalLM(C(vocab_size=40, hidden_size=64, num_hidden_layers=1, num_attention_heads=1,
                               intermediate_size=96, attention_dropout=0.5, pad_token_id=PAD)).train()
    prompt, mask, conts = _batch()
    a = grouped_continuation_logprobs(model, prompt, mask, conts)[0]
    b = grouped_continuation_logprobs(model, prompt, mask, conts)[0]
    assert not torch.allclose(a, b)                      # dropout on: two passes differ
    disable_dropout(model)
    a = grouped_continuation_logprobs(model, prompt, mask, conts)[0]
    b = grouped_continuation_logprobs(model, prompt, mask, conts)[0]
    assert torch.equal(a, b) and model.training


def test_deepspeed_config_merge(tmp_path):
    import json

    from rl_align.config import merge_ds_config

    base = {"train_batch_size": 8, "zero_optimization": {"stage": 0}, "gradient_clipping": 1.0}
    out = merge_ds_config(base, {"zero_optimization": {"stage": 2, "overlap_comm": True}, "bf16": {"enabled": True}})
    assert out == {"train_batch_size": 8, "gradient_clipping": 1.0, "bf16": {"enabled": True},
                   "zero_optimization": {"stage": 2, "overlap_comm": True}}
    assert base["zero_optimization"] == {"stage": 0}          # not mutated
    p = tmp_path / "ds.json"
    p.write_text(json.dumps({"zero_optimization": {"stage": 3}}))
    assert merge_ds_config(base, str(p))["zero_optimization"]["stage"] == 3
    with pytest.raises(ValueError, match="rl.deepspeed.train_batch_size"):
        merge_ds_config(base, {"train_batch_size": 4})
    with pytest.raises(ValueError, match="cannot read DeepSpeed JSON"):
        merge_ds_config(base, str(tmp_path / "missing.json"))
