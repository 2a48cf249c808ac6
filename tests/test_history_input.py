"""policy.history_input: id_codes / id_codes_own / id_vec / id_codes_vec — a history token embeds as its ID row plus
its item's SID code rows (the policy's own, or a table of their own) and/or a projection of its item's vector, and
the saved policy (composed rows folded in) is a plain HF model that scores exactly as the composed one. The config
refusals sit with the other history settings' in tests/test_history_items.py."""

import numpy as np
import pytest
import torch
from test_history_items import _catalog

from rl_align.config import PolicyConfig
from rl_align.policy.data import build_prompts
from rl_align.policy.history_input import attach_history_codes, gate_index_for, history_codes_of, item_code_tokens
from rl_align.policy.item_head import attach_item_head, load_item_head
from rl_align.policy.model import build_policy, load_policy, save_policy

PCFG = PolicyConfig(hidden_size=64, num_layers=1, num_heads=1, intermediate_size=128, tie_embeddings=False)


def _model(cat, seed=0):
    model = build_policy(PCFG, cat, 8, seed=seed)
    with torch.no_grad():  # rows of unit scale, so a missing or doubled code row shows
        model.get_input_embeddings().weight.normal_(0, 1.0, generator=torch.Generator().manual_seed(seed + 1))
    return model


def test_a_history_token_embeds_as_its_row_plus_its_codes_rows_and_other_tokens_do_not_change():
    cat = _catalog(True)
    model = _model(cat)
    emb = model.get_input_embeddings()
    raw = emb.weight.detach().clone()
    hc = attach_history_codes(model, cat, "id_codes")
    assert history_codes_of(model) is hc and attach_history_codes(_model(cat), cat, "id") is None
    codes, mask = item_code_tokens(cat)
    assert mask.sum(1).tolist() == [3] * cat.n_items  # three levels each, <eos> is no code
    off = cat.layout.history_offset
    ids = torch.tensor([[0, 1, off + 5, int(cat.tokens[5, 0]), off + 11]])
    torch.testing.assert_close(emb(ids)[0], raw[ids[0]])  # the gate starts at 0: the ID-only model
    emb(ids)[0, 2].sum().backward()
    assert hc.gate.grad.abs().sum() > 0 and emb.weight.grad[int(cat.tokens[5, 0])].abs().sum() == 0
    emb.weight.grad = None
    gate = torch.rand(64, generator=torch.Generator().manual_seed(5)) + 0.5
    with torch.no_grad():
        hc.gate.copy_(gate)
    out = emb(ids)
    for p, item in ((2, 5), (4, 11)):  # item 5's codes are (0, 1, 1): tokens at the three level offsets
        want = raw[off + item] + gate * sum(raw[int(t)] for t in cat.tokens[item][:3])
        torch.testing.assert_close(out[0, p], want)
    for p in (0, 1, 3):
        torch.testing.assert_close(out[0, p], raw[int(ids[0, p])])
    out[0, 2].sum().backward()  # the content's gradient reaches the code rows shared with other items
    g = emb.weight.grad
    assert all(g[int(t)].abs().sum() > 0 for t in cat.tokens[5][:3]) and g[off + 5].abs().sum() > 0
    assert g[off + 4].abs().sum() == 0


