"""``sid.history: items``: one token per history item, the next item still generated as SID tokens.

The catalog's layout and round trip; prompts with one position per item; the packed training batch, whose every
target must get exactly the log-probs a plain forward pass over its own decoding prompt gives (the equality that
makes one packed pass train what the engines decode); the torch engine decoding such prompts under the trie; and
a real Ray pipeline run (data → sids → sft → eval) on ML-100K."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from rl_align.config import ConfigError, PolicyConfig
from rl_align.policy.data import build_prompts, item_history_batch, windows_to_batch
from rl_align.policy.model import attention_mask_for, build_policy, token_loss
from rl_align.sid import BOS, EOS, PAD, SidCatalog
from rl_align.sid.codes import SidCodes
from rl_align.sid.user_tokens import UserTokens

FEATURES = {"gender": ["M", "F"] * 16}


def _catalog(history_items=True, users=None, n=12):
    """n items with 3-level codes (sizes 2, 3, 4), collision-free."""
    grid = np.array([[a, b, c] for a in range(2) for b in range(3) for c in range(4)], np.int32)[:n]
    return SidCatalog([f"m{i}" for i in range(n)], SidCodes(grid, np.full(n, 3, np.int32), [2, 3, 4]),
                      user_tokens=users, history_items=history_items)


def test_the_layout_adds_one_history_token_per_item_that_never_decodes_and_round_trips(tmp_path):
    plain, cat = _catalog(False), _catalog(True)
    assert cat.vocab_size == plain.vocab_size + 12 and cat.layout.history_offset == plain.vocab_size
    assert cat.layout.user_offset == plain.vocab_size and cat.fingerprint() != plain.fingerprint()
    toks = torch.from_numpy(cat.history_tokens(np.arange(12)))
    assert (cat.layout.level_of(toks) == -1).all() and not cat.layout.is_code(toks).any()
    names = cat.layout.token_names()
    assert len(names) == cat.vocab_size and names[int(toks[7])] == "<i_7>"
    for pre in (torch.zeros((1, 0), dtype=torch.long), torch.from_numpy(cat.tokens[:, :1]),
                torch.from_numpy(cat.tokens[:, :2]), torch.from_numpy(cat.tokens[:, :3])):
        assert not cat.trie.allowed_next(pre)[:, cat.layout.history_offset:].any()
    cat.save(tmp_path / "c")
    back = SidCatalog.load(tmp_path / "c")
    assert back.history_items and back.fingerprint() == cat.fingerprint() and back.vocab_size == cat.vocab_size
    with pytest.raises(ValueError, match="no history tokens"):
        plain.history_tokens(np.arange(3))
    # with user tokens: codes, then user tokens, then history tokens
    ut = _catalog(True, UserTokens.fit(["gender"], FEATURES, 32))
    assert ut.layout.user_offset == plain.vocab_size and ut.layout.history_offset == plain.vocab_size + 4


def test_prompts_hold_one_left_padded_token_per_item_after_bos_and_user_tokens():
    cat = _catalog(True, UserTokens.fit(["gender"], FEATURES, 32))
    users = np.array([0, 1])
    ids, mask = build_prompts(np.array([[-1, -1, 4], [3, 9, 0]]), cat, users)
    off, pre = cat.layout.history_offset, cat.prefix_tokens(users)
    assert ids.shape == (2, 5) and mask.tolist() == [[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]]
    assert ids[0].tolist() == [PAD, PAD, BOS, pre[0, 0], off + 4]
    assert ids[1].tolist() == [BOS, pre[1, 0], off + 3, off + 9, off + 0]


def _plain_logprobs(model, cat, history, item, user):
    """(len(SID),) log-probs of ``item``'s SID tokens after the decoding prompt of ``history``: one plain causal
    forward over prompt + SID, positions 0.. (what the engines score)."""
    ids, _ = build_prompts(np.array([history if history else [-1]]), cat, None if user is None else np.array([user]))
    sid = torch.tensor(cat.item_tokens(item))
    seq = torch.cat([ids[0], sid])[None]
    logp = F.log_softmax(model(input_ids=seq).logits.float(), -1)[0]
    P = ids.shape[1]
    return logp[P - 1: P - 1 + len(sid)].gather(1, sid[:, None]).squeeze(1)


@pytest.mark.parametrize("arch,with_users", [("llama", False), ("qwen2", True)])
def test_one_packed_pass_gives_every_target_the_log_probs_of_its_own_decoding_prompt(arch, with_users):
    users_tok = UserTokens.fit(["gender"], FEATURES, 32) if with_users else None
    cat = _catalog(True, users_tok)
    model = build_policy(PolicyConfig(arch=arch, hidden_size=64, num_layers=2, num_heads=1,
                                      intermediate_size=128), cat, max_history=8, seed=3).eval()
    windows = np.array([[5, 2, 11, 7, 0], [-1, -1, 3, 8, 1], [6, -1, -1, -1, -1]])
    n_target = np.array([5, 2, 1])
    users = np.array([0, 1, 2]) if with_users else None
    b = item_history_batch(windows, cat, n_target, users)
    assert torch.equal(windows_to_batch(windows, cat, n_target, users)["targets"], b["targets"])
    mask = attention_mask_for(model, b["attention_mask"])
    with torch.no_grad():
        logp = F.log_softmax(model(input_ids=b["input_ids"], attention_mask=mask,
                                   position_ids=b["position_ids"]).logits.float(), -1)
        tgt = b["targets"]
        for r, w in enumerate(windows):
            items = [int(i) for i in w if i >= 0]
            at = torch.nonzero(tgt[r] != -100).ravel()
            got = logp[r, at].gather(1, tgt[r, at][:, None]).squeeze(1)
            js = range(len(items) - n_target[r], len(items))
            per = [_plain_logprobs(model, cat, items[:j], items[j], None if users is None else users[r]) for j in js]
            sids = [cat.item_tokens(items[j]) for j in js]
            # column order: each target's first token sits on its prompt's last shared column, then the blocks
            # hold the rest of each SID (<eos> included) in target order; each log-prob that of its own prompt
            assert tgt[r, at].tolist() == [s[0] for s in sids] + sum((s[1:] for s in sids), [])
            want = torch.cat([torch.stack([p[0] for p in per])] + [p[1:] for p in per])
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        # the loss is the mean NLL of those tokens; context items (row 1's first, row 2 has none) are no target
        loss = token_loss(logp, tgt)
        assert torch.isclose(loss, -logp.gather(2, tgt.clamp(min=0)[..., None]).squeeze(2)[tgt != -100].mean())
    assert (tgt[1] != -100).sum() == 2 * 4 and (tgt[2] != -100).sum() == 4


def test_training_through_the_packed_batch_moves_decoding_toward_the_targets():
    """Steps on one packed window raise the torch engine's trie-constrained beam score of its last target."""
    from rl_align.rollouts.base import GenerationRequest
    from rl_align.rollouts.torch_engine import TorchEngine

    cat = _catalog(True)
    torch.manual_seed(0)
    model = build_policy(PolicyConfig(hidden_size=64, num_layers=1, num_heads=1, intermediate_size=128), cat, 8)
    w = np.array([[1, 4, 9, 2]])
    b = item_history_batch(w, cat)
    with torch.no_grad():
        before = _plain_logprobs(model.eval(), cat, [1, 4, 9], 2, None).sum()
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        loss = token_loss(model(input_ids=b["input_ids"], attention_mask=attention_mask_for(model, b["attention_mask"]),
                                position_ids=b["position_ids"]).logits, b["targets"])
        opt.zero_grad()
        loss.backward()
        opt.step()
    eng = TorchEngine(model, cat)
    ids, mask = build_prompts(np.array([[1, 4, 9]]), cat)
    out = eng.generate(GenerationRequest(ids, mask, n=3, mode="beam"))
    # the engine's score of the target is the packed pass's, and it rose from about chance to the top beams
    k = out.items[0].tolist().index(2)
    after = _plain_logprobs(model, cat, [1, 4, 9], 2, None).sum()
    assert torch.isclose(out.seq_logprob[0, k], after, atol=1e-4) and after > before + 2
    assert (out.sequences[0, :, :4] < cat.layout.history_offset).all() and (out.sequences[0, :, 3] == EOS).all()


