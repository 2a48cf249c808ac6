"""Ranker, reward functions, diagnostics and exposure logs — pure torch / numpy, no Ray."""

import itertools
import json
import math

import numpy as np
import pytest
import torch

from rl_align.algos.diagnostics import discriminability, group_rank_normalize, group_topk_indicator, group_zscore
from rl_align.config import ExposureConfig, RankerConfig, RewardConfig
from rl_align.data.features import auto_specs, encode, specs_from_config
from rl_align.ranker.metrics import auc, gauc
from rl_align.ranker.model import DinRanker, RankerLoadError, load_ranker, save_ranker
from rl_align.rewards.functions import (
    REWARDS,
    CompositeReward,
    RewardContext,
    RewardInputError,
    RewardInputs,
    rank_penalties,
)


# --------------------------------------------------------------------------- metrics
def _auc_brute(s, y):
    pos, neg = s[y], s[~y]
    return np.mean([1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg)])


def test_auc_matches_pairwise_definition_with_ties(rng):
    s = rng.integers(0, 5, 200).astype(float)  # many ties
    y = rng.random(200) < 0.3
    assert auc(s, y) == pytest.approx(_auc_brute(s, y))
    assert math.isnan(auc(s, np.zeros(200, bool)))


def test_gauc_weights_groups_and_skips_one_class_groups():
    s = np.array([0.9, 0.1, 0.2, 0.8, 0.5, 0.4])
    y = np.array([1, 0, 1, 0, 1, 1], bool)
    g = np.array([0, 0, 1, 1, 2, 2])
    val, used = gauc(s, y, g)
    assert used == 2 and val == pytest.approx((1.0 * 2 + 0.0 * 2) / 4)


# --------------------------------------------------------------------------- diagnostics
def test_discriminability_hand_made_group():
    d = discriminability(torch.tensor([0.5, 0.9]), torch.tensor([[0.1, 0.7, 0.5, 9.0], [0.1, 0.2, 0.3, 0.4]]),
                         torch.tensor([[True, True, True, False], [True, True, True, True]]))
    assert d.frac_below[0].item() == pytest.approx(1.5 / 3)   # 0.1 below, 0.5 tie (half), 0.7 above; 9.0 masked
    assert d.margin[0].item() == pytest.approx(0.5 - 0.7)
    assert d.rank[0].item() == pytest.approx(2.5)
    assert d.frac_below[1].item() == 1.0 and d.rank[1].item() == 1.0
    assert d.n_neg.tolist() == [3, 4]


def test_discriminability_no_negatives_is_nan_and_nonfinite_raises():
    d = discriminability(torch.tensor([0.5]), torch.tensor([[0.1]]), torch.tensor([[False]]))
    assert math.isnan(d.frac_below.item()) and math.isnan(d.margin.item())
    with pytest.raises(ValueError, match="NaN"):
        discriminability(torch.tensor([0.5]), torch.tensor([[float("nan")]]))


def test_group_normalisers():
    s = torch.tensor([[3.0, 1.0, 2.0, 7.0], [5.0, 5.0, 1.0, 0.0]])
    v = torch.tensor([[True, True, True, False], [True, True, False, False]])
    r = group_rank_normalize(s, v)
    assert r[0].tolist() == [1.0, 0.0, 0.5, 0.0]
    assert r[1].tolist() == [0.5, 0.5, 0.0, 0.0]
    z = group_zscore(s, v)
    assert z[0, :3].mean().item() == pytest.approx(0.0, abs=1e-6) and z[0, 3].item() == 0.0
    assert group_rank_normalize(torch.tensor([[4.0, 1.0]]), torch.tensor([[True, False]])).tolist() == [[1.0, 0.0]]


# --------------------------------------------------------------------------- reward functions
def _inp(items, targets, scores=None):
    items = torch.tensor(items)
    B = items.shape[0]
    return RewardInputs(torch.zeros(B, dtype=torch.long), torch.full((B, 3), -1), items, torch.tensor(targets),
                        None if scores is None else torch.tensor(scores))


