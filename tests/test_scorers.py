"""Reward models beside the DIN ranker (rl_align/rewards/scorers.py): trained on training events only, calibrated,
stacked, saved without pickle and served with the ranker's call."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from rl_align.config import BaselineConfig, ExposureConfig, RankerConfig, RunConfig
from rl_align.data.exposure import simulate_exposure
from rl_align.data.features import FeatureSpec
from rl_align.data.split import truncated_split
from rl_align.ranker.model import DinRanker, save_ranker
from rl_align.rewards.scorers import SCORERS, EnsembleScorer, fit_logistic, load_scorer, scorer_path, train_scorers
from rl_align.utils.io import write_npz

N_USERS, N_ITEMS = 60, 80


def _sequences(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Users walk a ring of items (item i tends to follow i - 1), 15-25 events each: learnable order."""
    rng = np.random.default_rng(seed)
    seqs = []
    for _ in range(N_USERS):
        start, n = rng.integers(N_ITEMS), rng.integers(15, 26)
        steps = rng.choice([1, 1, 1, 2, 3], size=n)
        seqs.append(list(dict.fromkeys(((start + np.cumsum(steps)) % N_ITEMS).tolist())))
    lens = np.array([len(s) for s in seqs])
    return np.concatenate(seqs).astype(np.int64), np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)


def _run(tmp_path, seq_items, offs, name="run") -> tuple:
    """A run directory with what a sequence reward model reads: the split and the exposure logs."""
    run = tmp_path / name
    (run / "data").mkdir(parents=True)
    (run / "exposure").mkdir()
    split = {"seq_items": seq_items, "seq_offsets": offs,
             "item_popularity": np.bincount(seq_items, minlength=N_ITEMS)}
    write_npz(run / "data" / "split.npz", **split)
    log = simulate_exposure(split, N_ITEMS, ExposureConfig(slate_size=10, holdout_events=3), 20)
    write_npz(run / "exposure" / "log.npz", **log.arrays())
    cfg = RunConfig()
    cfg.exposure = ExposureConfig(slate_size=10, holdout_events=3)
    cfg.baseline = BaselineConfig(hidden=16, layers=1, epochs=4, eval_every=1, batch_size=32, lr=3e-3, threads=1)
    cfg.ranker = RankerConfig(scorers=["din", "sasrec"], max_history=20)
    return run, cfg, log


def test_truncated_split_cuts_the_last_events_and_rebuilds_leave_one_out():
    items = np.arange(10, dtype=np.int64)
    offs = np.array([0, 7, 10])  # user 0: 7 items, user 1: 3 items
    t = truncated_split(items, offs, drop=2, max_history=3)
    assert t["seq_items"].tolist() == [0, 1, 2, 3, 4, 7] and t["seq_offsets"].tolist() == [0, 5, 6]
    assert t["valid_users"].tolist() == [0] and t["test_users"].tolist() == [0]   # user 1 keeps 1 item: no example
    assert t["valid_targets"].tolist() == [3] and t["test_targets"].tolist() == [4]
    assert t["test_history"].tolist() == [[1, 2, 3]] and t["valid_history"].tolist() == [[0, 1, 2]]