@pytest.mark.parametrize("extra,msg", [
    ({"sft": {"distill_from": "baseline:sasrec", "distill_weight": 1.0},
      "stages": ["data", "embed", "sids", "baselines", "sft"], "baseline": {"models": ["sasrec"]}},
     "sft.distill_from: needs sid.history: codes"),
    ({"sid": {"history": "ids"}}, "sid.history"),
    ({"policy": {"history_input": "id_codes"}}, "policy.history_input: 'id_codes' needs tie_embeddings: false"),
    ({"sid": {"history": "codes"}, "policy": {"history_input": "id_codes", "tie_embeddings": False}},
     "policy.history_input: 'id_codes' composes history tokens: needs sid.history: items"),
    ({"policy": {"history_input": "id_vec"}}, "policy.history_input: 'id_vec' needs tie_embeddings: false"),
    ({"sid": {"history": "codes"}, "policy": {"history_input": "id_codes_vec", "tie_embeddings": False}},
     "policy.history_input: 'id_codes_vec' composes history tokens: needs sid.history: items"),
    ({"policy": {"history_input": "id_vec", "tie_embeddings": False, "history_gate": "level"}},
     "policy.history_gate: 'level' gates code rows: needs history_input id_codes or id_codes_vec"),
    ({"policy": {"history_input": "sum"}}, "policy.history_input"),
    ({"policy": {"history_id_dropout": 0.2}},
     "policy.history_id_dropout: drops ID rows and keeps content: needs history_input other than 'id'"),
    ({"policy": {"history_input": "id_codes", "tie_embeddings": False, "history_id_dropout": 1.0}},
     "policy.history_id_dropout"),
])
def test_bad_history_settings_fail_at_load(tmp_path, extra, msg):
    from rl_align.checks import load_checked

    cfg = {"sid": {"history": "items"}}
    for k, v in extra.items():
        cfg[k] = {**cfg.get(k, {}), **v} if isinstance(v, dict) else v
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError, match=rf"c.yaml: {msg}"):
        load_checked(tmp_path / "c.yaml")


