"""Alignment objectives, GRPO pieces and the AdaGRPO gate — pure torch, no Ray."""

import math

import numpy as np
import pytest
import torch

from rl_align.algos import OBJECTIVES, LossInputs, build_objective
from rl_align.algos.gates import adagrpo_gate, group_entropy, gt_rank
from rl_align.algos.losses import aggregate, group_advantages, grpo_terms, k3_kl
from rl_align.config import AdaGrpoConfig, RlConfig


def test_group_advantages_and_zero_groups():
    r = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.5, 0.5, 0.5, 0.5]])
    adv, zero = group_advantages(r)
    assert adv[0].tolist() == pytest.approx([1, -1, -1, 1], abs=1e-4)
    assert adv[1].tolist() == [0, 0, 0, 0] and zero.tolist() == [False, True]
    with pytest.raises(ValueError, match="G ≥ 2"):
        group_advantages(torch.ones(3, 1))


def test_grpo_on_policy_gradient_is_advantage_weighted_logprob():
    logp = torch.tensor([[-1.0, -2.0], [-0.5, -0.1]], requires_grad=True)
    adv = torch.tensor([2.0, -1.0])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    t = grpo_terms(logp, logp.detach(), adv, mask)
    t.pg.sum().backward()
    # ratio = 1: d/dlogp of −ratio·A is −A on each real token, 0 on padding
    assert logp.grad.tolist() == [[-2.0, -2.0], [1.0, 0.0]]
    assert t.n_tokens.tolist() == [2, 1] and t.clip_frac.tolist() == [0, 0]


def test_grpo_clipping_stops_the_gradient_outside_the_trust_region():
    logp = torch.tensor([[0.0]], requires_grad=True)
    old = torch.tensor([[math.log(0.5)]])  # ratio 2 > 1.2
    t = grpo_terms(logp, old, torch.tensor([1.0]), torch.ones(1, 1), clip_eps=0.2)
    t.pg.sum().backward()
    assert logp.grad.item() == 0.0 and t.clip_frac.item() == 1.0
    assert t.pg.item() == pytest.approx(-1.2)


def test_k3_kl_is_nonnegative_and_zero_at_equality():
    a, b = torch.randn(100), torch.randn(100)
    assert (k3_kl(a, b) >= 0).all() and k3_kl(a, a).abs().max() == 0


def test_aggregation_levels():
    s, n, w = torch.tensor([4.0, 1.0]), torch.tensor([4.0, 1.0]), torch.tensor([1.0, 0.0])
    assert aggregate(s, n, w, "token").item() == pytest.approx(4.0 / 5.0)
    assert aggregate(s, n, w, "sequence").item() == pytest.approx(1.0 / 2.0)
    with pytest.raises(ValueError):
        aggregate(s, n, w, "prompt")


def test_gate_statistics_on_hand_made_groups():
    items = torch.tensor([[5, 6, 7, 5], [1, 1, 1, 1], [2, 3, 4, 9]])
    targets = torch.tensor([5, 1, 8])
    gt_lp = torch.tensor([-1.0, -0.1, -3.0])
    roll_lp = torch.tensor([[-1.0, -0.5, -2.0, -1.0], [-0.1] * 4, [-1.0, -2.0, -4.0, -5.0]])
    assert gt_rank(gt_lp, roll_lp, items, targets).tolist() == [2, 1, 3]
    h = group_entropy(items)
    assert h[1].item() == 0.0 and h[2].item() == pytest.approx(1.0)
    cfg = AdaGrpoConfig(difficulty="gt_rank", k_d=1, discriminability="frac_below", a=0.5)
    gt_s = torch.tensor([0.9, 0.5, 0.1])
    roll_s = torch.tensor([[0.9, 0.2, 0.95, 0.9], [0.5] * 4, [0.3, 0.4, 0.5, 0.0]])
    g = adagrpo_gate(cfg, gt_lp, roll_lp, items, targets, gt_s, roll_s)
    assert g.difficult.tolist() == [True, False, True]
    # sample 0: negatives 6 (0.2), 7 (0.95) → half below; sample 1: no negatives; sample 2: 1 of 4 below
    assert g.discriminable.tolist() == [True, False, False]
    assert g.gate.tolist() == [1.0, 0.0, 0.0]
    m = adagrpo_gate(AdaGrpoConfig(discriminability="margin", m=-0.1), gt_lp, roll_lp, items, targets, gt_s, roll_s)
    assert m.disc_value[0].item() == pytest.approx(0.9 - 0.95) and m.discriminable[0]