def test_the_saved_policy_is_plain_and_scores_as_the_composed_one_with_its_tied_head(tmp_path):
    cat = _catalog(True)
    model = _model(cat, seed=2)
    attach_history_codes(model, cat, "id_codes")
    head = attach_item_head(model, cat, "history")
    hc = history_codes_of(model)
    with torch.no_grad():
        hc.gate.uniform_(0.5, 1.5, generator=torch.Generator().manual_seed(3))
    assert "rl_align_history_codes.gate" in model.state_dict()  # in training checkpoints, not in the saved policy
    torch.testing.assert_close(head.item_vectors(), hc.rows(model.get_input_embeddings().weight))
    raw = model.get_input_embeddings().weight.detach().clone()
    save_policy(model, tmp_path / "p", cat)
    torch.testing.assert_close(model.get_input_embeddings().weight, raw)  # saving leaves the live model raw
    back = load_policy(tmp_path / "p", cat)
    assert history_codes_of(back) is None
    from safetensors.torch import load_file
    assert not any(k.startswith("rl_align_") for k in load_file(str(tmp_path / "p" / "model.safetensors")))
    ids, mask = build_prompts(np.array([[-1, 3, 9, 0], [5, 2, 11, 7]]), cat, None)
    seq = torch.cat([ids, torch.from_numpy(cat.tokens[[4, 6], :2])], 1)
    model.eval()
    with torch.no_grad():
        want = model(input_ids=seq, attention_mask=torch.cat([mask, torch.ones(2, 2, dtype=mask.dtype)], 1))
        got = back(input_ids=seq, attention_mask=torch.cat([mask, torch.ones(2, 2, dtype=mask.dtype)], 1))
    torch.testing.assert_close(got.logits, want.logits, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(back.get_input_embeddings().weight, raw)  # the history rows were folded
    h = torch.randn(3, 64)
    with torch.no_grad():
        torch.testing.assert_close(load_item_head(tmp_path / "p", cat, 64)(h), head(h))


def test_the_composition_is_refused_where_it_cannot_hold():
    with pytest.raises(ValueError, match="needs sid.history: items"):
        attach_history_codes(_model(_catalog(False)), _catalog(False), "id_codes")
    tied = build_policy(PolicyConfig(hidden_size=64, num_layers=1, num_heads=1, intermediate_size=128),
                        _catalog(True), 8)
    with pytest.raises(ValueError, match="tie_embeddings: false"):
        attach_history_codes(tied, _catalog(True), "id_codes")
    with pytest.raises(ValueError, match="expected one of"):
        attach_history_codes(_model(_catalog(True)), _catalog(True), "codes")
    for vectors in (None, np.zeros((3, 4), np.float32)):  # the vector kinds need one vector per catalog item
        with pytest.raises(ValueError, match=r"needs \(\d+, d\) item vectors"):
            attach_history_codes(_model(_catalog(True)), _catalog(True), "id_vec", vectors)


def _vectors(cat, d=16, seed=7):
    return np.random.default_rng(seed).standard_normal((cat.n_items, d)).astype(np.float32)


@pytest.mark.parametrize("kind", ["id_vec", "id_codes_vec"])
def test_a_history_token_adds_a_projection_of_its_items_vector(kind):
    cat = _catalog(True)
    model = _model(cat)
    emb = model.get_input_embeddings()
    raw = emb.weight.detach().clone()
    vec = _vectors(cat)
    hc = attach_history_codes(model, cat, kind, vec)
    assert hc.reads_codes == (kind == "id_codes_vec") and hc.proj.weight.shape == (64, 16)
    off = cat.layout.history_offset
    ids = torch.tensor([[0, off + 5, int(cat.tokens[5, 0]), off + 11]])
    torch.testing.assert_close(emb(ids)[0], raw[ids[0]])  # the projection (and the gate) start at 0
    emb(ids)[0, 1].sum().backward()
    assert hc.proj.weight.grad.abs().sum() > 0  # …and learn from the first step
    w = torch.randn(64, 16, generator=torch.Generator().manual_seed(4))
    gate = torch.full((64,), 0.5)
    with torch.no_grad():
        hc.proj.weight.copy_(w)
        if hc.reads_codes:
            hc.gate.copy_(gate)
    out = emb(ids)[0]
    for p, item in ((1, 5), (3, 11)):
        want = raw[off + item] + w @ torch.from_numpy(vec[item])
        if hc.reads_codes:
            want = want + gate * sum(raw[int(t)] for t in cat.tokens[item][:3])
        torch.testing.assert_close(out[p], want)
    torch.testing.assert_close(out[[0, 2]], raw[ids[0, [0, 2]]])  # other tokens keep their rows
    assert set(hc.gate_abs()) == ({"history_gate_abs", "history_proj_rms"} if hc.reads_codes
                                  else {"history_proj_rms"})


def test_the_saved_policy_with_item_vectors_folds_them_in(tmp_path):
    cat = _catalog(True)
    model = _model(cat, seed=3)
    hc = attach_history_codes(model, cat, "id_codes_vec", _vectors(cat))
    head = attach_item_head(model, cat, "history")
    with torch.no_grad():
        hc.proj.weight.normal_(0, 0.5, generator=torch.Generator().manual_seed(9))
        hc.gate.fill_(0.7)
    save_policy(model, tmp_path / "p", cat)
    back = load_policy(tmp_path / "p", cat)
    off = cat.layout.history_offset
    torch.testing.assert_close(back.get_input_embeddings().weight[off: off + cat.n_items],
                               hc.rows(model.get_input_embeddings().weight).detach())
    h = torch.randn(3, 64)
    with torch.no_grad():
        torch.testing.assert_close(load_item_head(tmp_path / "p", cat, 64)(h), head(h))


def test_an_own_code_table_starts_at_zero_and_leaves_the_sid_tokens_rows_alone(tmp_path):
    cat = _catalog(True)
    model = _model(cat, seed=4)
    emb = model.get_input_embeddings()
    raw = emb.weight.detach().clone()
    hc = attach_history_codes(model, cat, "id_codes_own")
    assert hc.gate is None and not any(k.endswith(".gate") for k in model.state_dict())  # the table replaces it
    off = cat.layout.history_offset
    ids = torch.tensor([[off + 5, int(cat.tokens[5, 0]), off + 11]])
    torch.testing.assert_close(emb(ids)[0], raw[ids[0]])  # zero at the start: the ID-only model
    emb(ids)[0, 0].sum().backward()
    assert all(hc.table.grad[int(t)].abs().sum() > 0 for t in cat.tokens[5][:3])
    assert all(emb.weight.grad[int(t)].abs().sum() == 0 for t in cat.tokens[5][:3])  # SID rows untouched
    with torch.no_grad():
        hc.table.normal_(0, 1.0, generator=torch.Generator().manual_seed(6))
    out = emb(ids)[0]
    torch.testing.assert_close(out[2], raw[off + 11] + sum(hc.table[int(t)] for t in cat.tokens[11][:3]))
    torch.testing.assert_close(out[1], raw[int(cat.tokens[5, 0])])
    assert set(hc.gate_abs()) == {"history_table_rms"}
    head = attach_item_head(model, cat, "history")
    save_policy(model, tmp_path / "p", cat)
    h = torch.randn(3, 64)
    with torch.no_grad():
        torch.testing.assert_close(load_item_head(tmp_path / "p", cat, 64)(h), head(h))


@pytest.mark.parametrize("gate", ["level", "popularity"])
def test_a_gate_per_code_level_or_popularity_bucket_scales_each_code_row_by_its_own_row(gate):
    cat = _catalog(True)
    counts = np.arange(cat.n_items)[::-1].copy()  # item 0 most frequent
    model = _model(cat, seed=5)
    emb = model.get_input_embeddings()
    raw = emb.weight.detach().clone()
    hc = attach_history_codes(model, cat, "id_codes", gate=gate, counts=counts)
    assert hc.gate.shape == ((cat.tokens.shape[1] if gate == "level" else 5), 64)  # a row per token column
    off = cat.layout.history_offset
    ids = torch.tensor([[off, off + 11, int(cat.tokens[5, 0])]])
    torch.testing.assert_close(emb(ids)[0], raw[ids[0]])  # zero at the start
    with torch.no_grad():
        hc.gate.copy_(torch.rand(hc.gate.shape, generator=torch.Generator().manual_seed(2)) + 0.5)
    out = emb(ids)[0]
    for p, item in ((0, 0), (1, 11)):
        rows = [raw[int(t)] for t in cat.tokens[item][:3]]
        if gate == "level":
            want = raw[off + item] + sum(hc.gate[lv] * r for lv, r in enumerate(rows))
        else:  # the most frequent fifth of the items is the last bucket
            b = (cat.n_items - 1 - item) * 5 // cat.n_items
            want = raw[off + item] + hc.gate[b] * sum(rows)
        torch.testing.assert_close(out[p], want.detach())
    torch.testing.assert_close(out[2], raw[ids[0, 2]])


def test_gate_rows_are_checked():
    mask = torch.ones(10, 3, dtype=torch.bool)
    assert gate_index_for("shared", mask) is None
    assert gate_index_for("popularity", mask, np.arange(10)).tolist()[9] == [4, 4, 4]
    with pytest.raises(ValueError, match="'popularity' needs"):
        gate_index_for("popularity", mask)
    with pytest.raises(ValueError, match="expected one of"):
        gate_index_for("per_item", mask)
    cat = _catalog(True)
    with pytest.raises(ValueError, match="'level' gates code rows"):  # not silently ignored by ungated kinds
        attach_history_codes(_model(cat), cat, "id_codes_own", gate="level")


def test_id_dropout_zeroes_only_history_id_rows_in_training_and_never_the_heads_vectors():
    cat = _catalog(True)
    model = _model(cat, seed=4)
    hc = attach_history_codes(model, cat, "id_codes", id_dropout=0.5)
    head = attach_item_head(model, cat, "history")
    emb = model.get_input_embeddings()
    raw = emb.weight.detach().clone()
    with torch.no_grad():
        hc.gate.fill_(1.0)
    off = cat.layout.history_offset
    items = torch.arange(cat.n_items).repeat(40)
    ids = torch.cat([items + off, torch.tensor([0, 1, int(cat.tokens[5, 0])])]).unsqueeze(0)
    content = hc.content(raw, items)
    model.train()
    torch.manual_seed(0)
    out = emb(ids)[0]
    hist = out[: len(items)]
    kept = torch.isclose(hist, raw[items + off] + content, atol=1e-5).all(1)
    dropped = torch.isclose(hist, content, atol=1e-5).all(1)
    assert bool((kept ^ dropped).all())  # each history token is whole or content alone
    assert 0.35 < float(dropped.float().mean()) < 0.65
    torch.testing.assert_close(out[len(items):], raw[ids[0, len(items):]])  # other tokens untouched
    torch.testing.assert_close(head.item_vectors(), hc.rows(emb.weight))  # the head's table is never dropped
    model.eval()
    torch.testing.assert_close(emb(ids)[0, : len(items)], raw[items + off] + content)
    with pytest.raises(ValueError, match=r"must be in \[0, 1\)"):
        attach_history_codes(_model(cat), cat, "id_codes", id_dropout=1.0)
