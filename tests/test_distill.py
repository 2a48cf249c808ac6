"""Distillation from an item-ID teacher (``sft.distill_from``): the soft token targets on a hand-made catalog,
the loss's limits, the teacher's targets (history masked, only training events; a bag of teachers), the item-head
targets (``sft.distill_into``), and the config checks."""

import numpy as np
import pytest
import torch
import yaml

from rl_align.baselines.sasrec import SASRec
from rl_align.config import ConfigError
from rl_align.policy.data import windows_to_batch
from rl_align.policy.item_head import target_items
from rl_align.policy.model import next_token_loss
from rl_align.sft.distill import distill_loss, head_distill_loss, head_soft_targets, soft_token_targets, teacher_targets
from rl_align.sid import SidCatalog
from rl_align.sid.codes import SidCodes


def _catalog():
    """4 items, codes (level sizes 2, 2): 0=(0,0) 1=(0,1) 2=(1,0) 3=(1,1)."""
    codes = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.int32)
    return SidCatalog([str(i) for i in range(4)], SidCodes(codes, np.full(4, 2, np.int32), [2, 2]))


def _teacher(n_events, rows: dict):
    items, prob = np.zeros((n_events, 4), np.int32), np.zeros((n_events, 4), np.float32)
    for e, dist in rows.items():
        for k, (i, p) in enumerate(dist.items()):
            items[e, k], prob[e, k] = i, p
    return {"items": items, "prob": prob}


def test_soft_targets_follow_the_true_code_path():
    """Window of events [0, 1] (items 3 then 1), target = the second slot (item 1, code (0, 1), then <eos>).
    Teacher at event 1: item 0: 0.2, item 1: 0.2, item 2: 0.6. Level 0: (0.4 on code 0, 0.6 on code 1); level 1,
    given the true first code 0: items 0 and 1 → 0.5 / 0.5; <eos> level: one-hot <eos> (items 0 and 1 both end)."""
    cat = _catalog()
    seq = np.array([3, 1, 2, 0])
    events, n_target = np.array([[0, 1]]), np.array([1])
    teacher = _teacher(4, {1: {0: 0.2, 1: 0.2, 2: 0.6}})
    rows, cols, q = soft_token_targets(events, n_target, seq, cat, teacher)
    batch = windows_to_batch(seq[events], cat, n_target)
    lab = batch["labels"][0]
    assert rows.tolist() == [0, 0, 0] and cols.tolist() == torch.nonzero(lab != -100).flatten().tolist()
    first, second, eos = cat.tokens[1][:3]
    assert lab[cols].tolist() == [first, second, eos]
    l0, l1 = cat.layout.offsets[0], cat.layout.offsets[1]
    assert q[0, l0].item() == pytest.approx(0.4) and q[0, l0 + 1].item() == pytest.approx(0.6)
    assert q[1, l1].item() == pytest.approx(0.5) and q[1, l1 + 1].item() == pytest.approx(0.5)
    assert q[2, eos].item() == pytest.approx(1.0)
    assert torch.allclose(q.sum(1), torch.ones(3))


def test_events_without_teacher_mass_get_no_target_and_padding_is_handled():
    """Two windows, one front-padded; event 2 has no teacher row, so only window 0's target gets soft targets."""
    cat = _catalog()
    seq = np.array([3, 1, 2, 0])
    events, n_target = np.array([[0, 1], [-1, 2]]), np.array([1, 1])
    teacher = _teacher(4, {1: {1: 1.0}})
    rows, cols, q = soft_token_targets(events, n_target, seq, cat, teacher)
    assert rows.tolist() == [0, 0, 0]


def test_a_one_hot_teacher_gives_exactly_the_nll():
    """A teacher with all its mass on the true item: the soft CE equals the next-token NLL on those tokens."""
    cat = _catalog()
    seq = np.array([3, 1, 2, 0, 1, 2])
    events, n_target = np.array([[0, 1, 2], [3, 4, 5]]), np.array([3, 3])
    teacher = _teacher(6, {e: {int(seq[e]): 1.0} for e in range(6)})
    rows, cols, q = soft_token_targets(events, n_target, seq, cat, teacher)
    batch = windows_to_batch(seq[events], cat, n_target)
    logits = torch.randn(2, batch["input_ids"].shape[1], cat.vocab_size)
    assert distill_loss(logits, rows, cols, q).item() == pytest.approx(
        next_token_loss(logits, batch["labels"]).item(), rel=1e-5)