def test_a_reward_that_ties_y_star_with_every_negative_is_not_discriminable():
    """Ties count half in frac_below, so a constant reward would reach a = 0.5; the gate refuses it (and a margin
    of 0) unless some negative is scored apart from y*."""
    items = torch.tensor([[1, 2, 3, 4], [1, 2, 3, 4], [1, 2, 3, 4]])
    targets = torch.tensor([9, 9, 9])
    gt_s = torch.tensor([0.5, 0.5, 0.5])
    roll_s = torch.tensor([[0.5] * 4, [0.5, 0.5, 0.5, 0.1], [0.5, 0.5, 0.9, 0.9]])
    lp = torch.zeros(3, 4)
    for cfg in (AdaGrpoConfig(k_d=1, discriminability="frac_below", a=0.5),
                AdaGrpoConfig(k_d=1, discriminability="margin", m=0.0)):
        g = adagrpo_gate(cfg, torch.full((3,), -5.0), lp, items, targets, gt_s, roll_s)
        assert g.difficult.all()
        assert g.discriminable.tolist() == [False, True, False]   # all tied; one apart, above; y* below
    frac = adagrpo_gate(AdaGrpoConfig(a=0.5), torch.full((3,), -5.0), lp, items, targets, gt_s, roll_s).disc_value
    assert frac.tolist() == pytest.approx([0.5, 0.625, 0.25])   # the statistic is unchanged; only the verdict


def test_random_negatives_never_draw_y_star_and_repeat_per_seed():
    from rl_align.algos.gates import random_negatives

    t = np.array([0, 5, 9, -1])
    a = random_negatives(t, 10, 500, seed=3)
    assert a.shape == (4, 500) and a.dtype == np.int64 and ((a >= 0) & (a < 10)).all()
    assert not (a[:3] == t[:3, None]).any() and (a[3] == 0).any()        # a serving prompt may draw any item
    assert set(a[1].tolist()) == set(range(10)) - {5}                     # every other item, uniformly
    assert np.array_equal(a, random_negatives(t, 10, 500, seed=3))
    assert not np.array_equal(a, random_negatives(t, 10, 500, seed=4))


def test_popularity_drawn_sanity_items_follow_the_weights_and_catch_a_reward_that_knows_only_popularity():
    """``weights``: draws in proportion to them, never y* nor an item of weight 0, the same per seed; a reward that
    scores items by popularity alone passes the uniform sanity test on popular targets and about half fail it
    against popularity-matched items; bad weights are refused in one line."""
    from rl_align.algos.gates import random_negatives

    rng = np.random.default_rng(0)
    pop = np.concatenate([rng.zipf(1.6, 1000).clip(max=5000), np.zeros(50)]).astype(float)   # 50 cold items
    t = rng.choice(1000, 400, p=pop[:1000] / pop.sum())          # targets drawn as users click: popular ones
    t[-1] = int(pop.argmax())
    a = random_negatives(t, pop.size, 64, seed=1, weights=pop)
    assert a.shape == (400, 64) and a.dtype == np.int64 and not (a == t[:, None]).any()
    assert (a < 1000).all()                                       # weight 0: never drawn
    share = np.bincount(a[:-1].ravel(), minlength=pop.size) / a[:-1].size
    top = np.argsort(-pop)[:5]
    np.testing.assert_allclose(share[top], pop[top] / pop.sum(), rtol=0.15)
    assert np.array_equal(a, random_negatives(t, pop.size, 64, seed=1, weights=pop))
    cfg = AdaGrpoConfig(discriminability="none", difficulty="none", sanity_negatives=64, sanity_a=0.5)
    score = torch.from_numpy(np.log1p(pop))                        # the reward knows popularity, nothing else
    items, lp = torch.zeros(400, 2, dtype=torch.long), torch.zeros(400, 2)
    for w, lo, hi in ((None, 0.9, 1.0), (pop, 0.3, 0.7)):
        neg = torch.from_numpy(random_negatives(t, pop.size, 64, seed=2, weights=w))
        g = adagrpo_gate(cfg, torch.zeros(400), lp, items, torch.from_numpy(t), score[t], score[items], score[neg])
        assert lo <= float(g.sane.double().mean()) <= hi
    with pytest.raises(ValueError, match=r"sanity weights: expected \(3,\) finite, ≥ 0 and not all 0"):
        random_negatives(t[:2], 3, 4, seed=0, weights=np.array([0.0, -1.0, 2.0]))
    with pytest.raises(ValueError, match=r"expected \(4,\) .* got shape \(3,\)"):   # not the catalog's size
        random_negatives(t[:2], 4, 4, seed=0, weights=np.array([1.0, 1.0, 2.0]))