@pytest.mark.parametrize("events", ["cut", "all"])
def test_no_valid_or_test_event_reaches_the_reward_models(tmp_path, events):
    """Replace every user's valid and test items: the exposure logs (the DIN ranker's data) and the trained
    sequence reward model, its calibration included, come out identical; a change to a training event does not.
    Also when the model is refitted on every training event (``ranker.sequence_events: all``)."""
    torch.set_num_threads(1)
    seq, offs = _sequences()
    run_a, cfg, log_a = _run(tmp_path, seq, offs, "a")
    cfg.ranker = dataclasses.replace(cfg.ranker, sequence_events=events)
    swapped = seq.copy()
    for u in range(N_USERS):
        swapped[offs[u + 1] - 2: offs[u + 1]] = (seq[offs[u + 1] - 2: offs[u + 1]] + 40) % N_ITEMS
    run_b, _, log_b = _run(tmp_path, swapped, offs, "b")
    for k, v in log_a.arrays().items():
        np.testing.assert_array_equal(v, log_b.arrays()[k], err_msg=k)
    meta = {r: train_scorers(r, cfg, skip=("din",))["sasrec"] for r in (run_a, run_b)}
    assert meta[run_a]["calibration"] == meta[run_b]["calibration"]
    sa, sb = (load_scorer(scorer_path(r, "sasrec")).state_dict() for r in (run_a, run_b))
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    # the control: the same training changes when a training event changes
    moved = seq.copy()
    moved[offs[1] - 12] = (moved[offs[1] - 12] + 1) % N_ITEMS
    run_c, _, _ = _run(tmp_path, moved, offs, "c")
    train_scorers(run_c, cfg, skip=("din",))
    sc = load_scorer(scorer_path(run_c, "sasrec")).state_dict()
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)


def test_the_refit_on_all_training_events_learns_the_cut_events_and_keeps_the_cut_calibration(tmp_path):
    """``sequence_events: all``: the cut model fixes the epoch count and the calibration; the refit then learns
    from the events the cut model never saw (moving one changes it, while the cut model does not change)."""
    torch.set_num_threads(1)
    seq, offs = _sequences(2)
    run, cfg, _ = _run(tmp_path, seq, offs, "a")
    cfg.ranker = dataclasses.replace(cfg.ranker, sequence_max_len=12)
    cut = train_scorers(run, cfg, skip=("din",))["sasrec"]
    cut_state = load_scorer(scorer_path(run, "sasrec")).state_dict()
    cfg.ranker = dataclasses.replace(cfg.ranker, sequence_events="all")
    full = train_scorers(run, cfg, skip=("din",))["sasrec"]
    assert full["cut_model"] == {k: cut[k] for k in ("trained_on", "epochs")}
    assert "every training event" in full["trained_on"] and full["seq"]["max_len"] == cut["seq"]["max_len"] == 12
    assert len(full["epochs"]) == 1 and 1 <= full["epochs"][0] <= cut["epochs"][0]
    assert {k: full["calibration"][k] for k in ("a", "b")} == {k: cut["calibration"][k] for k in ("a", "b")}
    m = load_scorer(scorer_path(run, "sasrec"))
    assert m.calib.tolist() == pytest.approx([full["calibration"]["a"], full["calibration"]["b"]])
    weights = [k for k in cut_state if k.startswith("seq.")]
    assert any(not torch.equal(m.state_dict()[k], cut_state[k]) for k in weights)
    # an event the cut model never sees (user 0's third-to-last: a calibration impression's click)
    moved = seq.copy()
    moved[offs[1] - 3] = (moved[offs[1] - 3] + 1) % N_ITEMS
    run_m, _, _ = _run(tmp_path, moved, offs, "m")
    full_m = train_scorers(run_m, cfg, skip=("din",))["sasrec"]
    assert full_m["epochs"] == full["epochs"]
    sm, sf = load_scorer(scorer_path(run_m, "sasrec")).state_dict(), m.state_dict()
    assert any(not torch.equal(sm[k], sf[k]) for k in weights)