def test_teacher_targets_mask_history_and_cover_only_training_events():
    """Events: user 0 has 6 (4 training), user 1 has 5 (3 training). Training events after a user's first get a
    distribution that sums to ≤ 1 and never holds an item of the history before it; the rest get nothing."""
    torch.manual_seed(0)
    seq = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0])
    split = {"seq_items": seq, "seq_offsets": np.array([0, 6, 11])}
    model = SASRec(12, 3, hidden=8).eval()
    t = teacher_targets(model, split, k=12)
    has = t["prob"].sum(1) > 0
    assert has.tolist() == [False, True, True, True, False, False, False, True, True, False, False]
    for e, start in [(1, 0), (2, 0), (3, 0), (7, 6), (8, 6)]:
        held = set(t["items"][e][t["prob"][e] > 0].tolist())
        assert not held & set(seq[start:e].tolist()) and len(held) == 12 - (e - start)
        assert t["prob"][e].sum() == pytest.approx(1.0, rel=1e-5)


def test_a_bag_of_teachers_is_the_softmax_of_their_mean_log_probabilities():
    """A bag of one model gives that model's targets; a bag of two gives, at an event, softmax over the unmasked
    items of the mean of the members' log-softmax, computed here by hand from ``score_last``."""
    torch.manual_seed(0)
    seq = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0])
    split = {"seq_items": seq, "seq_offsets": np.array([0, 6, 11])}
    a, b = SASRec(12, 3, hidden=8).eval(), SASRec(12, 4, hidden=8).eval()  # members may read different lengths
    one, alone = teacher_targets([a], split, k=12), teacher_targets(a, split, k=12)
    assert np.array_equal(one["items"], alone["items"]) and np.array_equal(one["prob"], alone["prob"])
    bag = teacher_targets([a, b], split, k=12)
    with torch.no_grad():  # event 8: user 1 (offset 6), history items 6, 7
        lp = [torch.log_softmax(m.score_last(torch.tensor([[0] * (L - 2) + [7, 8]])), -1)[0]
              for m, L in ((a, 3), (b, 4))]
    z = (lp[0] + lp[1]) / 2
    z[[6, 7]] = float("-inf")
    want = torch.softmax(z, -1)
    got = np.zeros(12, np.float32)
    got[bag["items"][8]] = bag["prob"][8]
    assert np.allclose(got, want.numpy(), atol=1e-6)
    assert not np.allclose(bag["prob"][8], one["prob"][8])


def test_head_targets_follow_the_item_heads_row_order_and_its_loss_is_the_soft_cross_entropy():
    """Two windows (one front-padded), 2 + 1 targets: the head's targets come in target_items' order, rows
    renormalised, a target without teacher mass contributes nothing; a one-hot teacher gives the head's NLL."""
    events, n_target = np.array([[0, 1, 2], [-1, 4, 5]]), np.array([2, 1])
    teacher = _teacher(6, {1: {1: 0.3, 2: 0.1}, 2: {2: 0.5}, 5: {0: 0.2, 2: 0.2}})
    items, prob = head_soft_targets(events, n_target, teacher)
    assert target_items(events, n_target).tolist() == [1, 2, 5]  # the events whose teacher rows are read
    assert items[:, :2].tolist() == [[1, 2], [2, 0], [0, 2]]
    assert torch.allclose(prob[:, :2], torch.tensor([[0.75, 0.25], [1.0, 0.0], [0.5, 0.5]]))
    logp = torch.log_softmax(torch.randn(3, 4), -1)
    want = -(0.75 * logp[0, 1] + 0.25 * logp[0, 2] + logp[1, 2] + 0.5 * logp[2, 0] + 0.5 * logp[2, 2]) / 3
    assert head_distill_loss(logp, items, prob).item() == pytest.approx(want.item(), rel=1e-6)
    none = _teacher(6, {1: {1: 1.0}})
    items, prob = head_soft_targets(events, n_target, none)  # only the first target is covered
    assert head_distill_loss(logp, items, prob).item() == pytest.approx(-logp[0, 1].item(), rel=1e-6)
    empty = _teacher(6, {})
    assert head_distill_loss(logp, *head_soft_targets(events, n_target, empty)).item() == 0.0


