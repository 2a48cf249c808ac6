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
    kept = [np.sort(epoch_events(split, 6, 0, e, None, 0.3)[0][epoch_events(split, 6, 0, e, None, 0.3)[0] >= 0])
            for e in (1, 2, 3)]
    assert len({tuple(k) for k in kept}) > 1                                 # drawn afresh each epoch
