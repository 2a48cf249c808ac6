"""User side features as prompt tokens (``sid.user_tokens``): the encoding, the catalog's layout and round trip,
where the tokens sit in prompts and training windows (context only, never a label, never decodable), and a real
Ray pipeline run whose SFT and evaluation carry them."""

import numpy as np
import pytest
import torch
import yaml

from rl_align.config import ConfigError
from rl_align.policy.data import build_prompts, events_to_users, windows_to_batch
from rl_align.sft.distill import soft_token_targets
from rl_align.sid import BOS, PAD, SidCatalog
from rl_align.sid.codes import SidCodes
from rl_align.sid.user_tokens import UNKNOWN, UserTokens

FEATURES = {"age": [20, 35, 50, 23, 61, 44, 30, 19] * 4, "gender": ["M", "F"] * 16,
            "occupation": ["writer", "student", "none"] * 10 + ["rare", None],
            "zip_code": [f"{i:05d}" for i in range(32)]}


def _catalog(users=None):
    """4 items, codes (level sizes 2, 2): 0=(0,0) 1=(0,1) 2=(1,0) 3=(1,1)."""
    codes = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.int32)
    return SidCatalog([str(i) for i in range(4)], SidCodes(codes, np.full(4, 2, np.int32), [2, 2]), user_tokens=users)


def test_features_become_one_value_id_each_and_text_like_fields_are_refused():
    ut = UserTokens.fit(["gender", "occupation", "age", "user_id"], FEATURES, 32)
    assert ut.table.shape == (32, 4) and ut.n_features == 4
    # gender: values F, M (ids 2, 3) after padding and unknown; occupation: a value seen once or missing is unknown
    assert ut.sizes[0] == 4 and ut.table[0, 0] == 3 and ut.table[1, 0] == 2
    assert ut.table[30, 1] == UNKNOWN and ut.table[31, 1] == UNKNOWN and ut.table[0, 1] != UNKNOWN
    ages = np.array(FEATURES["age"])
    bins = ut.table[:, 2]
    assert np.all(np.diff(bins[np.argsort(ages, kind="stable")]) >= 0) and len(set(bins)) > 2  # ordered bins
    assert np.array_equal(ut.table[:, 3], np.arange(32) + 2) and ut.sizes[3] == 34
    assert np.array_equal(ut.value_ids(np.array([-1, 40, 5])), np.r_[[[UNKNOWN] * 4], [[UNKNOWN] * 4], ut.table[5:6]])
    with pytest.raises(ValueError, match="sid.user_tokens: 'zip_code' is text-like"):
        UserTokens.fit(["zip_code"], FEATURES, 32)
    with pytest.raises(ValueError, match=r"sid.user_tokens: 'height' is not a user feature .*available"):
        UserTokens.fit(["height"], FEATURES, 32)


def test_the_catalog_puts_user_tokens_after_the_codes_round_trips_and_never_decodes_them(tmp_path):
    ut = UserTokens.fit(["gender", "user_id"], FEATURES, 32)
    plain, cat = _catalog(), _catalog(ut)
    assert cat.vocab_size == plain.vocab_size + 4 + 34 and cat.layout.user_offset == plain.vocab_size
    assert cat.fingerprint() != plain.fingerprint() and cat.n_prefix == 2 and plain.n_prefix == 0
    assert plain.prefix_tokens(None) is None and plain.layout.user_offset == plain.vocab_size
    toks = cat.prefix_tokens(np.array([0, -1]))
    assert np.array_equal(toks, [[plain.vocab_size + 3, plain.vocab_size + 4 + 2],
                                 [plain.vocab_size + UNKNOWN, plain.vocab_size + 4 + UNKNOWN]])
    assert torch.equal(cat.layout.level_of(torch.from_numpy(toks)), torch.full((2, 2), -1))
    names = cat.layout.token_names(cat.user_tokens)
    assert len(names) == cat.vocab_size and names[toks[0, 0]] == "<u.gender_3>"
    cat.save(tmp_path / "c")
    back = SidCatalog.load(tmp_path / "c")
    assert back.fingerprint() == cat.fingerprint() and np.array_equal(back.user_tokens.table, ut.table)
    # the trie allows no user token anywhere: decoding is unchanged
    every_prefix = torch.tensor([[0, 0]]).new_zeros((1, 0)), torch.from_numpy(cat.tokens[:, :1]), \
        torch.from_numpy(cat.tokens[:, :2])
    for pre in every_prefix:
        allowed = cat.trie.allowed_next(pre)
        assert allowed.shape[1] == cat.vocab_size and allowed.any(1).all()
        assert not allowed[:, cat.layout.user_offset:].any()
    with pytest.raises(ValueError, match="pass the users"):
        build_prompts(np.array([[0, 1]]), cat)


