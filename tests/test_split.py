"""Leave-one-out split: stable tie order (RecBole's), no future leakage, brute-force agreement."""

import numpy as np

from rl_align.data.dataset import InteractionData
from rl_align.data.split import leave_one_out
from rl_align.data.stats import last_timestamp_ties


def _toy():
    # user 0: ties at t=5 keep file order (i2 before i3); user 1 out of order in the file
    users = np.array([0, 0, 1, 0, 1, 1, 0, 1])
    items = np.array([1, 2, 0, 3, 2, 1, 4, 3])
    ts = np.array([1, 5, 9, 5, 3, 1, 7, 9], float)
    return InteractionData("toy", ["a", "b"], [str(i) for i in range(5)], users, items, ts, ["t"] * 5)


def brute_force(data, H):
    """A second implementation: Python sorted() is stable, exactly like RecBole's sort."""
    out = {"train": [], "valid": [], "test": []}
    for u in range(data.n_users):
        rows = [r for r in range(data.n_interactions) if data.users[r] == u]
        rows = sorted(rows, key=lambda r: data.timestamps[r])
        seq = [int(data.items[r]) for r in rows]
        n = len(seq)
        for p in range(1, n):
            part = "test" if p == n - 1 else "valid" if p == n - 2 else "train"
            out[part].append((u, seq[p], tuple(seq[max(0, p - H):p])))
    return out


def _as_tuples(ex):
    return [(int(u), int(t), tuple(int(x) for x in h[:l])) for u, t, h, l in
            zip(ex.users, ex.targets, ex.history, ex.history_len)]


def test_toy_split_matches_brute_force():
    data = _toy()
    for H in (1, 2, 20):
        s = leave_one_out(data, H)
        bf = brute_force(data, H)
        for part in ("train", "valid", "test"):
            assert sorted(_as_tuples(getattr(s, part))) == sorted(bf[part]), (part, H)
    s = leave_one_out(data, 20)
    assert s.user_sequence(0).tolist() == [1, 2, 3, 4]  # tie at t=5: file order i2, i3
    assert s.test.targets.tolist() == [4, 3] and s.valid.targets.tolist() == [3, 0]


def test_ml100k_split(ml100k):
    s = leave_one_out(ml100k, 20)
    assert len(s.test) == len(s.valid) == 943
    assert len(s.train) == 100000 - 943 * 3
    assert last_timestamp_ties(ml100k) == 415
    # brute force on a sample of users, with RecBole-style stable sorting
    sub_users = set(range(0, 943, 37))
    mask = np.isin(ml100k.users, list(sub_users))
    rows = np.flatnonzero(mask)
    for u in sub_users:
        r = [x for x in rows if ml100k.users[x] == u]
        r = sorted(r, key=lambda x: ml100k.timestamps[x])
        seq = ml100k.items[r]
        assert s.user_sequence(u).tolist() == seq.tolist()
        assert s.test.targets[u] == seq[-1] and s.valid.targets[u] == seq[-2]
        assert s.test.history[u][: s.test.history_len[u]].tolist() == seq[-21:-1].tolist()


def test_no_future_leakage(ml100k):
    s = leave_one_out(ml100k, 20)
    order = np.lexsort((np.arange(ml100k.n_interactions), ml100k.timestamps, ml100k.users))
    ts_sorted = ml100k.timestamps[order]
    for part in (s.train, s.valid, s.test):
        pos = part.positions
        start = s.seq_offsets[part.users]
        target_t = ts_sorted[start + pos]
        for j in range(part.history.shape[1]):
            valid = j < part.history_len
            hist_pos = pos - part.history_len + j
            assert (hist_pos[valid] < pos[valid]).all()
            assert (ts_sorted[start[valid] + hist_pos[valid]] <= target_t[valid]).all()
            assert (part.history[~valid, j] == -1).all()
    # valid/test targets never appear as train targets' positions
    assert (s.train.positions < s.valid.positions[s.train.users]).all()