def test_item_token_init_writes_the_history_tokens(tmp_path):
    from rl_align.policy.model import init_item_token_embeddings

    cat = _catalog(True)
    model = build_policy(PolicyConfig(hidden_size=64, num_layers=1, num_heads=1, intermediate_size=128), cat, 8)
    table = torch.randn(12, 16, generator=torch.Generator().manual_seed(0))
    info = init_item_token_embeddings(model, cat, table)
    emb = model.get_input_embeddings().weight.detach()[torch.from_numpy(cat.history_tokens(np.arange(12)))]
    t = table.double() - table.double().mean(0)
    torch.testing.assert_close((emb.double() @ emb.double().T) / info["scale"] ** 2, t @ t.T, atol=1e-4, rtol=1e-4)
    assert info["token_sets"] == 1


@pytest.mark.ray
def test_a_run_with_item_history_trains_and_evaluates(ml100k_emb, ray_session, tmp_path):
    """data → embed → sids → sft → eval on ML-100K with ``sid.history: items``: the policy's vocabulary holds the
    history tokens, its SFT loss falls every epoch, it ranks well above chance and the evaluation exports full
    lists."""
    from rl_align.config import RunConfig, load_config
    from rl_align.pipeline import run_pipeline
    from rl_align.policy.model import load_policy
    from rl_align.utils.io import read_json

    cfg_d = {"name": "hist", "wandb": False, "stages": ["data", "embed", "sids", "sft", "eval"],
             "sid": {"codebook_size": 32, "collision": "reassign", "history": "items"},
             "policy": {"hidden_size": 64, "num_layers": 1, "num_heads": 1, "intermediate_size": 128},
             "sft": {"epochs": 3, "batch_size": 64, "eval_users": 200, "cpus_per_worker": 2, "lr": 0.003, "eval_every": 1},
             "eval": {"beams": 10, "batch_size": 256}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg_d))
    run = tmp_path / "run"
    run_pipeline(load_config(tmp_path / "c.yaml", RunConfig), run)
    cat = SidCatalog.load(run / "sids" / "catalog")
    assert cat.history_items and cat.vocab_size == cat.layout.history_offset + cat.n_items
    model = load_policy(run / "sft" / "best_policy", cat)
    assert model.get_input_embeddings().weight.shape[0] == cat.vocab_size
    log = [json.loads(x) for x in (run / "sft" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train_loss"] for r in log if "train_loss" in r]
    assert len(losses) == 3 and losses[0] > losses[1] > losses[2]
    m = read_json(run / "eval" / "metrics.json")
    # 3 epochs of a 1-layer policy: far from converged (0.04 here), but 3× a random ranking's 10 / 1682
    assert m["test"]["policy"]["hr@10"] > 3 * 10 / cat.n_items
    assert len((run / "eval" / "predictions_test.jsonl").read_text().splitlines()) == 943


@pytest.mark.ray
@pytest.mark.parametrize("history_input", ["id", "id_codes", "id_codes_vec"])
def test_a_run_with_the_history_tied_item_head(ml100k_emb, ray_session, tmp_path, history_input):
    """The same pipeline with ``policy.item_head: history`` (the head's item vectors are the history tokens' input
    embeddings): SFT trains the packed batch with the head, the saved head is the best policy's embedding rows, and
    evaluation fuses it with the beam and reports the head's own ranking beside. With ``history_input: id_codes``
    (``id_codes_vec``) the saved rows are the composed ones (each item's row plus its codes' rows, plus a projection
    of its vector), folded into a plain checkpoint."""
    from safetensors.torch import load_file

    from rl_align.config import RunConfig, load_config
    from rl_align.pipeline import run_pipeline
    from rl_align.policy.item_head import FILE
    from rl_align.utils.io import read_json

    cfg_d = {"name": "hist-head", "wandb": False, "stages": ["data", "embed", "sids", "sft", "eval"],
             "sid": {"codebook_size": 32, "collision": "reassign", "history": "items"},
             "policy": {"hidden_size": 64, "num_layers": 1, "num_heads": 1, "intermediate_size": 128,
                        "item_head": "history", "tie_embeddings": False, "history_input": history_input},
             "sft": {"epochs": 2, "batch_size": 64, "eval_users": 200, "cpus_per_worker": 2, "lr": 0.003,
                     "eval_every": 1},
             "eval": {"beams": 10, "batch_size": 256, "item_head_union": 10, "item_head_betas": [1.0]}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg_d))
    run = tmp_path / "run"
    run_pipeline(load_config(tmp_path / "c.yaml", RunConfig), run)
    cat = SidCatalog.load(run / "sids" / "catalog")
    best = run / "sft" / "best_policy"
    emb = load_file(str(best / "model.safetensors"))["model.embed_tokens.weight"]
    head = load_file(str(best / FILE))
    assert "code_emb.weight" not in head and set(head) == {"items.weight", "proj.weight"}
    off = cat.layout.history_offset
    assert torch.equal(head["items.weight"], emb[off: off + cat.n_items].float())
    log = [json.loads(x) for x in (run / "sft" / "metrics.jsonl").read_text().splitlines()]
    gates = [r["history_gate_abs"] for r in log if "train_loss" in r and "history_gate_abs" in r]
    assert len(gates) == (0 if history_input == "id" else 2) and all(g > 0 for g in gates)  # content taken
    projs = [r["history_proj_rms"] for r in log if "train_loss" in r and "history_proj_rms" in r]
    assert len(projs) == (2 if history_input.endswith("_vec") else 0) and all(p > 0 for p in projs)
    m = read_json(run / "eval" / "metrics.json")
    assert {"policy", "policy_beam", "item_head_only"} <= set(m["test"])
    assert m["test"]["item_head_only"]["hr@10"] > 3 * 10 / cat.n_items
    assert len((run / "eval" / "predictions_test.jsonl").read_text().splitlines()) == 943