def test_prompts_and_windows_carry_the_users_tokens_as_context_only():
    ut = UserTokens.fit(["gender", "occupation"], FEATURES, 32)
    cat = _catalog(ut)
    users = np.array([0, 1])
    pre = cat.prefix_tokens(users)
    ids, mask = build_prompts(np.array([[-1, 2], [1, 3]]), cat, users)
    # left padded: <pad>... <bos> <user tokens> items; the prefix directly after <bos>
    for r in range(2):
        row = ids[r][mask[r].bool()].tolist()
        assert row[0] == BOS and row[1:3] == pre[r].tolist()
    assert ids[0, 0].item() == PAD
    windows = np.array([[2, 0, 3], [1, -1, -1]])
    b = windows_to_batch(windows, cat, users=users)
    for r in range(2):
        assert b["input_ids"][r, 0] == BOS and b["input_ids"][r, 1:3].tolist() == pre[r].tolist()
        assert (b["labels"][r, :3] == -100).all()  # <bos> and user tokens are never labels
    # the training window of [h, y] is the decoding prompt of [h] followed by y's tokens
    w = windows_to_batch(np.array([[2, 0]]), cat, users=users[:1])
    p, _ = build_prompts(np.array([[2]]), cat, users[:1])
    assert w["input_ids"][0].tolist() == p[0].tolist() + cat.item_tokens(0)
    # same items, another user: the same labels, different context
    w2 = windows_to_batch(np.array([[2, 0]]), cat, users=users[1:])
    assert torch.equal(w["labels"], w2["labels"]) and not torch.equal(w["input_ids"], w2["input_ids"])


def test_events_map_to_their_users_and_distillation_targets_follow_the_prefix():
    off = np.array([0, 4, 9])
    events = np.array([[-1, 0, 1, 2], [5, 6, 7, -1], [-1, -1, 8, -1]])
    assert events_to_users(events, off).tolist() == [0, 1, 1]
    cat = _catalog(UserTokens.fit(["gender", "user_id"], FEATURES, 32))
    seq = np.array([3, 1, 2, 0])
    ev, n_target = np.array([[0, 1]]), np.array([1])
    teacher = {"items": np.zeros((4, 4), np.int32), "prob": np.zeros((4, 4), np.float32)}
    teacher["items"][1, :2], teacher["prob"][1, :2] = [1, 2], [0.5, 0.5]
    rows, cols, _ = soft_token_targets(ev, n_target, seq, cat, teacher)
    b = windows_to_batch(seq[ev], cat, n_target, users=np.array([0]))
    labelled = torch.nonzero(b["labels"][0] != -100).ravel()
    assert torch.equal(cols, labelled) and (rows == 0).all()  # the soft targets sit on the label positions