@pytest.mark.parametrize("sets, msg", [
    ({"sft": {"distill_weight": 0.5}}, "distill_weight: needs sft.distill_from"),
    ({"sft": {"distill_from": "baseline:sasrec"}}, "distill_from: .*distill_weight is 0"),
    ({"sft": {"distill_from": "baseline:bert4rec", "distill_weight": 0.5}}, "distill_from: unknown baseline model"),
    ({"sft": {"distill_from": "nowhere", "distill_weight": 0.5}}, "distill_from: expected 'baseline:<model>'"),
    ({"sft": {"distill_from": "baseline:sasrec", "distill_weight": 0.5}, "baseline": {"models": []},
      "stages": ["data", "embed", "sids", "baselines", "sft"]}, "distill_from: .*needs the baselines stage"),
    ({"sft": {"distill_bag": ["baseline:sasrec"]}}, "distill_bag: needs sft.distill_from"),
    ({"sft": {"distill_from": "baseline:sasrec", "distill_weight": 0.5, "distill_bag": ["nowhere"]}},
     "distill_bag: expected 'baseline:<model>'"),
    ({"sft": {"distill_from": "baseline:sasrec", "distill_weight": 0.5, "distill_into": "item_head"}},
     "distill_into: 'item_head' needs policy.item_head"),
    ({"sft": {"distill_into": "head"}}, "distill_into"),
])
def test_bad_distillation_settings_fail_at_load(tmp_path, sets, msg):
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(sets))
    from rl_align.checks import load_checked

    with pytest.raises(ConfigError, match=rf"c.yaml: sft.{msg}"):
        load_checked(tmp_path / "c.yaml")


@pytest.mark.ray
@pytest.mark.parametrize("into", ["tokens", "both"])
def test_sft_distills_from_the_runs_sasrec(ml100k_emb, ray_session, tmp_path, into):
    """baselines (SASRec) → sft with ``distill_from: baseline:sasrec``: the workers get the teacher's targets for
    exactly the training events (after each user's first), and the loss they train on carries the soft term:
    at a learning rate too small to move the policy, the first epoch's loss is about (1 + λ) × the NLL's log V.
    With ``distill_into: both``, a bag (SASRec + GRU4Rec) and an item head: the targets are the bag's, and the loss
    also carries the head's cross-entropy and its soft term, each about log n_items at the start."""
    import json
    import math

    from rl_align.baselines.train import load_baseline
    from rl_align.pipeline import run_pipeline
    from rl_align.utils.io import load_npz

    lam, w = 1.0, 0.5
    sft = {"epochs": 1, "batch_size": 64, "lr": 1e-7, "warmup_steps": 5, "eval_users": 50, "cpus_per_worker": 2,
           "distill_from": "baseline:sasrec", "distill_weight": lam, "distill_topk": 20}
    policy = {"hidden_size": 64, "num_layers": 1, "num_heads": 1, "intermediate_size": 128}
    models = ["sasrec"]
    if into == "both":
        sft.update(distill_into="both", distill_bag=["baseline:gru4rec"], item_head_weight=w)
        policy["item_head"], models = "free", ["sasrec", "gru4rec"]
    cfg_d = {"name": "kd", "wandb": False, "stages": ["data", "embed", "sids", "baselines", "sft"],
             "sid": {"codebook_size": 32}, "baseline": {"models": models, "epochs": 2, "eval_every": 1},
             "policy": policy, "sft": sft, "eval": {"beams": 10, "batch_size": 256}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg_d))
    run = tmp_path / "run"
    from rl_align.config import RunConfig, load_config

    run_pipeline(load_config(tmp_path / "c.yaml", RunConfig), run)
    split = load_npz(run / "data" / "split.npz")
    t = load_npz(run / "sft" / "distill_targets.npz")
    off = split["seq_offsets"]
    want = np.zeros(split["seq_items"].size, bool)
    for u in range(off.size - 1):
        want[off[u] + 1: off[u + 1] - 2] = True
    assert t["items"].shape == (split["seq_items"].size, 20)
    assert np.array_equal(t["prob"].sum(1) > 0, want)
    teachers = [load_baseline(run / "baselines" / m) for m in models]
    again = teacher_targets(teachers if len(teachers) > 1 else teachers[0], split, k=20)
    assert np.array_equal(again["items"], t["items"]) and np.allclose(again["prob"], t["prob"], atol=1e-6)
    rec = [json.loads(x) for x in (run / "sft" / "metrics.jsonl").read_text().splitlines()]
    loss = next(r["train_loss"] for r in rec if r.get("epoch") == 1 and "train_loss" in r)
    cat = SidCatalog.load(run / "sids" / "catalog")
    V, n = cat.vocab_size, cat.n_items
    head = (w + lam) * math.log(n) if into == "both" else 0.0
    assert loss == pytest.approx((1 + lam) * math.log(V) + head, rel=0.15)