def test_registry_lists_the_four_rewards():
    assert {"ranker", "exact_match", "ranking", "semantic"} <= set(REWARDS.names())


def test_exact_match_and_ranking_reward():
    inp = _inp([[5, 3, 7, 1], [2, 4, 6, 8]], [3, 9])
    out = CompositeReward({"exact_match": 1.0})(inp)
    assert out.rewards.tolist() == [[0, 1, 0, 0], [0, 0, 0, 0]]
    rk = CompositeReward({"ranking": 1.0})(inp).rewards
    pen = rank_penalties(4)
    assert pen.sum().item() == pytest.approx(-1.0) and (pen < 0).all() and pen[0] < pen[3]
    assert rk[0, 1].item() == 1.0 and rk[0, 0].item() == pytest.approx(pen[0].item())
    assert rk[1].tolist() == [0, 0, 0, 0]  # no hit in the group → no signal


def test_invalid_sids_and_nonfinite_scores_get_the_counted_floor():
    inp = _inp([[5, -1, 7]], [5], [[0.2, float("nan"), float("nan")]])
    out = CompositeReward({"ranker": 1.0, "exact_match": 0.5}, floor=-2.0, ctx=RewardContext("raw"))(inp)
    assert out.rewards[0].tolist() == pytest.approx([0.7, -2.0, -2.0])
    assert out.n_invalid == 1 and out.n_nonfinite == 1
    assert torch.isfinite(out.rewards).all()


def test_ranker_reward_rank_normalised_within_group():
    inp = _inp([[1, 2, 3]], [0], [[0.1, 0.9, 0.5]])
    assert CompositeReward({"ranker": 1.0})(inp).rewards[0].tolist() == [0.0, 1.0, 0.5]


def test_group_topk_indicator_marks_the_k_best_valid_members():
    s = torch.tensor([[3.0, 1.0, 2.0, 9.0, 0.5], [5.0, 5.0, 5.0, 1.0, 0.0]])
    v = torch.tensor([[True, True, True, False, True], [True, True, True, True, False]])
    top = group_topk_indicator(s, v, 2)
    assert top[0].tolist() == [1.0, 0.0, 1.0, 0.0, 0.0]          # 9.0 is invalid: it takes no place
    assert top[1].tolist() == [1.0, 1.0, 0.0, 0.0, 0.0]          # a three-way tie: the first two by position
    few = group_topk_indicator(s, torch.tensor([[True, False, False, False, False]] * 2), 3)
    assert few.tolist() == [[1.0, 0, 0, 0, 0]] * 2               # fewer valid members than k: all of them
    assert group_topk_indicator(s, v, 10).sum(1).tolist() == [4.0, 4.0]


def test_ranker_reward_topk_gives_hr_cut_and_floors_invalid():
    inp = _inp([[1, 2, -1, 3, 4]], [0], [[0.1, 0.9, 0.99, 0.5, 0.2]])
    out = CompositeReward({"ranker": 1.0}, floor=-1.0, ctx=RewardContext("topk", ranker_topk=2))(inp)
    assert out.rewards[0].tolist() == [0.0, 1.0, -1.0, 1.0, 0.0] and out.n_invalid == 1