def test_a_seed_bag_averages_its_members_log_probs_and_round_trips(tmp_path):
    """``sequence_seeds: 2``: two models trained with seeds baseline.seed and + 1 (their weights differ); the
    scorer's log-probability is the mean of theirs; the saved bag reloads to the same logits; with ``all`` each
    member is refitted for its own cut model's best epoch count."""
    torch.set_num_threads(1)
    seq, offs = _sequences(3)
    run, cfg, _ = _run(tmp_path, seq, offs)
    cfg.ranker = dataclasses.replace(cfg.ranker, sequence_seeds=2, sequence_events="all")
    meta = train_scorers(run, cfg, skip=("din",))["sasrec"]
    assert meta["bag"] == 2 and len(meta["epochs"]) == len(meta["cut_model"]["epochs"]) == 2
    m = load_scorer(scorer_path(run, "sasrec"))
    assert len(m.bag) == 1
    a, b = m.seq.state_dict(), m.bag[0].state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a)
    hist, cands = torch.tensor([[3, 4, 5, -1], [10, 11, -1, -1]]), torch.tensor([[6, 7, 50], [12, 13, 60]])
    tok = m.tokens(hist)
    each = [torch.log_softmax(s.score_last(tok), -1).gather(1, cands) for s in (m.seq, m.bag[0])]
    assert torch.allclose(m.log_probs(hist, cands), (each[0] + each[1]) / 2, atol=1e-6)
    assert torch.allclose(m(torch.tensor([0, 1]), hist, cands), m.calib[0] * (each[0] + each[1]) / 2 + m.calib[1],
                          atol=1e-5)


def test_sequence_reward_model_serves_the_ranker_call_and_round_trips(tmp_path):
    """A saved SASRec reward model reloads (safetensors + JSON) to the same logits; its calibrated logit orders
    candidates as the model's next-item log-probability; padding and history length do not break it."""
    torch.set_num_threads(1)
    seq, offs = _sequences(1)
    run, cfg, _ = _run(tmp_path, seq, offs)
    meta = train_scorers(run, cfg, skip=("din",))["sasrec"]
    assert meta["calibration"]["a"] > 0 and 0.5 < meta["calibration"]["check"]["auc"] <= 1.0
    m = load_scorer(scorer_path(run, "sasrec"))
    assert (m.n_items, m.n_users) == (N_ITEMS, N_USERS)
    hist = torch.tensor([[3, 4, 5, -1, -1], [10, -1, -1, -1, -1]])
    cands = torch.tensor([[6, 7, 50], [11, 12, 60]])
    out = m(torch.tensor([0, 1]), hist, cands)
    assert out.shape == (2, 3) and torch.isfinite(out).all()
    lp = m.log_probs(hist, cands)
    assert torch.equal(out.argsort(1), lp.argsort(1))
    assert out[0, 0] > out[0, 2]          # the ring's next item beats a far one
    assert torch.allclose(m(torch.tensor([0, 1]), hist, cands), out)


def _din(tmp_path, n_items: int, n_users: int):
    torch.manual_seed(0)
    model = DinRanker(n_items, n_users, RankerConfig(embed_dim=8, attention_hidden=8, mlp_dims=[8]),
                      [FeatureSpec("genre", "categorical", ["a", "b"], [], 1)], [])
    save_ranker(model, tmp_path / "ranker" / "model")
    return model


def test_ensemble_fits_stacking_weights_and_reloads(tmp_path):
    """The ensemble stacks a DIN ranker and a SASRec reward model by logistic regression on held-out
    impressions (half the users), reports both members' and its own check-half metrics, and reloads bit for bit."""
    torch.set_num_threads(1)
    seq, offs = _sequences(2)
    run, cfg, _ = _run(tmp_path, seq, offs)
    _din(run, N_ITEMS, N_USERS)
    cfg.ranker = dataclasses.replace(cfg.ranker, scorers=["din", "sasrec", "ensemble"],
                                     ensemble_members=["din", "sasrec"])
    meta = train_scorers(run, cfg, skip=("din",))["ensemble"]
    assert set(meta["weights"]) == {"din", "sasrec"} and meta["weights"]["sasrec"] > 0
    chk = meta["calibration"]["check"]
    assert chk["ensemble"]["logloss"] <= chk["din"]["logloss"] + 1e-6      # an untrained DIN adds nothing
    ens = load_scorer(scorer_path(run, "ensemble"))
    assert isinstance(ens, EnsembleScorer)
    u, h, c = torch.tensor([0, 5]), torch.tensor([[1, 2, 3], [7, 8, -1]]), torch.tensor([[4, 9], [9, 30]])
    f = ens.features(u, h, c)
    assert f.shape == (2, 2, 2)
    expect = f @ torch.tensor([meta["weights"]["din"], meta["weights"]["sasrec"]]) + meta["bias"]
    assert torch.allclose(ens(u, h, c), expect, atol=1e-5)


