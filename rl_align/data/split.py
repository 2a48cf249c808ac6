"""Leave-one-out split by time per user, and history windows.

Per user, interactions are sorted by timestamp with a *stable* sort, so ties keep
source-file order (RecBole's convention): the last item is the test target, the
second-to-last the valid target, and every earlier position (from the second on)
is a training target. A target's history is everything strictly before it,
truncated to the most recent ``max_history`` items — never anything after it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rl_align.data.dataset import InteractionData

PAD = -1


@dataclass
class SequenceExamples:
    """Next-item examples.

    Attributes:
        users: (n,) int64 dense user index.
        targets: (n,) int64 dense item index of the next item.
        history: (n, H) int64 item indices, left-aligned oldest→newest, padded with -1.
        history_len: (n,) int64 number of valid history entries.
        positions: (n,) int64 position of the target in the user's sorted sequence.
    """

    users: np.ndarray
    targets: np.ndarray
    history: np.ndarray
    history_len: np.ndarray
    positions: np.ndarray

    def __len__(self) -> int:
        return int(self.targets.shape[0])


@dataclass
class LeaveOneOutSplit:
    """Train/valid/test examples plus each user's full time-sorted sequence.

    Attributes:
        train, valid, test: next-item examples.
        seq_items: (n_inter,) item indices, users' sequences concatenated in user order.
        seq_offsets: (n_users + 1,) CSR offsets of each user's sequence in ``seq_items``.
        max_history: the history window used.
    """

    train: SequenceExamples
    valid: SequenceExamples
    test: SequenceExamples
    seq_items: np.ndarray
    seq_offsets: np.ndarray
    max_history: int

    def user_sequence(self, u: int) -> np.ndarray:
        """Time-ordered items of user ``u``."""
        return self.seq_items[self.seq_offsets[u]: self.seq_offsets[u + 1]]


def sort_by_user_time(data: InteractionData) -> tuple[np.ndarray, np.ndarray]:
    """Stable order of interactions by (user, timestamp), ties in file order.

    Returns:
        order: (n_inter,) permutation.
        offsets: (n_users + 1,) CSR offsets per user into ``order``.
    """
    # np.lexsort is stable: the last key is primary; file order (arange) breaks remaining ties.
    order = np.lexsort((np.arange(data.n_interactions), data.timestamps, data.users))
    counts = np.bincount(data.users, minlength=data.n_users)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return order, offsets


def _examples(seq_items: np.ndarray, offsets: np.ndarray, users: np.ndarray, pos: np.ndarray,
              max_history: int) -> SequenceExamples:
    """Examples whose target is at ``pos`` (index within each user's sequence)."""
    n = users.shape[0]
    start = offsets[users]
    target_idx = start + pos
    hlen = np.minimum(pos, max_history)
    hist = np.full((n, max_history), PAD, np.int64)
    cols = np.arange(max_history)[None, :]
    src = (target_idx - hlen)[:, None] + cols
    valid = cols < hlen[:, None]
    hist[valid] = seq_items[src[valid]]
    return SequenceExamples(users=users.astype(np.int64), targets=seq_items[target_idx], history=hist,
                            history_len=hlen.astype(np.int64), positions=pos.astype(np.int64))


def leave_one_out(data: InteractionData, max_history: int = 20) -> LeaveOneOutSplit:
    """Split ``data`` leave-one-out; every user needs at least 3 interactions."""
    if max_history < 1:
        raise ValueError(f"max_history must be >= 1, got {max_history}")
    order, offsets = sort_by_user_time(data)
    seq_items = data.items[order]
    lens = np.diff(offsets)
    short = np.flatnonzero(lens < 3)
    if short.size:
        raise ValueError(
            f"{data.name}: {short.size} user(s) have fewer than 3 interactions (e.g. user "
            f"{data.user_ids[short[0]]!r}); raise data.min_user_interactions to 3 to drop them"
        )
    all_users = np.arange(data.n_users)
    test = _examples(seq_items, offsets, all_users, lens - 1, max_history)
    valid = _examples(seq_items, offsets, all_users, lens - 2, max_history)
    n_train = lens - 3  # targets at positions 1 .. len-3
    tr_users = np.repeat(all_users, n_train)
    tr_pos = np.arange(n_train.sum()) - np.repeat(np.cumsum(n_train) - n_train, n_train) + 1
    train = _examples(seq_items, offsets, tr_users, tr_pos, max_history)
    return LeaveOneOutSplit(train=train, valid=valid, test=test, seq_items=seq_items, seq_offsets=offsets,
                            max_history=max_history)


def training_pairs(seq_items: np.ndarray, seq_offsets: np.ndarray, holdout: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """(item, user) index pairs of the training interactions: each user's sequence without its last ``holdout`` items.

    Args:
        seq_items, seq_offsets: users' time-sorted sequences (CSR), as in ``split.npz``.
        holdout: trailing items per user that are evaluation targets (2 under leave-one-out: valid, test).
    """
    lens = np.diff(seq_offsets)
    keep = np.maximum(lens - holdout, 0)
    users = np.repeat(np.arange(lens.size), lens)
    pos = np.arange(seq_items.size) - np.repeat(seq_offsets[:-1], lens)
    m = pos < np.repeat(keep, lens)
    return seq_items[m].astype(np.int64), users[m].astype(np.int64)


def train_popularity(split: dict[str, np.ndarray], n_items: int) -> np.ndarray:
    """(n_items,) interaction count of each item over the training part of a leave-one-out split (``split.npz``
    arrays; each user's valid and test items excluded): popularity as a system trained on that part saw it."""
    items, _ = training_pairs(split["seq_items"], split["seq_offsets"])
    return np.bincount(items, minlength=n_items)


def items_before(seq_items: np.ndarray, seq_offsets: np.ndarray, users: np.ndarray,
                 positions: np.ndarray) -> np.ndarray:
    """(N, S) each user's items before ``positions`` (the items a ranking at that point excludes), -1 padded.

    Args:
        seq_items, seq_offsets: users' time-sorted sequences (CSR). users, positions: (N,) user and position.
    Returns:
        (N, max(1, max position)) int64, left-aligned in time order.
    """
    S = max(int(positions.max()) if positions.size else 1, 1)
    at = np.arange(S)[None, :]
    ok = at < positions[:, None]
    return np.where(ok, seq_items[np.where(ok, seq_offsets[users][:, None] + at, 0)], -1).astype(np.int64)


def truncated_split(seq_items: np.ndarray, seq_offsets: np.ndarray, drop: int, max_history: int) -> dict:
    """A leave-one-out split of each user's sequence without its last ``drop`` items, as ``split.npz`` arrays.

    Used to train models that must never see an evaluation event: with ``drop`` = 2 (valid, test) + the
    events held out of the ranker's logs, the new split's valid/test targets are training events and nothing
    after them enters. Users left with fewer than 3 items keep their (short) sequence but get no valid/test
    example.

    Returns:
        ``seq_items``, ``seq_offsets`` (n_users + 1,) of the truncated sequences and ``valid_*`` / ``test_*``
        (``users``, ``targets``, ``history``, ``history_len``, ``positions``) as in a run's ``split.npz``.
    """
    if drop < 0:
        raise ValueError(f"drop must be >= 0, got {drop}")
    lens = np.diff(seq_offsets)
    keep = np.maximum(lens - drop, 0)
    items, _ = training_pairs(seq_items, seq_offsets, holdout=drop)
    offsets = np.concatenate([[0], np.cumsum(keep)]).astype(seq_offsets.dtype)
    out = {"seq_items": items, "seq_offsets": offsets}
    users = np.flatnonzero(keep >= 3)
    for part, back in (("valid", 2), ("test", 1)):
        ex = _examples(items, offsets, users, keep[users] - back, max_history)
        for f in ("users", "targets", "history", "history_len", "positions"):
            out[f"{part}_{f}"] = getattr(ex, f)
    return out
