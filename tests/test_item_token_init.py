"""Item-token embeddings initialised from an item-ID model (``sft.item_token_init``): the mapping keeps the items'
geometry and the random initialisation's scale, touches nothing else, and the pipeline feeds it a baseline's table."""

import numpy as np
import pytest
import torch
import yaml

from rl_align.config import ConfigError, PolicyConfig, RunConfig, SidConfig, load_config
from rl_align.policy.model import build_policy, init_item_token_embeddings, item_token_ids
from rl_align.sid import SidCatalog, build_tokenizer, resolve_collisions


@pytest.fixture(scope="module")
def item_catalog():
    from rl_align.data.synthetic import synthetic_embeddings

    x, _ = synthetic_embeddings(300, 16, 10, 0.8, seed=2)
    tok = build_tokenizer(SidConfig(levels=2, codebook_size=8))
    codes, _ = resolve_collisions(tok.fit_encode(x), "item_token", tok, x)
    return SidCatalog([str(i) for i in range(300)], codes)


def _gram(v: torch.Tensor) -> torch.Tensor:
    v = v.double() - v.double().mean(0)
    return v @ v.T


@pytest.mark.parametrize("d", [16, 200])  # narrower than the policy (isometry) and wider (principal directions)
def test_item_vectors_land_on_the_item_tokens_with_their_geometry(item_catalog, d):
    cat = item_catalog
    model = build_policy(PolicyConfig(hidden_size=64, num_layers=1, num_heads=1, intermediate_size=64), cat, 5)
    emb = model.get_input_embeddings().weight
    before = emb.detach().clone()
    ids = item_token_ids(cat)
    assert ids.tolist() == [cat.item_tokens(i)[-2] for i in range(cat.n_items)]
    g = torch.Generator().manual_seed(0)
    vec = torch.randn(cat.n_items, min(d, 12), generator=g) @ torch.randn(min(d, 12), d, generator=g) + 3.0
    info = init_item_token_embeddings(model, cat, vec, seed=1)
    after = emb.detach()
    others = torch.ones(emb.shape[0], dtype=torch.bool)
    others[ids] = False
    assert torch.equal(after[others], before[others])  # SID codes and specials keep their random init
    assert float(after[ids].std()) == pytest.approx(float(before[ids].std()), rel=1e-4)
    # dot products between centred items are kept up to one scale (rank ≤ 12 < 64, so nothing is lost)
    assert torch.allclose(_gram(after[ids]), info["scale"] ** 2 * _gram(vec), rtol=1e-3, atol=1e-6)
    assert model.get_output_embeddings().weight.data_ptr() == emb.data_ptr()  # tied: the head starts there too


def test_item_token_init_needs_an_item_level_and_one_row_per_item(item_catalog):
    from rl_align.data.synthetic import synthetic_embeddings

    x, _ = synthetic_embeddings(300, 16, 10, 0.8, seed=2)
    tok = build_tokenizer(SidConfig(levels=3, codebook_size=16))
    codes, _ = resolve_collisions(tok.fit_encode(x), "append", tok, x)
    plain = SidCatalog([str(i) for i in range(300)], codes)
    pcfg = PolicyConfig(hidden_size=64, num_layers=1, num_heads=1, intermediate_size=64)
    with pytest.raises(ValueError, match="no item-ID tokens"):
        init_item_token_embeddings(build_policy(pcfg, plain, 5), plain, torch.zeros(300, 8))
    with pytest.raises(ValueError, match="expected 300 item vectors"):
        init_item_token_embeddings(build_policy(pcfg, item_catalog, 5), item_catalog, torch.zeros(299, 8))


@pytest.mark.parametrize("sets, msg", [
    ({"sft": {"item_token_init": "baseline:sasrec"}}, "needs item-ID tokens to initialise: sid.collision: item_token or sid.history: items"),
    ({"sid": {"collision": "item_token"}, "sft": {"item_token_init": "baseline:bert4rec"}}, "unknown baseline model"),
    ({"sid": {"collision": "item_token"}, "sft": {"item_token_init": "nowhere/items.npy"}}, "an existing .npy"),
    ({"sid": {"collision": "item_token"}, "sft": {"item_token_init": "baseline:sasrec"},
      "baseline": {"models": ["sasrec"]}, "stages": ["data", "embed", "sids", "sft", "baselines"]},
     "needs the baselines stage before sft"),
])
def test_bad_item_token_init_fails_at_load(tmp_path, sets, msg):
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(sets))
    from rl_align.checks import load_checked

    with pytest.raises(ConfigError, match=rf"c.yaml: sft.item_token_init: .*{msg}"):
        load_checked(p)


@pytest.mark.ray
def test_sft_starts_from_the_runs_sasrec_item_table(ml100k_emb, ray_session, tmp_path):
    """baselines (SASRec) → sft with ``baseline:sasrec``: the workers get exactly SASRec's item table and start
    from it (at a learning rate too small to move them, the saved policy's item tokens keep SASRec's geometry)."""
    from rl_align.baselines.train import load_baseline
    from rl_align.pipeline import run_pipeline

    cfg_d = {"name": "itok", "wandb": False, "stages": ["data", "embed", "sids", "baselines", "sft"],
             "sid": {"codebook_size": 32, "collision": "item_token"},
             "baseline": {"models": ["sasrec"], "epochs": 2, "eval_every": 1},
             "policy": {"hidden_size": 64, "num_layers": 1, "num_heads": 1, "intermediate_size": 128},
             "sft": {"epochs": 1, "batch_size": 64, "lr": 1e-7, "warmup_steps": 5, "eval_users": 50, "cpus_per_worker": 2,
                     "item_token_init": "baseline:sasrec"},
             "eval": {"beams": 10, "batch_size": 256}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg_d))
    run = tmp_path / "run"
    run_pipeline(load_config(tmp_path / "c.yaml", RunConfig), run)
    table = load_baseline(run / "baselines" / "sasrec").item_emb.weight[1:].detach().numpy()
    sent = np.load(run / "sft" / "item_token_init.npy", allow_pickle=False)
    assert sent.shape == (1682, 64) and np.array_equal(sent, table)
    from rl_align.policy.model import load_policy

    cat = SidCatalog.load(run / "sids" / "catalog")
    emb = load_policy(run / "sft" / "best_policy", cat).get_input_embeddings().weight.detach()
    got, want = _gram(emb[item_token_ids(cat)]), _gram(torch.from_numpy(table))
    assert torch.allclose(got / got.diagonal().mean(), want / want.diagonal().mean(), atol=1e-3)