def test_the_sanity_test_refuses_a_reward_that_puts_y_star_below_random_items():
    """An inverted reward passes frac_below against the policy's rollouts (which it dislikes as much as y*) but not
    against random items; serving prompts and the test switched off pass."""
    items = torch.tensor([[1, 2, 3, 4]] * 3)
    targets = torch.tensor([9, 9, -1])
    gt_s = torch.tensor([0.9, 0.2, 0.0])
    roll_s = torch.tensor([[0.5, 0.6, 0.95, 0.1], [0.1, 0.15, 0.3, 0.05], [0.1] * 4])   # y* above half: both
    rand = torch.tensor([[0.1, 0.2, 0.3, 0.95], [0.5, 0.6, 0.7, 0.1], [0.9] * 4])
    lp = torch.zeros(3, 4)
    off = adagrpo_gate(AdaGrpoConfig(a=0.5), torch.full((3,), -5.0), lp, items, targets, gt_s, roll_s, rand)
    assert off.gate.tolist() == [1.0, 1.0, 1.0] and off.sanity_value.isnan().all()
    cfg = AdaGrpoConfig(a=0.5, sanity_negatives=4, sanity_a=0.5)
    g = adagrpo_gate(cfg, torch.full((3,), -5.0), lp, items, targets, gt_s, roll_s, rand)
    assert g.discriminable.tolist() == [True, True, True]
    assert g.sanity_value[:2].tolist() == pytest.approx([0.75, 0.25]) and g.sanity_value[2].isnan()
    assert g.sane.tolist() == [True, False, True] and g.gate.tolist() == [1.0, 0.0, 1.0]