@pytest.mark.parametrize("data,value,msg", [
    ({}, ["gender", "gender"], "each feature once"), ({}, [""], "feature names"),
    ({}, ["height"], r"'height' is not a user feature of data.dataset 'ml-100k'; expected some of \['age'"),
    ({"dataset": "synthetic"}, ["age"], "'age' is not a user feature of data.dataset 'synthetic'"),
])
def test_bad_user_token_lists_fail_at_load(tmp_path, data, value, msg):
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"data": data, "sid": {"user_tokens": value}}))
    from rl_align.checks import load_checked

    with pytest.raises(ConfigError, match=rf"c.yaml: sid.user_tokens: .*{msg}"):
        load_checked(tmp_path / "c.yaml")


def test_a_recbole_datasets_user_fields_are_read_from_its_header(tmp_path):
    from rl_align.checks import load_checked

    d = tmp_path / "shop"
    d.mkdir()
    (d / "shop.user").write_text("user_id:token\tsegment:token\tage:float\nu1\tgold\t30\n")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"data": {"dataset": "recbole", "path": str(d)},
                                                     "sid": {"user_tokens": ["segment", "age", "user_id"]}}))
    assert load_checked(tmp_path / "c.yaml").sid.user_tokens == ["segment", "age", "user_id"]
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"data": {"dataset": "recbole", "path": str(d)},
                                                     "sid": {"user_tokens": ["gender"]}}))
    with pytest.raises(ConfigError, match=r"sid.user_tokens: 'gender' is not a user feature .*\['segment', 'age'"):
        load_checked(tmp_path / "c.yaml")


@pytest.mark.ray
def test_a_run_with_user_tokens_trains_and_evaluates_on_them(ml100k_emb, ray_session, tmp_path):
    """data → embed → sids → sft → eval on ML-100K with gender, age and occupation tokens: the catalog holds
    every user's tokens, the policy's vocabulary has them, and the prompts the evaluation decodes carry them."""
    from rl_align.config import RunConfig, load_config
    from rl_align.eval.evaluate import eval_set
    from rl_align.pipeline import run_pipeline
    from rl_align.policy.model import load_policy
    from rl_align.utils.io import load_npz, read_json

    cfg_d = {"name": "ut", "wandb": False, "stages": ["data", "embed", "sids", "sft", "eval"],
             "sid": {"codebook_size": 32, "user_tokens": ["gender", "age", "occupation"]},
             "policy": {"hidden_size": 64, "num_layers": 1, "num_heads": 1, "intermediate_size": 128},
             "sft": {"epochs": 1, "batch_size": 64, "eval_users": 50, "cpus_per_worker": 2},
             "eval": {"beams": 10, "batch_size": 256}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg_d))
    run = tmp_path / "run"
    run_pipeline(load_config(tmp_path / "c.yaml", RunConfig), run)
    cat = SidCatalog.load(run / "sids" / "catalog")
    users = read_json(run / "data" / "users.json")
    assert cat.user_tokens.names == ["gender", "age", "occupation"]
    assert cat.user_tokens.table.shape == (len(users["user_ids"]), 3)
    assert (cat.user_tokens.table > UNKNOWN).mean() > 0.95  # ML-100K has every user's profile
    model = load_policy(run / "sft" / "best_policy", cat)
    assert model.get_input_embeddings().weight.shape[0] == cat.vocab_size
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(run / "sft" / "best_policy")  # the word-level tokenizer vLLM reads
    assert len(tok) == cat.vocab_size and tok.convert_tokens_to_ids("<u.gender_2>") == cat.layout.user_offset + 2
    es = eval_set(load_npz(run / "data" / "split.npz"), "test")
    ids, mask = build_prompts(es.history[:4], cat, es.users[:4])
    first = ids[torch.arange(4), (mask == 0).sum(1)]
    assert (first == BOS).all()
    # the evaluation decoded prompts with the profile (a prompt without it raises): a full export, ranked lists
    metrics = read_json(run / "eval" / "metrics.json")
    assert 0 <= metrics["test"]["policy"]["hr@10"] <= 1
    assert len((run / "eval" / "predictions_test.jsonl").read_text().splitlines()) == es.targets.size