def test_seen_items_get_seen_reward_and_no_rank_among_the_servable():
    inp = _inp([[1, 2, 3, 4, -1]], [9], [[0.9, 0.1, 0.5, 0.3, float("nan")]])
    inp.seen = torch.tensor([[1, 7, -1]])                      # item 1 was seen; -1 padding matches nothing
    out = CompositeReward({"ranker": 1.0}, floor=-1.0, seen_reward=0.25)(inp)
    # item 1 takes the seen reward, items 2–4 are ranked among themselves, the invalid SID keeps the floor
    assert out.rewards[0].tolist() == [0.25, 0.0, 1.0, 0.5, -1.0]
    assert out.n_seen == 1 and out.n_invalid == 1
    plain = CompositeReward({"ranker": 1.0}, floor=-1.0)(inp)   # seen_reward None: seen items are scored as usual
    assert plain.rewards[0].tolist() == pytest.approx([1.0, 0.0, 2 / 3, 1 / 3, -1.0]) and plain.n_seen == 0
    with pytest.raises(ValueError, match="seen_reward must be finite"):
        CompositeReward({"ranker": 1.0}, seen_reward=float("inf"))


def test_semantic_reward_is_cosine():
    emb = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), dim=1)
    out = CompositeReward({"semantic": 1.0}, ctx=RewardContext(item_embeddings=emb))(_inp([[0, 1, 2]], [0]))
    assert out.rewards[0].tolist() == pytest.approx([1.0, 0.0, math.sqrt(0.5)])


def test_a_scorer_whose_terms_read_item_vectors_refuses_to_start_without_them(tmp_path):
    """semantic needs the item vectors: the scorer says so when it starts, not at its first request; given
    them it serves the cosine (rows normalised on load)."""
    from rl_align.rewards.actor import RewardScorer

    cfg = RewardConfig(functions={"semantic": 1.0, "exact_match": 0.5})
    with pytest.raises(ValueError, match="read item embeddings but no item_embeddings_path"):
        RewardScorer(None, cfg, n_items=3)
    np.save(tmp_path / "e.npy", np.array([[2.0, 0.0], [0.0, 3.0], [1.0, 1.0]], dtype=np.float32))
    sc = RewardScorer(None, cfg, tmp_path / "e.npy", n_items=3)
    out = sc.composite(_inp([[0, 1, 2]], [0]))
    assert out.rewards[0].tolist() == pytest.approx([1.5, 0.0, math.sqrt(0.5)])


def test_bad_reward_requests_fail_clearly():
    with pytest.raises(RewardInputError, match="unknown item index 50"):
        _inp([[1, 50]], [1]).validate(n_items=10)
    with pytest.raises(RewardInputError, match="non-empty"):
        RewardInputs(torch.zeros(0, dtype=torch.long), torch.zeros(0, 3, dtype=torch.long),
                     torch.zeros(0, 4, dtype=torch.long), torch.zeros(0, dtype=torch.long)).validate(10)
    with pytest.raises(ValueError, match="unknown reward 'ctr'"):
        CompositeReward({"ctr": 1.0})
    with pytest.raises(ValueError, match="finite"):
        CompositeReward({"exact_match": float("nan")})


# --------------------------------------------------------------------------- features
def test_auto_features_on_ml100k(ml100k):
    items = {(s.name, s.kind) for s in auto_specs(ml100k.item_features, ml100k.n_items)}
    users = {(s.name, s.kind) for s in auto_specs(ml100k.user_features, ml100k.n_users)}
    assert items == {("class", "multi"), ("release_year", "bucket")}          # titles are text: dropped
    assert users == {("age", "bucket"), ("gender", "categorical"), ("occupation", "categorical")}  # zip dropped
    spec = next(s for s in auto_specs(ml100k.item_features, ml100k.n_items) if s.name == "class")
    t = encode(spec, ml100k.item_features["class"])
    assert t.shape == (ml100k.n_items + 1, spec.width) and (t[0] == 0).all() and (t[1:, 0] >= 2).all()
    with pytest.raises(ValueError, match="field 'genre' is not in the dataset"):
        specs_from_config(ml100k.item_features, {"genre": "multi"}, ml100k.n_items, "item")
    with pytest.raises(ValueError, match="kind 'onehot'"):
        specs_from_config(ml100k.item_features, {"class": "onehot"}, ml100k.n_items, "item")


