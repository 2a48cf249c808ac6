"""``sft.item_drop``: item deletion keeps order, the window's last item and a consistent target count."""

import numpy as np

from rl_align.policy.data import drop_events
from rl_align.sft.schedule import epoch_events


def _windows():
    ev = np.array([[-1, -1, 3, 4, 5, 6], [10, 11, 12, 13, 14, 15], [-1, -1, -1, -1, -1, 20]])
    return ev, np.array([4, 2, 1])   # row 1: 10..13 context, 14, 15 targets


def test_zero_is_the_identity():
    ev, nt = _windows()
    out, nt2 = drop_events(ev, nt, 0.0, np.random.default_rng(0))
    assert out is ev and nt2 is nt


def test_deletion_keeps_order_the_last_item_and_counts_the_targets_left():
    ev, nt = _windows()
    seen_drop = False
    for seed in range(200):
        out, nt2 = drop_events(ev, nt, 0.5, np.random.default_rng(seed))
        for r in range(len(ev)):
            kept = out[r][out[r] >= 0]
            orig = ev[r][ev[r] >= 0]
            assert kept[-1] == orig[-1]                                   # the last item always stays
            assert np.isin(kept, orig).all() and (np.diff(kept) > 0).all()  # a subsequence, in order
            targets = orig[len(orig) - nt[r]:]
            assert nt2[r] == np.isin(kept, targets).sum() >= 1          # targets left, counted exactly
            seen_drop |= len(kept) < len(orig)
    assert seen_drop
    rates = [(drop_events(ev, nt, 0.3, np.random.default_rng(s))[0][1] < 0).sum() / 5 for s in range(400)]
    assert abs(np.mean(rates) - 0.3) < 0.03                                # the rate asked for


def test_epoch_events_without_drop_is_unchanged_and_with_drop_is_seeded():
    seq = np.arange(40, dtype=np.int64)
    split = {"seq_items": seq, "seq_offsets": np.array([0, 15, 40])}
    base = epoch_events(split, 6, 0, 1)
    same = epoch_events(split, 6, 0, 1, None, 0.0)
    assert all(np.array_equal(a, b) for a, b in zip(base, same))
    d1, d2 = epoch_events(split, 6, 0, 1, None, 0.3), epoch_events(split, 6, 0, 1, None, 0.3)
    assert all(np.array_equal(a, b) for a, b in zip(d1, d2))                 # every worker draws the same
    assert (d1[0] >= 0).sum() < (base[0] >= 0).sum()
    kept = [frozenset(ev[ev >= 0].tolist()) for ev in (epoch_events(split, 6, 0, e, None, 0.3)[0] for e in (1, 2, 3))]
    assert len(set(kept)) > 1                                                # drawn afresh each epoch


def test_item_id_baseline_windows_with_drop_stay_right_aligned_with_their_targets():
    from rl_align.policy.data import item_window_batches
    seq = np.arange(60, dtype=np.int64)
    split = {"seq_items": seq, "seq_offsets": np.array([0, 25, 60])}
    plain = list(item_window_batches(split, 6, 100, np.random.default_rng(0)))
    again = list(item_window_batches(split, 6, 100, np.random.default_rng(0), None, 0.0))
    assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(plain, again))
    n_plain = sum(int((t >= 0).sum()) for _, t in plain)
    batches = list(item_window_batches(split, 6, 100, np.random.default_rng(0), None, 0.3))
    n_drop = 0
    for inp, tgt in batches:
        inp, tgt = inp.numpy(), tgt.numpy()
        for r in range(len(inp)):
            items = inp[r][inp[r] > 0] - 1
            assert (inp[r][: len(inp[r]) - len(items)] == 0).all()          # padding only at the front
            assert (np.diff(items) > 0).all()                                # order kept
            t = tgt[r][tgt[r] >= 0]
            # every target is an item of the user after its input, and each position's target follows its input
            ok = (inp[r] > 0) & (tgt[r] >= 0)
            assert (tgt[r][ok] > inp[r][ok] - 1).all()
            n_drop += len(t)
    assert 0 < n_drop < n_plain
