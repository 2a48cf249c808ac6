"""RL prompt schedule: seeded epochs over the pool, and the 'k most recent examples per user' pool."""

import numpy as np

from rl_align.data.prompts import recent_examples
from rl_align.driver.controller import prompt_order


def test_recent_examples_keeps_each_users_last_k_positions():
    users = np.array([0, 0, 0, 0, 1, 1, 2, 0])
    positions = np.array([1, 2, 3, 4, 1, 2, 1, 5])
    assert recent_examples(users, positions, None).tolist() == list(range(8))
    assert recent_examples(users, positions, 1).tolist() == [5, 6, 7]
    assert recent_examples(users, positions, 2).tolist() == [3, 4, 5, 6, 7]
    assert recent_examples(users, positions, 10).tolist() == list(range(8))


def test_prompt_order_is_seeded_epochs_of_permutations():
    a = np.concatenate([prompt_order(10, 3, s, 4) for s in range(5)])   # 20 rows = 2 epochs
    assert sorted(a[:10].tolist()) == list(range(10)) and sorted(a[10:].tolist()) == list(range(10))
    assert (a == np.concatenate([prompt_order(10, 3, s, 4) for s in range(5)])).all()
    assert not (a == np.concatenate([prompt_order(10, 4, s, 4) for s in range(5)])).all()


def test_future_events_stop_at_the_validation_event():
    from rl_align.data.prompts import future_events

    # user 0: a b c d e f (valid = e at 4, test = f); user 1: g h i (valid = h at 1)
    split = {"seq_items": np.array([10, 11, 12, 13, 14, 15, 20, 21, 22]), "seq_offsets": np.array([0, 6, 9]),
             "valid_users": np.array([0, 1]), "valid_positions": np.array([4, 1]),
             "train_users": np.array([0, 0, 0]), "train_positions": np.array([1, 2, 3])}
    f = future_events(split, np.array([0, 2, 1]), 3)
    assert f.tolist() == [[11, 12, 13], [13, -1, -1], [12, 13, -1]]     # never 14 (valid) or 15 (test)
    assert future_events(split, np.array([0]), 1).tolist() == [[11]]


def test_seen_before_is_everything_before_the_prompt_target():
    from rl_align.data.prompts import seen_before

    split = {"seq_items": np.array([10, 11, 12, 13, 14, 15, 20, 21, 22]), "seq_offsets": np.array([0, 6, 9]),
             "train_users": np.array([0, 0, 1]), "train_positions": np.array([1, 3, 1])}
    assert seen_before(split, np.array([0, 1, 2])).tolist() == [[10, -1, -1], [10, 11, 12], [20, -1, -1]]
    assert seen_before(split, np.array([1])).tolist() == [[10, 11, 12]]


def test_serving_prompts_are_each_users_training_history_and_nothing_held_out():
    from rl_align.data.prompts import pad_cat, serving_prompts

    # user 0: a b c d e f (valid = e at 4, test = f); user 1: g h i (valid = h at 1)
    split = {"seq_items": np.array([10, 11, 12, 13, 14, 15, 20, 21, 22]), "seq_offsets": np.array([0, 6, 9]),
             "valid_users": np.array([0, 1]), "valid_positions": np.array([4, 1]),
             "valid_history": np.array([[11, 12, 13], [20, -1, -1]]),
             "test_users": np.array([0, 1]), "test_positions": np.array([5, 2]),
             "test_history": np.array([[12, 13, 14], [20, 21, -1]])}
    s = serving_prompts(split)
    assert s["users"].tolist() == [0, 1] and s["history"].tolist() == [[11, 12, 13], [20, -1, -1]]
    assert s["seen"].tolist() == [[10, 11, 12, 13], [20, -1, -1, -1]]   # never 14/21 (valid) or 15/22 (test)
    t = serving_prompts(split, "test")                                   # the valid event is history now
    assert t["history"].tolist() == [[12, 13, 14], [20, 21, -1]]
    assert t["seen"].tolist() == [[10, 11, 12, 13, 14], [20, 21, -1, -1, -1]]   # never 15/22 (test)
    assert pad_cat(np.array([[1, 2]]), np.array([[3, 4, 5]])).tolist() == [[1, 2, -1], [3, 4, 5]]