# --------------------------------------------------------------------------- ranker model
def _tiny_ranker(head="mlp", n_items=30, n_users=10):
    from rl_align.data.features import build_spec

    genres = [[f"g{i % 4}", f"g{(i + 1) % 4}"] for i in range(n_items)]
    spec = build_spec("genre", genres, "multi")
    torch.manual_seed(0)
    cfg = RankerConfig(embed_dim=8, attention_hidden=8, mlp_dims=[16], head=head, dropout=0.0)
    return DinRanker(n_items, n_users, cfg, [spec], [], {"genre": torch.from_numpy(encode(spec, genres))}, {})


@pytest.mark.parametrize("head", ["mlp", "dcn"])
def test_ranker_shapes_padding_and_roundtrip(tmp_path, head):
    m = _tiny_ranker(head).eval()
    users = torch.tensor([0, 3])
    hist = torch.tensor([[1, 2, 3, -1, -1], [4, 5, -1, -1, -1]])
    cands = torch.tensor([[7, 8, 9], [1, -1, 2]])
    out = m(users, hist, cands)
    assert out.shape == (2, 3) and torch.isfinite(out).all()
    # padding is invisible: more trailing pads or pads moved to the front give the same logits
    hist2 = torch.tensor([[-1, 1, 2, 3, -1, -1, -1], [-1, -1, 4, 5, -1, -1, -1]])
    assert torch.allclose(m(users, hist2, cands), out, atol=1e-6)
    save_ranker(m, tmp_path / "rk", {"item_ids_digest": None})
    m2, meta = load_ranker(tmp_path / "rk")
    assert torch.allclose(m2(users, hist, cands), out) and meta["config"]["head"] == head
    (tmp_path / "bad").mkdir()
    with pytest.raises(RankerLoadError, match="missing model.safetensors"):
        load_ranker(tmp_path / "bad")


