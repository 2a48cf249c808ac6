"""SFT's next-token loss (``sft.label_smoothing``): HF's own loss when off, the smoothed cross-entropy when on,
and a real Ray SFT run that trains with it."""

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from rl_align.policy.model import next_token_loss


@pytest.fixture(scope="module")
def lm_out():
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=101, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                      num_attention_heads=1, head_dim=64)
    model = AutoModelForCausalLM.from_config(cfg)
    ids = torch.randint(3, 101, (8, 20))
    labels = ids.clone()
    labels[:, 0] = -100
    labels[:5, 15:] = -100  # right padding
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels)
    return out, labels


def test_off_is_bit_identical_to_hf_loss(lm_out):
    out, labels = lm_out
    assert torch.equal(next_token_loss(out.logits, labels), out.loss)


def test_smoothing_is_the_mixture_of_nll_and_uniform_cross_entropy(lm_out):
    out, labels = lm_out
    logp = out.logits[:, :-1].float().log_softmax(-1)
    tgt = labels[:, 1:]
    keep = tgt != -100
    nll = -logp.gather(-1, tgt.clamp(min=0).unsqueeze(-1)).squeeze(-1)[keep]
    uniform = -logp.mean(-1)[keep]
    for eps in (0.1, 0.5):
        expect = ((1 - eps) * nll + eps * uniform).mean()
        assert next_token_loss(out.logits, labels, eps).item() == pytest.approx(expect.item(), rel=1e-5)


@pytest.mark.ray
def test_sft_worker_trains_the_smoothed_loss(ray_session, tmp_path, ml100k_emb):
    """Two one-epoch SFT runs from the same prepared run and seed: only the smoothing differs, and the smoothed
    run's recorded training loss is higher (the uniform term over ~100 tokens is far above the NLL)."""
    import json
    import shutil

    import yaml
    from test_sft_ray import TINY

    from rl_align.config import RunConfig, load_config
    from rl_align.pipeline import run_pipeline

    losses = {}
    prep = None
    for eps in (0.0, 0.3):
        data = json.loads(json.dumps(TINY))
        data["sft"].update(epochs=1, eval_users=30, label_smoothing=eps)
        p = tmp_path / f"c{eps}.yaml"
        p.write_text(yaml.safe_dump(data))
        cfg = load_config(p, RunConfig)
        run = tmp_path / f"run{eps}"
        if prep is None:
            cfg.stages = ["data", "embed", "sids"]
            run_pipeline(cfg, run)
            prep = run
        else:
            shutil.copytree(prep, run)
        cfg.stages = ["data", "embed", "sids", "sft"]
        run_pipeline(cfg, run)
        recs = [json.loads(x) for x in (run / "sft" / "metrics.jsonl").read_text().splitlines()]
        losses[eps] = next(r["train_loss"] for r in recs if "train_loss" in r)
    assert losses[0.3] > losses[0.0] + 0.3, losses