def _inputs(B=3, G=4, T=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    roll_lp = (-torch.rand(B * G, T, generator=g)).requires_grad_()
    return LossInputs(
        gt_logp=(-torch.rand(B, T, generator=g)).requires_grad_(), gt_mask=torch.ones(B, T),
        roll_logp=roll_lp, roll_old_logp=roll_lp.detach().clone(), roll_mask=torch.ones(B * G, T),
        rewards=torch.rand(B, G, generator=g), rollout_items=torch.randint(0, 20, (B, G), generator=g),
        targets=torch.randint(0, 20, (B,), generator=g), target_scores=torch.rand(B, generator=g),
        rollout_scores=torch.rand(B, G, generator=g))


def test_objectives_compose_as_the_formulas_say():
    assert set(OBJECTIVES.names()) == {"nll", "grpo", "mixture", "adagrpo", "tilted", "dpo", "sdpo", "simpo",
                                      "rad_dpo"}
    x = _inputs()
    nll, _ = build_objective(RlConfig(algo="nll"))(x)
    grpo, _ = build_objective(RlConfig(algo="grpo"))(x)
    mix, _ = build_objective(RlConfig(algo="mixture", lam=0.3))(x)
    assert mix.item() == pytest.approx(nll.item() + 0.3 * grpo.item(), rel=1e-6)
    # gate always open → the mixture; always closed → pure NLL
    open_ = RlConfig(algo="adagrpo", lam=0.3, adagrpo=AdaGrpoConfig(difficulty="none", discriminability="none"))
    ada, m = build_objective(open_)(x)
    assert ada.item() == pytest.approx(mix.item(), rel=1e-6) and m["admission_rate"] == 1.0
    shut = RlConfig(algo="adagrpo", lam=0.3, adagrpo=AdaGrpoConfig(difficulty="entropy", h_d=1.0))
    ada0, m0 = build_objective(shut)(x)
    assert ada0.item() == pytest.approx(nll.item(), rel=1e-6) and m0["admission_rate"] == 0.0
    assert m0["fail_difficulty"] == 1.0


def test_negative_advantage_scale_damps_only_the_below_mean_rollouts():
    x = _inputs()
    plain = build_objective(RlConfig(algo="grpo"))
    pos_only = build_objective(RlConfig(algo="grpo", negative_advantage_scale=0.0))
    half = build_objective(RlConfig(algo="grpo", negative_advantage_scale=0.5))
    # on policy (ratio 1), sequence aggregation: ∂loss/∂logπ(token) = −A_i / (N·T), so the gradients give back A
    def grads(obj):
        roll = x.roll_logp.detach().clone().requires_grad_()
        loss, _ = obj(LossInputs(**{**x.__dict__, "roll_logp": roll}))
        loss.backward()
        return -roll.grad.sum(1) * roll.numel()

    a, p, h = grads(plain), grads(pos_only), grads(half)
    assert (a < 0).any() and (a > 0).any()
    assert torch.allclose(p, a.clamp(min=0), atol=1e-5)
    assert torch.allclose(h, torch.where(a < 0, 0.5 * a, a), atol=1e-5)


def test_inject_targets_replaces_the_last_rollout_of_groups_that_missed_y_star():
    import numpy as np

    from rl_align.algos.injection import inject_targets
    from rl_align.sid.catalog import EOS, PAD

    B, G, T = 3, 4, 3
    seqs = np.arange(B * G * T).reshape(B, G, T) + 10
    lps = -np.ones((B, G, T), np.float32)
    items = np.array([[5, 6, 7, 8], [1, 2, 3, 4], [9, 9, 9, 9]])
    targets = np.array([7, 0, -1])                       # hit / miss / unknown target
    tt = np.array([[40, 41, 42, EOS], [50, 51, 52, EOS], [60, 61, 62, EOS]])
    s2, l2, i2, inj = inject_targets(seqs, lps, items, targets, tt)
    assert s2.shape == (B, G, 4) and inj.tolist() == [[False] * 4, [False, False, False, True], [False] * 4]
    assert i2[1].tolist() == [1, 2, 3, 0] and i2[0].tolist() == items[0].tolist() and i2[2].tolist() == [9] * 4
    assert s2[1, 3].tolist() == [50, 51, 52, EOS] and l2[1, 3].tolist() == [0, 0, 0, 0]
    assert s2[0, 0].tolist() == [*seqs[0, 0].tolist(), PAD] and (l2[0, :, :T] == -1).all()
    assert items[1, 3] == 4                              # inputs untouched


def test_tilted_target_is_the_reward_tilted_reference_over_valid_rollouts():
    from rl_align.algos.tilted import tilted_targets

    ref = torch.log(torch.tensor([[0.5, 0.3, 0.2], [0.6, 0.4, 0.0001]]))
    p = torch.tensor([[0.2, 0.5, 0.5], [0.9, 0.1, 0.5]])
    valid = torch.tensor([[True, True, True], [True, True, False]])
    q = tilted_targets(ref, p, valid, alpha=1.0)
    odds = p / (1 - p)  # α = 1: q ∝ π_ref · p / (1 − p)
    want = (ref.exp() * odds) * valid
    torch.testing.assert_close(q, want / want.sum(1, keepdim=True))
    assert q[1, 2] == 0 and torch.allclose(q.sum(1), torch.ones(2))
    none = tilted_targets(ref, p, torch.zeros_like(valid), alpha=1.0)
    assert (none == 0).all()  # a group without a valid rollout has no target


def test_topk_target_is_uniform_over_the_tilted_top_k():
    from rl_align.algos.tilted import topk_targets

    q = torch.tensor([[0.5, 0.1, 0.3, 0.1, 0.0], [0.7, 0.3, 0.0, 0.0, 0.0], [0.0] * 5])
    t = topk_targets(q, 2)
    torch.testing.assert_close(t, torch.tensor([[0.5, 0, 0.5, 0, 0], [0.5, 0.5, 0, 0, 0], [0.0] * 5]))
    # fewer positive members than k: only those (an invalid rollout, q = 0, never becomes a target)
    torch.testing.assert_close(topk_targets(q[1:2], 3), torch.tensor([[0.5, 0.5, 0, 0, 0]]))
    assert topk_targets(q, 10).shape == q.shape  # k above G is all of the group


def test_tilted_loss_is_minimal_when_the_policy_matches_the_tilted_target():
    from rl_align.algos.tilted import group_cross_entropy

    g = torch.Generator().manual_seed(1)
    q = torch.softmax(torch.randn(4, 6, generator=g), 1)
    valid = torch.ones(4, 6, dtype=torch.bool)
    at_q = (q.log() + 3.0).requires_grad_()  # any per-group shift of log q: the same group distribution
    group_cross_entropy(at_q, q, valid).sum().backward()
    assert at_q.grad.abs().max() < 1e-6
    off = torch.randn(4, 6, generator=g).requires_grad_()
    ce = group_cross_entropy(off, q, valid)
    ce.sum().backward()
    assert (ce > group_cross_entropy(q.log(), q, valid)).all() and off.grad.abs().max() > 1e-3


def test_tilted_objective_pushes_towards_the_best_scored_rollout_and_its_gate_can_shut_it():
    x = _inputs(B=2, G=4, T=3)
    x.roll_ref_logp = x.roll_old_logp.clone()
    x.rollout_scores = torch.tensor([[0.1, 0.9, 0.1, 0.1], [0.1, 0.1, 0.1, 0.9]])
    x.rollout_items[0, 2] = -1  # an invalid rollout takes no part
    nll, _ = build_objective(RlConfig(algo="nll"))(x)
    loss, m = build_objective(RlConfig(algo="tilted", tilt_alpha=20.0, lam=1.0))(x)
    assert loss.item() > nll.item() and 0 <= m["tilt_top1_agree"] <= 1 and m["tilt_kl"] >= -1e-9
    loss.backward()
    g = x.roll_logp.grad.sum(1).view(2, 4)
    assert g[0, 1] < 0 and g[1, 3] < 0  # descent raises the log-prob of the rollout the reward prefers
    assert g[0, 2] == 0  # invalid
    x.roll_logp.grad = None
    shut = RlConfig(algo="tilted", tilt_gate=True, adagrpo=AdaGrpoConfig(difficulty="entropy", h_d=1.0))
    loss0, m0 = build_objective(shut)(x)
    assert loss0.item() == pytest.approx(nll.item(), rel=1e-6) and m0["admission_rate"] == 0.0


def test_prompts_without_y_star_train_on_the_reward_alone():
    """rl.serving_prompts: a row with targets == -1 and an empty continuation adds nothing to NLL (the mean is over
    the rows that have y*), its gate tests that need y* pass, and its GRPO term is the same as with y*."""
    x = _inputs(B=4)
    x.targets[2:] = -1
    x.gt_mask[2:] = 0
    ref = _inputs(B=4)
    nll, _ = build_objective(RlConfig(algo="nll"))(x)
    per = -(ref.gt_logp[:2] * ref.gt_mask[:2]).sum(1) / ref.gt_mask[:2].sum(1)
    assert nll.item() == pytest.approx(per.mean().item(), rel=1e-6)
    nll.backward()
    assert x.gt_logp.grad[2:].abs().sum() == 0 and x.gt_logp.grad[:2].abs().sum() > 0
    cfg = AdaGrpoConfig(difficulty="gt_rank", k_d=1, discriminability="frac_below", a=1.0)
    gt_lp = torch.tensor([0.0, 0.0, 0.0, 0.0])            # y* outranks every rollout: not difficult
    roll_lp = torch.full((4, 4), -1.0)
    items = torch.tensor([[1, 2, 3, 4]] * 4)
    g = adagrpo_gate(cfg, gt_lp, roll_lp, items, x.targets, torch.zeros(4), torch.ones(4, 4))
    assert g.gate.tolist() == [0.0, 0.0, 1.0, 1.0]        # rows 2-3 have no y*: the y* tests pass
    assert g.difficulty_value[2:].isnan().all() and g.disc_value[2:].isnan().all()   # no statistic to log
    assert not g.difficulty_value[:2].isnan().any() and not g.disc_value[:2].isnan().any()
    grpo = build_objective(RlConfig(algo="grpo"))
    assert grpo(x)[0].item() == pytest.approx(grpo(ref)[0].item(), rel=1e-6)   # GRPO never reads y*
    ent = adagrpo_gate(AdaGrpoConfig(difficulty="entropy", h_d=1.0), gt_lp, roll_lp, items, x.targets,
                       torch.zeros(4), torch.ones(4, 4))
    assert ent.gate.tolist() == [0.0] * 4                 # the entropy test needs no y* and still applies


def test_serving_prompts_are_refused_where_y_star_is_needed():
    from rl_align.algos.objectives import OBJECTIVES

    for algo in ("nll", "dpo", "sdpo", "rad_dpo"):
        errs = OBJECTIVES.get(algo).config_errors(RlConfig(algo=algo, serving_prompts=0.5))
        assert any(k == "serving_prompts" for k, _ in errs), algo
    for algo in ("grpo", "mixture", "adagrpo", "tilted"):
        assert OBJECTIVES.get(algo).config_errors(RlConfig(algo=algo, serving_prompts=0.5)) == []
    assert ("inject_target", "needs y* in every prompt; rl.serving_prompts > 0 adds prompts without it") in \
        RlConfig(serving_prompts=0.5, inject_target=True).value_errors()


def test_tilted_rewards_rank_each_group_by_the_reference_plus_the_reward_logit():
    from rl_align.algos.objectives import tilted_rewards

    ref = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))        # the reference prefers member 0
    scores = torch.tensor([[0.1, 0.3, 0.9, 0.6]])                  # the ranker prefers member 2
    x = LossInputs(gt_logp=torch.zeros(1, 1), gt_mask=torch.ones(1, 1), roll_mask=torch.ones(4, 1),
                   roll_ref_logp=ref.reshape(4, 1), rewards=torch.zeros(1, 4), rollout_scores=scores,
                   rollout_items=torch.tensor([[3, 1, 2, -1]]))
    # α = 1: log π_ref + logit r = [-2.89, -2.05, 0.30, -2.59]; the invalid member 3 gets 0 and is not ranked
    assert tilted_rewards(x, 1.0).tolist() == [[0.0, 0.5, 1.0, 0.0]]
    # a tiny α leaves the reference's own order; a large one the ranker's
    assert tilted_rewards(x, 1e-4).tolist() == [[1.0, 0.5, 0.0, 0.0]]
    assert tilted_rewards(x, 50.0).tolist() == [[0.0, 0.5, 1.0, 0.0]]


