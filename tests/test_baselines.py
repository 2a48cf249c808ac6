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


@pytest.mark.parametrize("name,validate", [("sasrec", True), ("gru4rec", False)])
def test_a_fit_stopped_after_any_epoch_resumes_to_the_uninterrupted_weights(name, validate, tmp_path, monkeypatch):
    """``fit(ckpt_dir=…)`` saves its state after every epoch; a fit killed after epoch 3 and started again ends with
    the same weights and curve, bit for bit, as one that ran through (dropout and window shuffles are seeded, and
    the generators are restored); a checkpoint of other data is ignored; a finished one gives its result again."""
    import rl_align.baselines.train as bt

    split = _cyclic_split(n_users=40, length=20)
    cfg = BaselineConfig(epochs=6, eval_every=2, patience=10, lr=3e-3, hidden=16, layers=1, dropout=0.3, seed=0)
    ref, ref_curve = fit(name, split, 50, cfg, max_len=10, validate=validate)

    real, calls = bt._epoch, []

    def dies_in_epoch_4(*a, **k):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt("killed")
        return real(*a, **k)

    monkeypatch.setattr(bt, "_epoch", dies_in_epoch_4)
    with pytest.raises(KeyboardInterrupt):
        fit(name, split, 50, cfg, max_len=10, validate=validate, ckpt_dir=tmp_path / "ck")
    assert json.loads((tmp_path / "ck" / "state.json").read_text())["epoch"] == 3
    monkeypatch.setattr(bt, "_epoch", real)
    got, curve = fit(name, split, 50, cfg, max_len=10, validate=validate, ckpt_dir=tmp_path / "ck")
    drop = "train_seconds"
    assert [{k: v for k, v in r.items() if k != drop} for r in curve] == \
        [{k: v for k, v in r.items() if k != drop} for r in ref_curve]
    a, b = ref.state_dict(), got.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    again, _ = fit(name, split, 50, cfg, max_len=10, validate=validate, ckpt_dir=tmp_path / "ck")  # nothing to train
    assert all(torch.equal(a[k], again.state_dict()[k]) for k in a)
    other = _cyclic_split(n_users=40, length=20, seed=1)                 # other data: the checkpoint is not used
    fresh, fresh_curve = fit(name, other, 50, cfg, max_len=10, validate=validate, ckpt_dir=tmp_path / "ck")
    alone, alone_curve = fit(name, other, 50, cfg, max_len=10, validate=validate)
    assert len(fresh_curve) == 6 and all(torch.equal(v, alone.state_dict()[k]) for k, v in fresh.state_dict().items())


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
