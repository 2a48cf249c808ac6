"""Item-ID baselines (SASRec, GRU4Rec): they learn, rank through the policy's evaluator, save without pickle."""

import json

import numpy as np
import pytest
import torch

from rl_align.baselines import BASELINES
from rl_align.baselines.train import fit, load_baseline, rank_baseline, save_baseline
from rl_align.config import BaselineConfig, ConfigError, RunConfig, from_dict
from rl_align.data.dataset import InteractionData
from rl_align.data.split import leave_one_out
from rl_align.eval.evaluate import eval_set, metrics
from rl_align.policy.data import last_items


def _cyclic_split(n_users: int = 120, n_items: int = 50, length: int = 30, seed: int = 0) -> dict:
    """Users walk the catalog in steps of +1 (mod n_items) from a random start: the next item is
    determined by the last one, so a working sequence model reaches HR@10 ≈ 1."""
    rng = np.random.default_rng(seed)
    users, items = [], []
    for u in range(n_users):
        start = int(rng.integers(0, n_items))
        users += [u] * length
        items += [(start + t) % n_items for t in range(length)]
    users, items = np.array(users), np.array(items)
    data = InteractionData(name="cyclic", user_ids=[str(u) for u in range(n_users)],
                           item_ids=[str(i) for i in range(n_items)], users=users, items=items,
                           timestamps=np.tile(np.arange(length), n_users), item_text=[""] * n_items)
    s = leave_one_out(data, 10)
    out = {"seq_items": s.seq_items, "seq_offsets": s.seq_offsets}
    for part in ("train", "valid", "test"):
        ex = getattr(s, part)
        for f in ("users", "targets", "history", "history_len", "positions"):
            out[f"{part}_{f}"] = getattr(ex, f)
    return out


@pytest.mark.parametrize("name,seen_mask", [("sasrec", False), ("gru4rec", False), ("sasrec", True)])
def test_baseline_learns_and_ranks_unseen_items(name, seen_mask, tmp_path):
    split = _cyclic_split()
    cfg = BaselineConfig(epochs=30, eval_every=5, patience=10, lr=3e-3, hidden=32, layers=1, seed=0,
                         seen_mask=seen_mask)
    model, curve = fit(name, split, 50, cfg, max_len=10)
    es = eval_set(split, "test")
    ranked, scores = rank_baseline(model, es, 20)
    m = metrics(ranked, es.targets, [10])
    # a cyclic walk of 30 steps over 50 items: the next item is unseen, so masking history keeps it rankable
    assert m["hr@10"] > 0.9, (m, curve[-1])
    for r in range(es.targets.size):
        seen = set(es.seen[r][es.seen[r] >= 0].tolist())
        got = ranked[r].tolist()
        assert len(set(got)) == 20 and not set(got) & seen and min(got) >= 0
        assert (np.diff(scores[r]) <= 1e-6).all()
    save_baseline(model, name, tmp_path / name)
    again = load_baseline(tmp_path / name)
    assert np.array_equal(rank_baseline(again, es, 20)[0], ranked)
    assert json.loads((tmp_path / name / "model.json").read_text())["model"] == name


def test_short_catalog_leaves_empty_slots_not_seen_items():
    split = _cyclic_split(n_users=30, n_items=25, length=24)
    model = BASELINES.get("sasrec")(25, 10, hidden=16, layers=1)
    es = eval_set(split, "test")
    ranked, _ = rank_baseline(model, es, 20)
    for r in range(es.targets.size):
        n_unseen = 25 - len(set(es.seen[r][es.seen[r] >= 0].tolist()))
        assert (ranked[r] >= 0).sum() == min(20, n_unseen)


def test_last_items_right_aligned():
    seen = np.array([[5, 6, 7, -1, -1], [1, -1, -1, -1, -1], [-1, -1, -1, -1, -1]])
    assert last_items(seen, 2).tolist() == [[7, 8], [0, 2], [0, 0]]


def test_corrupt_weights_name_the_file(tmp_path):
    model = BASELINES.get("gru4rec")(10, 5, hidden=8, layers=1)
    save_baseline(model, "gru4rec", tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="model.safetensors"):
        load_baseline(tmp_path)


def test_sasrec_padding_does_not_change_scores():
    torch.manual_seed(0)
    model = BASELINES.get("sasrec")(30, 8, hidden=16, layers=2, heads=2).eval()
    a = model.score_last(torch.tensor([[0, 0, 0, 0, 0, 3, 4, 5]]))
    b = model.score_last(torch.tensor([[0, 0, 0, 3, 4, 5, 0, 0]])[:, [0, 1, 2, 6, 7, 3, 4, 5]])
    assert torch.allclose(a, b) and torch.isfinite(a).all()


@pytest.mark.parametrize("key,value,msg", [
    ("dropout", 1.5, r"baseline\.dropout"),
    ("heads", 3, "must divide hidden"),
    ("epochs", 0, r"baseline\.epochs"),
])
def test_bad_baseline_values_fail_at_load(key, value, msg):
    with pytest.raises(ConfigError, match=msg):
        from_dict(RunConfig, {"baseline": {key: value}}, source="c.yaml")