def test_reward_tilt_replaces_the_grpo_rewards_and_asks_for_a_reference():
    from rl_align.algos.objectives import OBJECTIVES, tilted_rewards

    x = _inputs()
    x.roll_ref_logp = x.roll_old_logp.clone()
    cfg = RlConfig(algo="grpo", reward_tilt=1.0)
    obj = build_objective(cfg)
    assert obj.needs_reference and not build_objective(RlConfig(algo="grpo")).needs_reference
    tilted, m = obj(x)
    plain, _ = build_objective(RlConfig(algo="grpo"))(LossInputs(**{**x.__dict__, "rewards": tilted_rewards(x, 1.0)}))
    assert tilted.item() == pytest.approx(plain.item(), rel=1e-6)
    assert m["reward_mean"] == pytest.approx(float(tilted_rewards(x, 1.0).mean()))
    for algo in ("nll", "tilted", "dpo"):
        assert any(k == "reward_tilt" for k, _ in OBJECTIVES.get(algo).config_errors(RlConfig(algo=algo,
                                                                                              reward_tilt=1.0)))
    for algo in ("grpo", "mixture", "adagrpo"):
        assert OBJECTIVES.get(algo).config_errors(RlConfig(algo=algo, reward_tilt=1.0)) == []


def test_policy_entropy_reads_log_probs_of_distinct_valid_items_and_needs_no_y_star():
    from rl_align.algos.gates import policy_entropy

    items = torch.tensor([[1, 2, 3, 4], [1, 2, 3, 4], [5, 5, -1, -1], [-1, -1, -1, -1], [7, 7, 8, 8]])
    lp = torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, -30.0, -30.0, -30.0], [-1.0, -1.0, -2.0, -2.0],
                       [-1.0] * 4, [-1.0, -1.0, -1.0, -1.0]])
    h = policy_entropy(lp, items)
    assert h[0].item() == pytest.approx(1.0)              # four distinct beams of equal mass: uniform over G
    assert h[1].item() < 1e-9                              # one beam holds the mass, although all four are distinct
    assert h[2].item() == 0.0 and h[3].item() == 0.0       # one valid item; no valid item
    assert h[4].item() == pytest.approx(0.5)               # duplicates count once: two items of equal mass, log 2/log 4
    targets = torch.tensor([1, -1, 5, 9, -1])              # rows 1 and 4 are serving prompts
    cfg = AdaGrpoConfig(difficulty="policy_entropy", h_d=0.4, discriminability="none")
    g = adagrpo_gate(cfg, torch.zeros(5), lp, items, targets, torch.zeros(5), torch.zeros(5, 4))
    assert g.gate.tolist() == [1.0, 0.0, 0.0, 0.0, 1.0]   # the test applies to serving prompts too
    assert g.difficulty_value.isnan().sum() == 0
