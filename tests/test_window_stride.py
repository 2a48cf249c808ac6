"""Overlapping training windows (``sft.window_stride``, ``baseline.window_stride``): every training item is a
target exactly once per epoch, with at least ``window - stride`` items of history before it; context items are
never trained on; ``stride == window`` is the old non-overlapping cut, draw for draw."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rl_align.policy.data import IGNORE, events_to_items, item_window_batches, strided_windows, windows_to_batch
from rl_align.sft.schedule import epoch_events
from rl_align.sid import SidCatalog, SidCodes


def _toy(n_users=7, seed=0):
    """CSR sequences of varied lengths with distinct item ids; the last two items of each user are valid/test."""
    rng = np.random.default_rng(seed)
    lens = rng.integers(3, 40, size=n_users)
    seq = np.arange(int(lens.sum()), dtype=np.int64)
    offs = np.concatenate([[0], np.cumsum(lens)])
    return seq, offs, lens - 2


@pytest.mark.parametrize("window,stride", [(5, 5), (5, 2), (5, 1), (8, 3), (21, 10)])
def test_every_training_item_is_a_target_once_with_its_full_context(window, stride):
    seq, offs, train_len = _toy()
    user_of = np.repeat(np.arange(len(train_len)), np.diff(offs))
    pos_of = np.arange(seq.size) - offs[user_of]
    for epoch in range(3):
        w, n_target = strided_windows(seq, offs, train_len, window, stride, np.random.default_rng(epoch))
        assert w.shape[1] == window and (n_target >= 1).all() and (n_target <= stride).all()
        targets = []
        for row, nt in zip(w, n_target):
            items = row[row >= 0]
            assert (row[: window - items.size] == -1).all()  # front padding only
            assert (np.diff(items) == 1).all() and len(set(user_of[items])) == 1  # contiguous, one user
            tgt = items[items.size - nt:]
            targets += tgt.tolist()
            # each target's history in the window: everything before it, or at least window - stride items
            first = tgt[0]
            assert items.size - nt == min(pos_of[first], window - stride)
        train_items = [i for i in seq if pos_of[i] < train_len[user_of[i]] and train_len[user_of[i]] >= 2]
        assert sorted(targets) == train_items  # once each; valid and test items never appear


def _old_cut(seq_items, seq_offsets, train_len, window, rng):
    """The non-overlapping cut as SFT and the baselines trained before ``window_stride`` existed (the oracle)."""
    rows = []
    for u in range(seq_offsets.shape[0] - 1):
        n = int(train_len[u])
        if n < 2:
            continue
        seq = seq_items[seq_offsets[u]: seq_offsets[u] + n]
        shift = int(rng.integers(0, window))
        bounds = [n]
        b = n - (shift if shift else window)
        while b > 0:
            bounds.append(b)
            b -= window
        bounds.append(0)
        for e, s in zip(bounds[:-1], bounds[1:]):
            w = np.full(window, -1, np.int64)
            w[window - (e - s):] = seq[s:e]
            rows.append(w)
    return np.stack(rows)


def test_no_stride_is_the_old_non_overlapping_cut_draw_for_draw():
    seq, offs, train_len = _toy()
    old = _old_cut(seq, offs, train_len, 6, np.random.default_rng(3))
    for stride in (None, 6):
        w, nt = strided_windows(seq, offs, train_len, 6, stride, np.random.default_rng(3))
        assert np.array_equal(w, old) and np.array_equal(nt, (w >= 0).sum(1))
    rng = np.random.default_rng([0, 2])  # the epoch order too: SFT's seeded shuffle of the old cut
    old = _old_cut(seq, offs, train_len, 6, rng)
    old = old[rng.permutation(old.shape[0])]
    ev, nt = epoch_events({"seq_items": seq, "seq_offsets": offs}, 6, 0, 2)
    w = events_to_items(ev, seq)
    assert np.array_equal(w, old) and np.array_equal(nt, (w >= 0).sum(1))
    with pytest.raises(ValueError, match="stride must be in"):
        strided_windows(seq, offs, train_len, 6, 7, np.random.default_rng(0))


def test_context_tokens_are_not_labels():
    codes = np.array([[0, 0, -1], [0, 1, 2], [1, 0, -1], [1, 1, 0], [2, 0, 1], [3, 1, 1], [3, 2, -1]])
    cat = SidCatalog([f"i{k}" for k in range(7)], SidCodes(codes, (codes >= 0).sum(1), [4, 4, 4]))
    b = windows_to_batch(np.array([[-1, 4, 5, 6], [3, 4, 5, 6]]), cat, np.array([1, 2]))
    ids, labels = b["input_ids"], b["labels"]
    # row 0: items 4, 5 context, 6 target; row 1: 3, 4 context, 5, 6 targets
    for r, ctx, tgt in ((0, [4, 5], [6]), (1, [3, 4], [5, 6])):
        n_ctx = 1 + sum(len(cat.item_tokens(i)) for i in ctx)
        tgt_toks = [t for i in tgt for t in cat.item_tokens(i)]
        assert (labels[r, :n_ctx] == IGNORE).all()
        span = slice(n_ctx, n_ctx + len(tgt_toks))
        assert labels[r, span].tolist() == tgt_toks == ids[r, span].tolist()
        assert (labels[r, n_ctx + len(tgt_toks):] == IGNORE).all()
    full = windows_to_batch(np.array([[-1, 4, 5, 6]]), cat)
    assert torch.equal(full["labels"], windows_to_batch(np.array([[-1, 4, 5, 6]]), cat, np.array([3]))["labels"])


def test_item_id_batches_target_each_training_item_once_after_context():
    seq, offs, train_len = _toy()
    split = {"seq_items": seq, "seq_offsets": offs}
    user_of = np.repeat(np.arange(len(train_len)), np.diff(offs))
    pos_of = np.arange(seq.size) - offs[user_of]
    L, stride = 6, 2
    for stride_arg in (None, stride):
        got = []
        for inp, tgt in item_window_batches(split, L, 4, np.random.default_rng(1), stride_arg):
            r, c = np.nonzero(tgt.numpy() >= 0)
            for i, j in zip(r, c):
                t = int(tgt[i, j])
                got.append(t)
                hist = inp[i, : j + 1].numpy()
                hist = hist[hist > 0] - 1
                assert hist[-1] == t - 1  # the input at the target's position is the item before it
                if stride_arg:
                    assert hist.size >= min(pos_of[t], L + 1 - stride)
        expect = [i for i in seq if 1 <= pos_of[i] < train_len[user_of[i]] and train_len[user_of[i]] >= 2]
        if stride_arg:
            assert sorted(got) == expect  # every training item but a user's first, once
        else:  # non-overlapping: a window's first item has nothing before it, so it is lost as a target
            assert len(set(got)) == len(got) and set(got) < set(expect)


@pytest.mark.parametrize("drop", [0.0, 0.3])
def test_item_id_batches_with_seen_pairs_name_each_targets_earlier_items(drop):
    seq, offs, _ = _toy()
    split = {"seq_items": seq, "seq_offsets": offs}
    user_of = np.repeat(np.arange(len(offs) - 1), np.diff(offs))
    L = 6
    plain = list(item_window_batches(split, L, 4, np.random.default_rng(3), None, drop))
    marked = list(item_window_batches(split, L, 4, np.random.default_rng(3), None, drop, seen=True))
    assert len(plain) == len(marked) and sum(int((t >= 0).sum()) for _, t in plain) > 0
    for (inp, tgt), (inp2, tgt2, (rows, cols)) in zip(plain, marked):
        assert torch.equal(inp, inp2) and torch.equal(tgt, tgt2)  # the same draws: seen=True only adds the pairs
        flat = tgt.reshape(-1).numpy()
        for r in range(flat.size):
            got = sorted(cols[rows == r].tolist())
            t = int(flat[r])  # items are event ids here: the earlier items are the user's events before t
            assert got == ([] if t < 0 else list(range(offs[user_of[t]], t)))