def test_ranker_learns_a_history_dependent_click_rule():
    """Each user's history is one genre; clicks iff the candidate has it — only the history can tell."""
    n_items = 30
    m = _tiny_ranker(n_items=n_items)
    g = torch.arange(n_items) % 4
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)

    def batch(n):
        genre = torch.randint(0, 4, (n, 1), generator=gen)
        hist = genre + 4 * torch.randint(0, n_items // 4, (n, 4), generator=gen)   # items of that genre
        cands = torch.randint(0, n_items, (n, 6), generator=gen)
        return torch.zeros(n, dtype=torch.long), hist, cands, (g[cands] == genre).float()

    for _ in range(300):
        u, h, c, y = batch(128)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(m(u, h, c), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    u, h, c, y = batch(512)
    with torch.no_grad():
        p = m.eval()(u, h, c)
    assert auc(p.flatten().numpy(), y.flatten().numpy().astype(bool)) > 0.95


# --------------------------------------------------------------------------- scorer (in-process)
def test_reward_scorer_in_process(tmp_path):
    from rl_align.rewards.actor import RewardScorer

    save_ranker(_tiny_ranker(), tmp_path / "rk")
    sc = RewardScorer(tmp_path / "rk", RewardConfig(functions={"ranker": 1.0, "exact_match": 1.0}, floor=-1.0))
    out = sc.score(np.array([0, 1]), np.array([[1, 2, -1], [3, -1, -1]]), np.array([[4, 5, -1], [6, 7, 8]]),
                   np.array([5, -1]), with_target_scores=True)
    r = out["rewards"]
    assert r.shape == (2, 3) and r[0, 2] == -1.0 and out["n_invalid"] == 1
    assert 1.0 <= r[0, 1] <= 2.0 and np.isnan(out["ranker_scores"][0, 2]) and out["target_scores"].shape == (2,)
    with pytest.raises(RewardInputError, match="users: unknown user index 99"):
        sc.score(np.array([99]), np.array([[1]]), np.array([[2]]), np.array([1]))


def test_reward_scorer_reads_the_batchs_seen_items(tmp_path):
    from rl_align.algos.batch import StepBatch
    from rl_align.rewards.actor import RewardScorer

    save_ranker(_tiny_ranker(), tmp_path / "rk")
    sc = RewardScorer(tmp_path / "rk", RewardConfig(functions={"ranker": 1.0}, seen_reward=-0.5))
    b = StepBatch(users=np.array([0, 1]), history=np.array([[1, 2, -1], [3, -1, -1]]), targets=np.array([5, -1]),
                  rollout_items=np.array([[4, 5, 1], [6, 7, 8]]), seen=np.array([[1, 2, -1], [3, 8, -1]]))
    out = sc.score_batch(b)
    assert out.rewards[0, 2] == -0.5 and out.rewards[1, 2] == -0.5
    assert sorted(out.rewards[0, :2].tolist()) == sorted(out.rewards[1, :2].tolist()) == [0.0, 1.0]  # ranked apart
    assert out.info["n_seen"] == 2 and np.isfinite(out.rollout_scores).all()   # the gate still sees their scores
    with pytest.raises(RewardInputError, match="seen: unknown item index 99"):
        sc.score_batch(b.update(seen=np.array([[99], [1]])))


def test_sanity_items_are_scored_in_the_rollouts_forward_pass_and_get_no_reward(tmp_path):
    """AdaGRPO's sanity items ride in the rollouts' request: the same ranker scores as a request of their own, and
    the rollouts' rewards and scores do not change."""
    from rl_align.algos.batch import StepBatch
    from rl_align.rewards.actor import RewardScorer

    save_ranker(_tiny_ranker(), tmp_path / "rk")
    sc = RewardScorer(tmp_path / "rk", RewardConfig(functions={"ranker": 1.0, "exact_match": 1.0}))
    b = StepBatch(users=np.array([0, 1]), history=np.array([[1, 2, -1], [3, -1, -1]]), targets=np.array([5, -1]),
                  rollout_items=np.array([[4, 5, -1], [6, 7, 8]]))
    negs = np.array([[9, 10, 11, 12], [13, 14, 0, 29]])
    alone = sc.score_batch(b)
    both = sc.score_batch(b.update(sanity_items=negs))
    own = sc.score(b.users, b.history, negs, b.targets)["ranker_scores"]
    np.testing.assert_allclose(both.sanity_scores, own, rtol=1e-5, atol=1e-6)
    assert both.sanity_scores.shape == (2, 4) and not np.allclose(own[0], own[0, 0])   # four different scores
    np.testing.assert_array_equal(both.rewards, alone.rewards)
    np.testing.assert_allclose(both.rollout_scores, alone.rollout_scores, rtol=1e-5, atol=1e-6, equal_nan=True)
    np.testing.assert_allclose(both.target_scores, alone.target_scores, rtol=1e-5, atol=1e-6, equal_nan=True)
    assert alone.sanity_scores is None
    for bad, msg in ((negs[:1], r"sanity_items: expected a \(B=2, K ≥ 1\)"),
                     (negs - 1, r"of catalog items \(≥ 0\)"), (negs + 30, "sanity_items: unknown item index 39")):
        with pytest.raises(RewardInputError, match=msg):
            sc.score_batch(b.update(sanity_items=bad))


# --------------------------------------------------------------------------- exposure logs
def _toy_split(n_users=60, n_items=40, seed=0):
    rng = np.random.default_rng(seed)
    pop = 1.0 / np.arange(1, n_items + 1) ** 1.1
    seqs = [rng.choice(n_items, size=rng.integers(8, 20), replace=False, p=pop / pop.sum()) for _ in range(n_users)]
    offs = np.concatenate([[0], np.cumsum([len(s) for s in seqs])])
    return {"seq_items": np.concatenate(seqs).astype(np.int64), "seq_offsets": offs.astype(np.int64)}, n_items


@pytest.mark.parametrize("policy", ["popularity", "cooccurrence", "mix"])
def test_simulated_exposure_respects_the_protocol(policy):
    from rl_align.data.exposure import exposure_stats, simulate_exposure

    split, n_items = _toy_split()
    cfg = ExposureConfig(policy=policy, slate_size=8, epsilon=0.1, click_noise=0.0, holdout_events=2, seed=1)
    lg = simulate_exposure(split, n_items, cfg, max_history=5)
    offs, seq = split["seq_offsets"], split["seq_items"]
    n_events = sum(len_ - 3 for len_ in np.diff(offs))
    assert len(lg) == n_events and lg.shown.shape == (n_events, 8)
    for e in range(len(lg)):
        assert len(set(lg.shown[e].tolist())) == 8                      # distinct slots
        u = lg.users[e]
        sequ = seq[offs[u]: offs[u + 1]]
        pos = int(np.flatnonzero(sequ == lg.targets[e])[0])
        assert not set(lg.shown[e].tolist()) & set(sequ[:pos].tolist())  # consumed items never shown again
        assert lg.history[e][lg.history[e] >= 0].tolist() == sequ[max(0, pos - 5):pos].tolist()
    # with no click noise, only the consumed item can be clicked
    assert (lg.shown[lg.clicks] == np.broadcast_to(lg.targets[:, None], lg.shown.shape)[lg.clicks]).all()
    assert lg.heldout.sum() == 2 * len(np.unique(lg.users))
    st = exposure_stats(lg, np.bincount(seq, minlength=n_items).astype(float), 3)
    assert st["buckets"][2]["share_of_impressions"] > st["buckets"][0]["share_of_impressions"] / 2


def test_position_bias_lowers_clicks_down_the_slate():
    from rl_align.data.exposure import simulate_exposure

    split, n_items = _toy_split(n_users=300)
    lg = simulate_exposure(split, n_items, ExposureConfig(policy="popularity", slate_size=10, epsilon=0.0,
                                                          click_noise=0.5, position_bias=1.0, seed=0), 5)
    ctr = lg.clicks.mean(0)
    assert ctr[0] > 2 * ctr[5] > 0  # examination 1 vs 1/6


def test_real_exposure_logs_load_and_errors_name_line_and_field(tmp_path):
    from rl_align.data.exposure import ExposureLogError, load_exposure_jsonl

    users, items = {"u1": 0, "u2": 1}, {"a": 0, "b": 1, "c": 2}
    p = tmp_path / "logs.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in [
        {"user_id": "u1", "history": ["a"], "shown": ["b", "c"], "clicked": ["c"]},
        {"user_id": "u2", "history": [], "shown": ["a"], "clicked": [], "target": "b"}]) + "\n")
    lg = load_exposure_jsonl(p, users, items, max_history=3, holdout_events=0)
    assert lg.shown.tolist() == [[1, 2], [0, -1]] and lg.clicks.tolist() == [[False, True], [False, False]]
    assert lg.targets.tolist() == [-1, 1]
    bad = [({"user_id": "u1", "history": [], "shown": ["zz"], "clicked": []}, "line 1: field 'shown': unknown item 'zz'"),
           ({"user_id": "u9", "history": [], "shown": ["a"], "clicked": []}, "unknown user 'u9'"),
           ({"user_id": "u1", "history": [], "shown": ["a"], "clicked": ["b"]}, "'clicked' has items that are not"),
           ({"user_id": "u1", "shown": ["a"], "clicked": []}, "missing field 'history'")]
    for rec, msg in bad:
        p.write_text(json.dumps(rec) + "\n")
        with pytest.raises(ExposureLogError, match=msg):
            load_exposure_jsonl(p, users, items, 3)
    p.write_text("{not json\n")
    with pytest.raises(ExposureLogError, match="line 1: invalid JSON"):
        load_exposure_jsonl(p, users, items, 3)


