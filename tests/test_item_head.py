"""The item head beside the SID policy (``policy.item_head``): its training targets, its checkpoint file, the fused
ranking, the config rules, and a real Ray SFT + evaluation run with it."""

import copy
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from rl_align.config import ConfigError, PolicyConfig, RunConfig, from_dict
from rl_align.eval.evaluate import EvalSet, metrics, rank_with_engine
from rl_align.eval.hybrid import choose_beta, fused_candidates, head_logprobs, hybrid_rankings, valid_record
from rl_align.policy.data import events_to_items, windows_to_batch
from rl_align.policy.item_head import (
    ATTR,
    FILE,
    TRUNK,
    attach_item_head,
    first_code_positions,
    future_targets,
    item_head_logp,
    item_head_loss,
    item_head_nll,
    item_head_of,
    load_item_head,
    seen_before,
    target_items,
)
from rl_align.policy.logprobs import item_logprobs
from rl_align.policy.model import build_policy, load_policy, save_policy
from rl_align.rollouts.torch_engine import TorchEngine
from rl_align.sid import SidCatalog, SidCodes


@pytest.fixture(scope="module")
def small():
    """24 items with unique 2-level codes, a tiny Llama with a free item head."""
    codes = np.array([[i // 6, i % 6] for i in range(24)])
    cat = SidCatalog([f"i{k}" for k in range(24)], SidCodes(codes, np.full(24, 2), [4, 6]))
    model = build_policy(PolicyConfig(hidden_size=64, num_layers=1, num_heads=1, intermediate_size=128), cat, 6)
    head = attach_item_head(model, cat, "free")
    with torch.no_grad():  # a head that is not near-uniform, so the fused orders differ from the beam's
        head.items.weight.normal_(0, 1.0, generator=torch.Generator().manual_seed(1))
    return cat, model.eval(), head


def test_targets_line_up_with_first_code_positions(small):
    cat, _, _ = small
    windows = np.array([[3, 5, 7, 9], [-1, 2, -1, 11], [20, 21, 22, -1]])
    n_target = np.array([2, 1, 3])
    b = windows_to_batch(windows, cat, n_target)
    at = first_code_positions(b["labels"], cat)
    assert target_items(windows, n_target).tolist() == [7, 9, 11, 20, 21, 22]
    # the token after each marked position is the first code of the matching target, in the same order
    nxt = b["labels"][:, 1:][at[:, :-1]]
    assert nxt.tolist() == [cat.item_tokens(i)[0] for i in (7, 9, 11, 20, 21, 22)]
    assert target_items(windows, None).tolist() == [3, 5, 7, 9, 2, 11, 20, 21, 22]


def test_future_targets_read_the_users_later_training_items_only():
    # two users: events 0-5 (items 10..15; events 4 and 5 are valid / test) and 6-10 (items 20..24; 9, 10 held out)
    seq_items = np.array([10, 11, 12, 13, 14, 15, 20, 21, 22, 23, 24])
    offsets = np.array([0, 6, 11])
    events = np.array([[0, 1, 2, 3], [-1, 6, 7, 8]])
    n_target = np.array([2, 3])
    fut = future_targets(events, n_target, seq_items, offsets, 3)
    assert fut[:, 0].tolist() == target_items(events_to_items(events, seq_items), n_target).tolist()
    assert fut.tolist() == [[12, 13, -1], [13, -1, -1], [20, 21, 22], [21, 22, -1], [22, -1, -1]]
    assert future_targets(events, n_target, seq_items, offsets, 1).tolist() == [[12], [13], [20], [21], [22]]


def test_future_loss_is_the_mean_over_each_positions_items(small):
    cat, model, head = small
    windows = np.array([[3, 5, 7, 9], [1, 2, 10, 11]])
    b = windows_to_batch(windows, cat, np.array([2, 2]))
    labels = b.pop("labels")
    with torch.no_grad():
        h = model(**b, output_hidden_states=True).hidden_states[-1]
        first = target_items(windows, np.array([2, 2]))  # [7, 9, 10, 11]
        plain = item_head_loss(head, h, labels, first, cat)
        assert torch.allclose(item_head_loss(head, h, labels, first[:, None], cat), plain)
        fut = torch.tensor([[7, 9], [9, -1], [10, 11], [11, -1]])
        logp = torch.log_softmax(head(h[first_code_positions(labels, cat)]).float(), -1)
        want = -(logp[0, 7] + logp[0, 9]) / 2 - logp[1, 9] - (logp[2, 10] + logp[2, 11]) / 2 - logp[3, 11]
        assert torch.allclose(item_head_loss(head, h, labels, fut, cat), want / 4)


def test_seen_mask_leaves_the_users_earlier_items_out_of_the_softmax(small):
    cat, model, head = small
    # user 0: events 0-5 (items 3, 5, 7, 9, 4, 6); user 1: events 6-11 (items 1, 2, 10, 11, 2, 8): item 2 repeats
    seq_items = np.array([3, 5, 7, 9, 4, 6, 1, 2, 10, 11, 2, 8])
    offsets = np.array([0, 6, 12])
    events = np.array([[0, 1, 2, 3], [6, 7, 8, 9]])
    n_target = np.array([2, 3])
    items = events_to_items(events, seq_items)
    targets = target_items(items, n_target)  # [7, 9, 2, 10, 11]
    rows, cols = seen_before(events, n_target, seq_items, offsets, targets)
    got = {r: sorted(cols[rows == r].tolist()) for r in range(5)}
    assert got == {0: [3, 5], 1: [3, 5, 7], 2: [1], 3: [1, 2], 4: [1, 2, 10]}
    # a repeated item stays in the row that must predict it: user 1's event 10 (item 2) after event 7 (item 2)
    ev = np.array([[7, 8, 9, 10]])
    r2, c2 = seen_before(ev, np.array([1]), seq_items, offsets, torch.tensor([2]))
    assert sorted(c2.tolist()) == [1, 10, 11] and r2.tolist() == [0, 0, 0]
    # future targets (T, k) with -1 padding: the row's own items stay in, -1 leaves nothing out
    r3, c3 = seen_before(events, n_target, seq_items, offsets, torch.tensor([[7, 3], [9, -1], [2, 10], [10, 11],
                                                                             [11, -1]]))
    assert {r: sorted(c3[r3 == r].tolist()) for r in range(5)}[0] == [5]
    b = windows_to_batch(items, cat, n_target)
    labels = b.pop("labels")
    with torch.no_grad():
        h = model(**b, output_hidden_states=True).hidden_states[-1]
        full = item_head_logp(head, h, labels, cat)
        masked = item_head_logp(head, h, labels, cat, seen=(rows, cols))
        assert torch.isinf(masked[rows, cols]).all() and torch.isfinite(masked[0, 7])
        keep = torch.ones_like(full, dtype=torch.bool)
        keep[rows, cols] = False
        # the masked row is the softmax over the items left in: log p_full - log of their full-softmax mass
        want = full - torch.logsumexp(full.masked_fill(~keep, float("-inf")), 1, keepdim=True)
        assert torch.allclose(masked[keep], want[keep], atol=1e-5)
        assert item_head_nll(masked, targets) < item_head_nll(full, targets)
        # -1 padding of future targets clamps to item 0; a left-out item 0 must not turn the loss to nan
        r0 = torch.cat([rows, torch.arange(5)])
        c0 = torch.cat([cols, torch.zeros(5, dtype=torch.long)])
        fut = torch.tensor([[7, -1], [9, -1], [2, -1], [10, -1], [11, -1]])
        assert torch.isfinite(item_head_nll(item_head_logp(head, h, labels, cat, seen=(r0, c0)), fut))
    out = model(**b, output_hidden_states=True)
    item_head_nll(item_head_logp(head, out.hidden_states[-1], labels, cat, seen=(rows, cols)), targets).backward()
    grad = head.items.weight.grad
    assert torch.isfinite(grad).all() and grad[5].abs().sum() > 0  # 5 is left out of rows 0-1 only
    model.zero_grad()


def test_head_loss_trains_head_and_trunk(small):
    cat, model, head = small
    windows = np.array([[3, 5, 7, 9], [1, 2, 10, 11]])
    b = windows_to_batch(windows, cat, np.array([2, 2]))
    labels = b.pop("labels")
    model.zero_grad()
    out = model(**b, output_hidden_states=True)
    loss = item_head_loss(head, out.hidden_states[-1], labels, target_items(windows, np.array([2, 2])), cat)
    loss.backward()
    assert torch.isfinite(loss) and loss.item() > 0
    assert head.items.weight.grad.abs().sum() > 0 and head.proj.weight.grad.abs().sum() > 0
    assert model.model.layers[0].mlp.up_proj.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="first-code positions but 3 target items"):
        item_head_loss(head, out.hidden_states[-1], labels, torch.tensor([7, 9, 10]), cat)
    model.zero_grad()


def test_checkpoint_keeps_the_head_out_of_the_hf_weights(small, tmp_path):
    cat, model, head = small
    save_policy(model, tmp_path / "p", cat)
    hf = load_file(str(tmp_path / "p" / "model.safetensors"))
    assert not any(k.startswith(ATTR) for k in hf)
    assert json.loads((tmp_path / "p" / "rl_align_policy.json").read_text())["item_head"] == FILE
    back = load_policy(tmp_path / "p", cat)
    assert item_head_of(back) is None
    loaded = load_item_head(tmp_path / "p", cat, 64)
    for k, v in head.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)
    with pytest.raises(ValueError, match=r"expected an item table of shape \(24, 32\)"):
        load_item_head(tmp_path / "p", cat, 32)
    # a policy without a head writes neither the file nor the key
    plain = build_policy(PolicyConfig(hidden_size=64, num_layers=1, num_heads=1, intermediate_size=128), cat, 6)
    save_policy(plain, tmp_path / "q", cat)
    assert not (tmp_path / "q" / FILE).exists() and load_item_head(tmp_path / "q", cat, 64) is None
    assert "item_head" not in json.loads((tmp_path / "q" / "rl_align_policy.json").read_text())
    # an aligned policy (no head of its own) saved with its starting policy's head: copied unchanged
    save_policy(plain, tmp_path / "r", cat, frozen_item_head=tmp_path / "p")
    assert (tmp_path / "r" / FILE).read_bytes() == (tmp_path / "p" / FILE).read_bytes()
    assert json.loads((tmp_path / "r" / "rl_align_policy.json").read_text())["item_head"] == FILE
    save_policy(plain, tmp_path / "s", cat, frozen_item_head=tmp_path / "q")  # a start without a head: none
    assert not (tmp_path / "s" / FILE).exists()


def test_a_frozen_head_keeps_its_trunk(small, tmp_path):
    """``rl.item_head_trunk: sft``: an aligned policy saved with its starting policy's head keeps that policy's trunk
    (item_head/trunk). The loaded head scores from it, so moving the aligned policy leaves the head's log-probs as
    they were; a later save from the aligned directory carries that trunk, not the newer policy's."""
    cat, model, head = small
    save_policy(model, tmp_path / "p", cat)  # the starting policy and its head
    aligned = load_policy(tmp_path / "p", cat)
    with torch.no_grad():  # alignment moved every weight
        g = torch.Generator().manual_seed(3)
        for w in aligned.parameters():
            w.add_(0.05 * torch.randn(w.shape, generator=g))
    save_policy(aligned, tmp_path / "a", cat, frozen_item_head=tmp_path / "p", freeze_trunk=True)
    start = (tmp_path / "p" / "model.safetensors").read_bytes()
    assert (tmp_path / "a" / TRUNK / "model.safetensors").read_bytes() == start
    assert (tmp_path / "a" / FILE).read_bytes() == (tmp_path / "p" / FILE).read_bytes()
    hist, users = np.array([[0, 3, 7], [5, -1, -1], [11, 12, -1]]), np.array([0, 1, 2])
    want = head_logprobs(model, head, cat, hist, users)  # the head on the policy it was trained with
    frozen = load_item_head(tmp_path / "a", cat, 64)
    assert frozen.trunk is not None
    assert torch.allclose(head_logprobs(aligned, frozen, cat, hist, users), want, atol=1e-5)
    start_trunk = load_item_head(tmp_path / "p", cat, 64, own_trunk=True)  # what the controller validates with
    assert torch.allclose(head_logprobs(aligned, start_trunk, cat, hist, users), want, atol=1e-5)
    moved = load_item_head(tmp_path / "p", cat, 64)  # no trunk of its own: it reads the aligned policy's state
    assert moved.trunk is None
    assert not torch.allclose(head_logprobs(aligned, moved, cat, hist, users), want, atol=1e-3)
    save_policy(aligned, tmp_path / "b", cat, frozen_item_head=tmp_path / "a")  # the head's trunk goes with it
    assert (tmp_path / "b" / TRUNK / "model.safetensors").read_bytes() == start
    save_policy(aligned, tmp_path / "c", cat, frozen_item_head=tmp_path / "p")  # the default keeps no trunk
    assert not (tmp_path / "c" / TRUNK).exists()


def test_free_sid_vectors_share_their_codes_and_round_trip(small, tmp_path):
    cat, _, _ = small
    model = build_policy(PolicyConfig(hidden_size=64, num_layers=1, num_heads=1, intermediate_size=128), cat, 6)
    head = attach_item_head(model, cat, "free_sid")
    assert head.codes.tolist()[7] == [1, 4 + 1, -1]  # item 7 = (1, 1): level 0 code 1, level 1 code 4 + 1, <eos>
    with torch.no_grad():
        head.items.weight.zero_()
        head.code_emb.weight.normal_(0, 1.0, generator=torch.Generator().manual_seed(2))
    v = head.item_vectors()  # with free vectors at zero, items of one level-0 code differ by their level-1 code only
    assert torch.allclose(v[7] - v[8], head.code_emb.weight[5] - head.code_emb.weight[6])
    assert torch.allclose(v[7] - v[13], head.code_emb.weight[1] - head.code_emb.weight[2])
    h = torch.randn(3, 64)
    assert torch.allclose(head(h), h @ v.T)  # the projection starts as the identity
    save_policy(model, tmp_path / "p", cat)
    loaded = load_item_head(tmp_path / "p", cat, 64)
    assert loaded.code_emb is not None and torch.equal(loaded(h), head.eval()(h))
    other = SidCatalog([f"i{k}" for k in range(24)], SidCodes(np.array([[i % 4, i // 4] for i in range(24)]),
                                                              np.full(24, 2), [4, 6]))
    with pytest.raises(ValueError, match="trained on other SID codes than this catalog's"):
        load_item_head(tmp_path / "p", other, 64)


def _evalset():
    hist = np.array([[0, 1, 2, 3], [-1, 5, 6, 7], [8, 9, 10, 11], [-1, -1, 12, 13]])
    seen = hist.copy()
    return EvalSet(users=np.arange(4), targets=np.array([4, 15, 20, 2]), history=hist, seen=seen)


def test_fused_ranking_is_log_pi_plus_beta_head(small):
    cat, model, head = small
    es = _evalset()
    beam = np.array([[4, 14, 15, -1, -1], [15, 16, 1, -1, -1], [20, 21, -1, -1, -1], [2, 3, -1, -1, -1]])
    beam_lp = item_logprobs(model, cat, es.history, es.users, beam)
    fused, dense = hybrid_rankings(model, head, cat, es, beam, beam_lp, union=3, betas=[0.0, 1.0, 1000.0],
                                   batch_size=3)
    d = head_logprobs(model, head, cat, es.history, es.users).numpy()
    for r in range(4):
        seen = set(es.seen[r][es.seen[r] >= 0].tolist())
        unseen = [i for i in np.argsort(-d[r], kind="stable") if i not in seen]
        assert dense[r].tolist() == unseen[:5]                                # the head's own top, seen excluded
        cand = list(dict.fromkeys([i for i in beam[r] if i >= 0] + unseen[:3]))  # beam ∪ head top 3, no repeats
        lp = item_logprobs(model, cat, es.history[r:r + 1], es.users[r:r + 1], np.array([cand]))[0]
        for beta in (0.0, 1.0):
            score = lp + beta * d[r, cand]
            want = [cand[j] for j in np.argsort(-score, kind="stable")][:5]
            assert fused[beta][r, :len(want)].tolist() == want
            assert not seen & set(fused[beta][r].tolist())
        assert fused[1000.0][r, :len(cand)].tolist()[:3] == [i for i in unseen if i in cand][:3]
    only_beam, _ = hybrid_rankings(model, head, cat, es, beam, beam_lp, union=0, betas=[1.0])
    for r in range(4):  # union 0: the beam's own items, re-ordered
        assert sorted(i for i in only_beam[1.0][r] if i >= 0) == sorted(i for i in beam[r] if i >= 0)


def test_beam_scores_are_the_teacher_forced_log_pi(small):
    """The fusion keeps the beam's own scores for its items: they must be the raw log π teacher forcing gives."""
    cat, model, _ = small
    es = _evalset()
    ranked, scores = rank_with_engine(TorchEngine(model, cat), cat, es, 10, True)
    forced = item_logprobs(model, cat, es.history, es.users, ranked)
    live = ranked >= 0
    assert live.sum() == 40
    np.testing.assert_allclose(scores[live], forced[live], atol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (the full parity check: "
                    "benchmarks/bench_device.py)")
def test_beam_and_fused_ranking_on_cuda_are_the_cpu_ones(small):
    """A policy with an item head evaluated on a GPU: the beams, their scores and the fused lists (whose head items
    are teacher-forced through ``item_logprobs``) equal the CPU's. Prompts are built on the CPU either way."""
    cat, model, head = small
    es = _evalset()
    ranked, scores = rank_with_engine(TorchEngine(model, cat), cat, es, 5, True)
    fused, dense = hybrid_rankings(model, head, cat, es, ranked, scores, union=3, betas=[1.0])
    gpu = copy.deepcopy(model).cuda()
    g_ranked, g_scores = rank_with_engine(TorchEngine(gpu, cat, "cuda"), cat, es, 5, True)
    g_fused, g_dense = hybrid_rankings(gpu, item_head_of(gpu), cat, es, g_ranked, g_scores, union=3, betas=[1.0])
    assert np.array_equal(g_ranked, ranked) and np.array_equal(g_dense, dense)
    np.testing.assert_allclose(g_scores[ranked >= 0], scores[ranked >= 0], atol=1e-4)
    assert np.array_equal(g_fused[1.0], fused[1.0])


def test_choose_beta_takes_the_best_valid_ndcg():
    targets = np.array([1, 2, 3])
    pad = np.full((3, 8), -1)
    good = np.hstack([np.array([[1, 0], [2, 0], [0, 3]]), pad])
    bad = np.hstack([np.array([[0, 1], [0, 2], [0, 5]]), pad])
    pick = choose_beta({0.5: bad, 2.0: good, 1.0: good}, targets)
    assert pick.beta == 1.0  # ties go to the smaller β
    assert pick.valid["2"] == metrics(good, targets, [10])
    assert not pick.at_edge
    assert choose_beta({0.5: bad, 1.0: bad, 2.0: good}, targets).at_edge  # the grid's largest won: widen it
    assert not choose_beta({2.0: good}, targets).at_edge  # a grid of one β: nothing to widen
    # the validation record SFT and alignment both log: the fused figures at that rule's β, the beam's beside
    rec = valid_record((0.1, 0.05), {0.5: (0.3, 0.10), 1.0: (0.2, 0.12), 2.0: (0.4, 0.12)})
    assert rec == {"valid_hr@10": 0.2, "valid_ndcg@10": 0.12, "item_head_beta": 1.0, "valid_beam_hr@10": 0.1,
                   "valid_beam_ndcg@10": 0.05}


@pytest.mark.parametrize("kind", ["free", "history"])
def test_with_item_history_the_head_reads_each_targets_serving_state_in_the_packed_batch(kind):
    """sid.history: items: the head's log-probs at the packed batch's shared columns are those it gives each
    target's own serving prompt (what evaluation reads), its targets line up, and sft_loss trains head and trunk
    (with ``history``, the tied history-token embeddings are the head's item vectors)."""
    from test_history_items import _catalog

    from rl_align.policy.data import item_history_batch
    from rl_align.policy.item_head import item_head_logp, item_head_nll
    from rl_align.policy.model import attention_mask_for, token_loss
    from rl_align.sft.loss import sft_loss

    cat = _catalog(True)
    model = build_policy(PolicyConfig(hidden_size=64, num_layers=2, num_heads=1, intermediate_size=128), cat, 8,
                         seed=3).eval()
    head = attach_item_head(model, cat, kind)
    with torch.no_grad():
        head.item_vectors().normal_(0, 1.0, generator=torch.Generator().manual_seed(1))
    windows, n_target = np.array([[5, 2, 11, 7, 0], [-1, -1, 3, 8, 1], [6, -1, -1, -1, -1]]), np.array([4, 2, 1])
    b = item_history_batch(windows, cat, n_target)
    b["attention_mask"] = attention_mask_for(model, b["attention_mask"])
    targets = target_items(windows, n_target)
    assert targets.tolist() == [2, 11, 7, 0, 8, 1, 6]
    with torch.no_grad():
        h = model(**{k: v for k, v in b.items() if k != "targets"}, output_hidden_states=True).hidden_states[-1]
        got = item_head_logp(head, h, b["targets"], cat, shifted=False)
        prompts = []
        for w, k in zip(windows, n_target):
            items = [int(i) for i in w if i >= 0]
            prompts += [items[:j] + [-1] * (5 - j) for j in range(len(items) - k, len(items))]
        want = head_logprobs(model, head, cat, np.array(prompts), np.zeros(len(prompts), np.int64))
    assert got.shape == (7, cat.n_items)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    model.zero_grad()  # eval mode: no dropout, so the loss can be recomputed from its parts
    loss = sft_loss(model, b, cat, head, targets, head_weight=0.5)
    loss.backward()
    with torch.no_grad():
        logits = model(**{k: v for k, v in b.items() if k != "targets"}).logits
        parts = token_loss(logits, b["targets"]) + 0.5 * item_head_nll(got, targets)
    assert torch.isclose(loss, parts, atol=1e-5)
    vec_grad = head.items.weight.grad if kind == "free" else model.get_input_embeddings().weight.grad[
        cat.layout.history_offset: cat.layout.history_offset + cat.n_items]
    assert vec_grad[targets].abs().sum() > 0
    assert model.model.layers[0].mlp.up_proj.weight.grad.abs().sum() > 0


def test_the_history_tied_head_is_the_embedding_rows_and_saves_as_their_snapshot(tmp_path):
    """policy.item_head: history: no table of its own (the policy's parameters are not doubled), a move of the
    embedding moves the head, and the saved head loads as a free head that scores exactly like the tied one."""
    from test_history_items import _catalog

    cat = _catalog(True)
    model = build_policy(PolicyConfig(hidden_size=64, num_layers=1, num_heads=1, intermediate_size=128), cat, 8)
    n_params = sum(p.numel() for p in model.parameters())
    head = attach_item_head(model, cat, "history")
    assert sum(p.numel() for p in model.parameters()) == n_params + 64 * 64  # only the projection is new
    emb = model.get_input_embeddings().weight
    off = cat.layout.history_offset
    with torch.no_grad():
        emb[off + 3] += 1.0
    assert torch.equal(head.item_vectors()[3], emb[off + 3])
    save_policy(model, tmp_path / "p", cat)
    back = load_item_head(tmp_path / "p", cat, 64)
    h = torch.randn(5, 64)
    with torch.no_grad():
        torch.testing.assert_close(back(h), head(h))
    with pytest.raises(ValueError, match="needs sid.history: items"):
        attach_item_head(build_policy(PolicyConfig(hidden_size=64, num_layers=1, num_heads=1,
                                                   intermediate_size=128), _catalog(False), 8), _catalog(False),
                         "history")


@pytest.mark.parametrize("change,match", [
    ({"sid": {"collision": "bucket"}}, "sid.collision: bucket"),
    ({"eval": {"cold_expansion": True}}, "eval.cold_expansion"),
    ({"policy": {"item_head": "history"}}, "sid.history: codes"),
])
def test_config_refuses_what_the_head_cannot_serve(change, match):
    kind = change.get("policy", {}).get("item_head", "free")
    with pytest.raises(ConfigError, match=rf"policy\.item_head: '{kind}' cannot be used with {match}"):
        from_dict(RunConfig, {"policy": {"item_head": "free"}, **change}, source="c.yaml")
    assert from_dict(RunConfig, {"policy": {"item_head": "history"}, "sid": {"history": "items"}}).policy.item_head \
        == "history"


def test_config_checks_the_head_fields():
    with pytest.raises(ConfigError,
                       match=r"c.yaml: policy.item_head: 'dense' is not one of "
                             r"\['none', 'free', 'free_sid', 'history'\]"):
        from_dict(RunConfig, {"policy": {"item_head": "dense"}}, source="c.yaml")
    with pytest.raises(ConfigError, match=r"c.yaml: eval.item_head_betas: expected a non-empty list of numbers ≥ 0"):
        from_dict(RunConfig, {"eval": {"item_head_betas": [1, -1]}}, source="c.yaml")
    with pytest.raises(ConfigError, match=r"c.yaml: sft.item_head_weight: expected a value > 0"):
        from_dict(RunConfig, {"sft": {"item_head_weight": 0}}, source="c.yaml")
    with pytest.raises(ConfigError, match=r"c.yaml: sft.item_head_future: expected a value ≥ 1"):
        from_dict(RunConfig, {"policy": {"item_head": "free"}, "sft": {"item_head_future": 0}}, source="c.yaml")
    with pytest.raises(ConfigError, match=r"c.yaml: sft.item_head_future: expected 1 without policy.item_head, got 3"):
        from_dict(RunConfig, {"sft": {"item_head_future": 3}}, source="c.yaml")
    with pytest.raises(ConfigError, match=r"c.yaml: sft.item_head_seen_mask: expected false without policy.item_head"):
        from_dict(RunConfig, {"sft": {"item_head_seen_mask": True}}, source="c.yaml")
    with pytest.raises(ConfigError, match=r"c.yaml: sft.item_head_seen_mask: cannot be used with sft.distill_into: "
                                          r"'item_head'"):
        from_dict(RunConfig, {"policy": {"item_head": "free"}, "sft": {
            "item_head_seen_mask": True, "distill_from": "baseline:sasrec", "distill_weight": 1,
            "distill_into": "item_head"}, "stages": ["data", "embed", "sids", "baselines", "sft"]}, source="c.yaml")
    assert from_dict(RunConfig, {"policy": {"item_head": "free"}, "sft": {"item_head_seen_mask": True}}).sft \
        .item_head_seen_mask
    with pytest.raises(ConfigError, match=r"c.yaml: eval.item_head_union: expected a value ≥ 0"):
        from_dict(RunConfig, {"eval": {"item_head_union": -1}}, source="c.yaml")


@pytest.mark.ray
def test_sft_and_eval_with_the_head(ray_session, tmp_path, ml100k_emb):
    """A real Ray SFT run (DeepSpeed) with the head: SFT validates the fused ranking and keeps β; the eval stage
    chooses β on valid, reports the beam's and the head's own figures beside the fused one, and exports it; an
    NLL + GRPO mixture aligns the SID policy with the head frozen beside it."""
    import yaml
    from test_sft_ray import TINY, independent_rescore

    from rl_align.cli import main
    from rl_align.config import load_config
    from rl_align.data.fetch import fetch_ml100k
    from rl_align.pipeline import run_pipeline

    data = json.loads(json.dumps(TINY))
    data["policy"]["item_head"] = "free"
    data["sft"].update(epochs=2, eval_users=60)
    data["eval"].update(item_head_union=20, item_head_betas=[0.5, 2.0])
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(data))
    cfg = load_config(p, RunConfig)
    cfg.stages = ["data", "embed", "sids", "sft", "eval"]
    run = tmp_path / "run"
    run_pipeline(cfg, run)
    recs = [json.loads(x) for x in (run / "sft" / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in recs if "train_loss" in r]
    assert len(epochs) == 2 and all(r["item_head_beta"] in (0.5, 2.0) for r in epochs)
    assert all("valid_beam_ndcg@10" in r for r in epochs)
    assert (run / "sft" / "best_policy" / FILE).exists() and (run / "sft" / "final_policy" / FILE).exists()
    m = json.loads((run / "eval" / "metrics.json").read_text())
    assert m["item_head"]["beta"] in (0.5, 2.0) and set(m["item_head"]["valid_by_beta"]) == {"0.5", "2"}
    best = m["item_head"]["valid_by_beta"][f"{m['item_head']['beta']:g}"]
    assert m["item_head"]["beta_at_edge"] == (m["item_head"]["beta"] == 2.0)  # the grid's largest β is flagged
    assert m["valid"]["policy"]["ndcg@10"] == pytest.approx(best["ndcg@10"], abs=1e-12)
    test = m["test"]
    assert {"policy", "policy_beam", "item_head_only"} <= set(test)
    assert test["list_lengths"][-1] == 943  # full lists for every user
    hr, ndcg, n = independent_rescore(run / "eval" / "predictions_test.jsonl", fetch_ml100k() / "ml-100k.inter")
    assert n == 943 and hr == pytest.approx(test["policy"]["hr@10"], abs=1e-9)
    # alignment moves the SID policy and carries the SFT head unchanged; validation and test use the fused list
    data["rl"] = {"algo": "mixture", "tag": "aligned", "group_size": 4, "prompts_per_step": 8,
                  "micro_batch_prompts": 4, "steps": 2, "lr": 0.001, "cpus_per_learner": 1,
                  "cpus_per_rollout_worker": 0.5, "eval_every": 1, "eval_users": 40, "checkpoint_every": 2}
    data["reward"] = {"functions": {"exact_match": 1.0}, "cpus_per_replica": 0.5}  # NLL + GRPO, no ranker needed
    p.write_text(yaml.safe_dump(data))
    cfg = load_config(p, RunConfig)
    cfg.stages = ["rl"]
    run_pipeline(cfg, run)
    summary = json.loads((run / "rl" / "aligned" / "summary.json").read_text())
    assert all(e["item_head_beta"] in (0.5, 2.0) and "valid_beam_hr@10" in e for e in summary["evals"])
    sft_head = (run / "sft" / "best_policy" / FILE).read_bytes()
    for kind in ("best_policy", "final_policy"):
        d = run / "rl" / "aligned" / kind
        assert (d / FILE).read_bytes() == sft_head  # frozen: the SFT head, byte for byte
        assert json.loads((d / "rl_align_policy.json").read_text())["item_head"] == FILE
    final = load_file(str(run / "rl" / "aligned" / "final_policy" / "model.safetensors"))
    start = load_file(str(run / "sft" / "best_policy" / "model.safetensors"))
    assert not any(k.startswith(ATTR) for k in final)
    assert any(not torch.equal(final[k], start[k]) for k in start)  # the SID policy did move
    rl_test = json.loads((run / "rl" / "aligned" / "test_metrics.json").read_text())
    for kind in ("rl", "rl-final"):
        assert {"policy", "policy_beam", "item_head_only"} <= set(rl_test[kind]["test"])
        assert rl_test[kind]["item_head"]["beta"] in (0.5, 2.0)
    # rl.item_head_trunk: sft keeps the head's SFT trunk beside the aligned policy: the head ranks test as at SFT
    data["rl"].update(tag="aligned-sft-trunk", item_head_trunk="sft")
    p.write_text(yaml.safe_dump(data))
    cfg = load_config(p, RunConfig)
    cfg.stages = ["rl"]
    run_pipeline(cfg, run)
    out = run / "rl" / "aligned-sft-trunk"
    assert ((out / "final_policy" / TRUNK / "model.safetensors").read_bytes()
            == (run / "sft" / "best_policy" / "model.safetensors").read_bytes())
    kept = json.loads((out / "test_metrics.json").read_text())
    for kind in ("rl", "rl-final"):
        assert kept[kind]["test"]["item_head_only"] == test["item_head_only"]
    # the eval CLI re-ranks the saved policy with other fusion settings, checked like the config
    assert main(["eval", str(run), "--split", "both", "--item-head-betas", "0.5", "--item-head-union", "5"]) == 0
    again = json.loads((run / "eval" / "metrics_sft_item-head-u5-b0.5.json").read_text())
    assert again["item_head"]["union"] == 5 and again["item_head"]["beta"] == 0.5
    assert again["test"]["policy_beam"] == test["policy_beam"]  # the same beam, only the fusion differs
    assert main(["eval", str(run), "--item-head-union", "-1"]) == 2


def test_fused_candidates_are_the_beam_then_the_heads_new_items(small):
    """The candidates every fused score is built from: the beam's items with their own log π, then the head's best
    unseen items the beam did not reach (teacher-forced), each with the head's log-softmax."""
    cat, model, head = small
    es = _evalset()
    beam = np.array([[4, 14, 15, -1, -1], [15, 16, 1, -1, -1], [20, 21, -1, -1, -1], [2, 3, -1, -1, -1]])
    beam_lp = item_logprobs(model, cat, es.history, es.users, beam)
    cand, lp, dc, top = fused_candidates(model, head, cat, es.history, es.users, es.seen, beam, beam_lp, 3, 5)
    d = head_logprobs(model, head, cat, es.history, es.users).numpy()
    assert cand.shape == lp.shape == dc.shape == (4, 8) and top.shape == (4, 5)
    assert np.array_equal(cand[:, :5], beam) and np.array_equal(lp[:, :5][beam >= 0], beam_lp[beam >= 0])
    for r in range(4):
        new = [i for i in top[r, :3] if i not in set(beam[r].tolist())]
        assert [i for i in cand[r, 5:] if i >= 0] == new
        ok = cand[r] >= 0
        assert np.allclose(dc[r][ok], d[r, cand[r][ok]]) and np.all(dc[r][~ok] == 0)
        assert np.isneginf(lp[r][~ok]).all() and np.isfinite(lp[r][ok]).all()