def test_fit_logistic_recovers_known_weights():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(20000, 2, generator=g)
    y = (torch.rand(20000, generator=g) < torch.sigmoid(x @ torch.tensor([1.5, -0.5]) - 1.0)).float()
    w, b = fit_logistic(x, y, l2=0.0)
    assert torch.allclose(w, torch.tensor([1.5, -0.5]), atol=0.1) and b == pytest.approx(-1.0, abs=0.1)


def test_registry_names_and_bad_configs():
    from rl_align.checks import config_errors

    assert {"din", "sasrec", "gru4rec", "ensemble"} <= set(SCORERS.names())
    cfg = RunConfig()
    cfg.reward.scorer = "bm25"
    assert any(k == "reward.scorer" for k, _ in config_errors(cfg))
    cfg = RunConfig()
    cfg.ranker = dataclasses.replace(cfg.ranker, scorers=["din", "ensemble"], ensemble_members=["din", "sasrec"])
    assert ("ranker.ensemble_members" in [k for k, _ in config_errors(cfg)])
    cfg.ranker = dataclasses.replace(cfg.ranker, scorers=["sasrec"])
    assert "ranker.scorers" in [k for k, _ in config_errors(cfg)]
    cfg.ranker = dataclasses.replace(cfg.ranker, scorers=["din", "sasrec", "ensemble"], sequence_events="all",
                                     ensemble_members=["din", "sasrec"])
    assert [k for k, _ in config_errors(cfg)] == ["ranker.sequence_events"]
    cfg.ranker = dataclasses.replace(cfg.ranker, ensemble_members=["din"])
    assert config_errors(cfg) == []
    cfg.ranker = dataclasses.replace(cfg.ranker, sequence_max_len=0)
    assert "ranker.sequence_max_len" in {k for k, _ in config_errors(cfg)}


def test_an_unknown_sequence_events_value_is_refused_at_load(tmp_path):
    from rl_align.config import ConfigError, load_config

    path = tmp_path / "c.yaml"
    path.write_text("{}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"c\.yaml.*ranker\.sequence_events.*cut"):
        load_config(path, overrides=["ranker.sequence_events=every"])


def test_the_ceiling_table_marks_the_auc_of_a_refitted_model_in_sample(tmp_path):
    """A model refitted on every training event learned the held-out impressions' events: its AUC is labelled."""
    from rl_align.rewards.scorers import ceiling_table, trained_on_heldout
    from rl_align.utils.io import write_json

    cut, refit, ens = tmp_path / "cut", tmp_path / "refit", tmp_path / "ens"
    for d, meta in ((cut, {"kind": "sasrec"}), (refit, {"kind": "sasrec", "cut_model": {}}),
                    (ens, {"kind": "ensemble", "members": {"sasrec": {"kind": "sasrec", "cut_model": {}}}})):
        d.mkdir()
        write_json(d / "scorer.json", meta)
    assert [trained_on_heldout(d) for d in (cut, refit, ens, tmp_path / "din")] == [False, True, True, False]
    rr = {"policy": {"hr@10": 0.2}, "ranker_only": {"hr@10": 0.21}, "best_alpha": 1.0, "best": 0.22, "gain": 1.1}
    table = ceiling_table({"din": {"heldout": {"heldout_auc": 0.75, "in_sample": False}, "rerank": rr},
                           "sasrec": {"heldout": {"heldout_auc": 0.85, "in_sample": True}, "rerank": rr}}, "valid")
    assert "| din | 0.7500 | 0.2000" in table and "| sasrec | 0.8500 (in-sample) | 0.2000" in table
    assert "not a held-out figure" in table