def test_future_match_discounts_later_events_and_defaults_to_exact_match():
    items = torch.tensor([[5, 6, 7, 8, -1]])
    base = dict(users=torch.tensor([0]), history=torch.tensor([[1, 2]]), items=items, targets=torch.tensor([6]))
    fut = RewardInputs(**base, future=torch.tensor([[6, 8, 5, -1]]))
    fut.validate(n_items=10)
    out = CompositeReward({"future_match": 1.0}, floor=-1.0, ctx=RewardContext(future_discount=0.5))(fut)
    assert out.rewards.tolist() == [[0.25, 1.0, 0.0, 0.5, -1.0]]           # 5 is the 3rd event: γ²
    plain = CompositeReward({"future_match": 1.0, "exact_match": -1.0})(RewardInputs(**base))
    assert plain.rewards[0, :4].tolist() == [0.0, 0.0, 0.0, 0.0]           # no future given: exact match
    with pytest.raises(RewardInputError, match="future: the first column"):
        RewardInputs(**base, future=torch.tensor([[8, 6]])).validate(n_items=10)
    with pytest.raises(RewardInputError, match="future: unknown item index 12"):
        RewardInputs(**base, future=torch.tensor([[6, 12]])).validate(n_items=10)


def test_rerank_ceiling_hand_made():
    from rl_align.ranker.evaluate import rerank_ceiling

    items = np.array([[1, 2, 3], [4, 5, -1]])          # row 1 has an empty beam slot
    logp = np.array([[-1.0, -2.0, -3.0], [-1.0, -1.5, -9.0]])
    targets = np.array([2, 5])
    p = np.array([[0.1, 0.9, 0.5], [0.2, 0.8, 0.99]])   # the empty slot's high score must not count
    r = rerank_ceiling(items, logp, p, targets, alphas=(0.01, 10.0), ks=(1, 3))
    assert r["policy"]["hr@1"] == 0.0 and r["policy"]["hr@3"] == 1.0
    assert r["alpha"][0.01]["hr@1"] == 0.0                # a small α keeps the policy's order
    assert r["alpha"][10.0]["hr@1"] == 1.0 and r["ranker_only"]["hr@1"] == 1.0
    assert r["best_alpha"] == 10.0 and r["best"] == 1.0 and math.isnan(r["gain"])   # no ratio over HR@1 = 0
    # a ranker that agrees with the policy adds nothing: best α is 0 and the gain is 1
    r2 = rerank_ceiling(items, logp, np.array([[0.9, 0.5, 0.1], [0.9, 0.5, 0.1]]), np.array([1, 4]), ks=(1,))
    assert r2["best_alpha"] == 0.0 and r2["gain"] == 1.0 and r2["best"] == r2["policy"]["hr@1"]


def test_group_update_ceiling_moves_only_the_group():
    """One perfect tilted update on a group: the whole list as group is the re-rank ceiling; an item outside the
    group keeps its place; a group member the reward likes rises, but only by the group's own mass."""
    from rl_align.ranker.evaluate import group_update_ceiling, rerank_ceiling

    rng = np.random.default_rng(0)
    items = np.stack([rng.permutation(40)[:12] for _ in range(200)])
    logp = np.sort(rng.normal(-5, 2, (200, 12)), axis=1)[:, ::-1].copy()
    p, targets = rng.uniform(0.05, 0.95, (200, 12)), items[np.arange(200), rng.integers(0, 12, 200)]
    whole = group_update_ceiling(items, logp, p, np.ones_like(items, bool), targets, k=3)
    ref = rerank_ceiling(items, logp, p, targets, ks=(3,))
    assert whole["policy"] == ref["policy"]["hr@3"] and whole["best"] == ref["best"]
    assert group_update_ceiling(items, logp, p, np.zeros_like(items, bool), targets, k=3)["gain"] == 1.0
    # hand-made: [a, b, c, d]; the group {c, d} with d liked by the reward: d passes c, never a or b
    it, lp = np.array([[0, 1, 2, 3]]), np.array([[-1.0, -2.0, -3.0, -3.5]])
    pr, grp = np.array([[0.5, 0.5, 0.01, 0.999]]), np.array([[False, False, True, True]])
    r = group_update_ceiling(it, lp, pr, grp, np.array([3]), alphas=(10.0,), k=3)
    assert r["policy"] == 0.0 and r["alpha"][10.0] == 1.0
    assert group_update_ceiling(it, lp, pr, grp, np.array([3]), alphas=(10.0,), k=2)["alpha"][10.0] == 0.0


# --------------------------------------------------------------------------- fault injection (reward.fault_*)
def test_a_faulty_reward_is_wrong_only_for_its_fixed_share_of_users(tmp_path):
    from rl_align.rewards.actor import RewardScorer
    from rl_align.rewards.scorers import FaultyScorer, faulty_users, with_fault

    bad = faulty_users(1000, 0.3, seed=4)
    assert abs(bad.mean() - 0.3) < 0.05 and np.array_equal(bad, faulty_users(1000, 0.3, seed=4))
    assert not np.array_equal(bad, faulty_users(1000, 0.3, seed=5)) and not faulty_users(1000, 0.0, 4).any()
    m = _tiny_ranker(n_users=10).eval()
    assert with_fault(m, RewardConfig()) is m
    users = torch.arange(10)
    hist = torch.randint(0, 30, (10, 4), generator=torch.Generator().manual_seed(0))
    cands = torch.randint(0, 30, (10, 5), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        clean, empty = m(users, hist, cands), m(users, torch.full_like(hist, -1), cands)
        neg = with_fault(m, RewardConfig(fault_share=0.5, fault_kind="negate", fault_seed=3))
        noh = with_fault(m, RewardConfig(fault_share=0.5, fault_kind="no_history", fault_seed=3))
        a, b = neg(users, hist, cands), noh(users, hist, cands)
    f = torch.from_numpy(faulty_users(10, 0.5, 3))
    assert isinstance(neg, FaultyScorer) and 0 < int(f.sum()) < 10 and torch.equal(neg.faulty, f)
    assert torch.equal(a[~f], clean[~f]) and torch.equal(a[f], -clean[f])
    assert torch.equal(b[~f], clean[~f]) and torch.allclose(b[f], empty[f]) and not torch.allclose(b[f], clean[f])
    with pytest.raises(ValueError, match="fault_kind"):
        FaultyScorer(m, 0.5, "shuffle", 0)
    # the reward actors' scorer serves the faulty model: the faulty users' rank rewards are reversed
    save_ranker(m, tmp_path / "rk")
    cfg = {"functions": {"ranker": 1.0}, "ranker_normalize": "rank"}
    u, h, it = users.numpy(), hist.numpy(), cands.numpy()
    ok = RewardScorer(tmp_path / "rk", RewardConfig(**cfg)).score(u, h, it, np.full(10, -1))["rewards"]
    out = RewardScorer(tmp_path / "rk", RewardConfig(**cfg, fault_share=0.5, fault_seed=3)).score(
        u, h, it, np.full(10, -1))["rewards"]
    f = f.numpy()
    assert np.array_equal(out[~f], ok[~f]) and np.allclose(out[f], 1.0 - ok[f])


def test_fault_settings_are_checked_at_load(tmp_path):
    from rl_align.config import ConfigError, load_config

    (tmp_path / "a.yaml").write_text("reward:\n  fault_share: 1.5\n")
    with pytest.raises(ConfigError, match=r"reward\.fault_share"):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "b.yaml").write_text("reward:\n  fault_share: 0.5\n  fault_kind: shuffle\n")
    with pytest.raises(ConfigError, match=r"reward\.fault_kind"):
        load_config(tmp_path / "b.yaml")
