"""Cold-start protocol: held-out tail items never reach training, and every removed interaction is a case."""

import numpy as np
import pytest

from rl_align.data.cold import choose_cold_items, cold_start_split, split_cold_valid
from rl_align.data.split import leave_one_out


def test_cold_items_are_tail_items_and_vanish_from_training(ml100k):
    pop = ml100k.item_popularity()
    cold = choose_cold_items(pop, 0.1, head_share=0.2, seed=0)
    head = np.argsort(-pop, kind="stable")[: int(round(0.2 * ml100k.n_items))]
    assert cold.size == round(0.1 * ((pop > 0).sum() - head.size)) and not set(cold) & set(head)
    assert (pop[cold] > 0).all()
    warm, cases = cold_start_split(ml100k, cold, max_history=20)
    assert not np.isin(warm.items, cold).any()
    assert warm.n_interactions + cases["targets"].size == ml100k.n_interactions   # each removed one is a case
    assert np.isin(cases["targets"], cold).all()
    split = leave_one_out(warm, 20)
    for part in (split.train, split.valid, split.test):
        assert not np.isin(part.targets, cold).any() and not np.isin(part.history, cold).any()
    # a case's history is the user's non-cold items before it, oldest first, the last 20
    r = 0
    u, t = cases["users"][r], cases["targets"][r]
    order = np.lexsort((np.arange(ml100k.n_interactions), ml100k.timestamps, ml100k.users))
    seq = ml100k.items[order][ml100k.users[order] == u].tolist()
    before = [i for i in seq[: seq.index(t)] if i not in set(cold.tolist())][-20:]
    assert cases["history"][r, : cases["history_len"][r]].tolist() == before
    assert cases["positions"][r] == len([i for i in seq[: seq.index(t)] if i not in set(cold.tolist())])


def test_cold_share_out_of_range_is_refused():
    with pytest.raises(ValueError, match="data.cold_share"):
        choose_cold_items(np.ones(10), 1.0)


def test_data_stage_writes_cold_cases_and_eval_set_reads_them(tmp_path, ml100k):
    from pathlib import Path

    from rl_align.config import RunConfig, load_config
    from rl_align.eval.evaluate import eval_set
    from rl_align.pipeline import run_pipeline
    from rl_align.utils.io import load_npz

    quick = Path(__file__).resolve().parents[1] / "experiments/configs/quick.yaml"
    cfg = load_config(quick, RunConfig, ["data.cold_share=0.1", "embed.cf_fill_neighbours=10"])
    cfg.stages = ["data"]
    run_pipeline(cfg, tmp_path / "run")
    split = load_npz(tmp_path / "run" / "data" / "split.npz")
    cold = split["cold_items"]
    assert cold.size > 0 and (split["item_popularity"][cold] == 0).all()    # tokenizers see them as unseen
    es = eval_set(split, "cold")
    assert es.targets.size == split["cold_targets"].size and np.isin(es.targets, cold).all()
    # items seen before a cold interaction are excluded from its ranking, never the cold target itself
    assert not (es.seen == es.targets[:, None]).any()
    with pytest.raises(ValueError, match="cold-start protocol needs data.cold_share"):
        eval_set({k: v for k, v in split.items() if not k.startswith("cold_")}, "cold")
    # a cold-valid part: whole items move, every case lands on exactly one side, α counts both
    from rl_align.eval.cold_expand import measured_cold_prior

    two = split_cold_valid(split, 0.5, seed=3)
    assert split_cold_valid(split, 0.0) is split
    cv, ct = two["cold_valid_items"], two["cold_items"]
    assert cv.size == round(0.5 * cold.size) and not set(cv) & set(ct) and set(cv) | set(ct) == set(cold)
    assert np.isin(two["cold_valid_targets"], cv).all() and np.isin(two["cold_targets"], ct).all()
    rows = lambda d, p: sorted(zip(d[f"{p}_users"].tolist(), d[f"{p}_targets"].tolist(), d[f"{p}_positions"].tolist(),
                                   map(tuple, d[f"{p}_history"].tolist())))
    assert sorted(rows(two, "cold") + rows(two, "cold_valid")) == rows(split, "cold")
    assert measured_cold_prior(two) == measured_cold_prior(split)
    assert eval_set(two, "cold_valid").targets.size == two["cold_valid_targets"].size
    assert not np.array_equal(split_cold_valid(split, 0.5, seed=4)["cold_valid_items"], cv)
    for bad, msg in ((1.0, "in \\[0, 1\\)"), (1e-6, "at least one on each side")):
        with pytest.raises(ValueError, match=msg):
            split_cold_valid(split, bad)
    with pytest.raises(ValueError, match="needs the cold-start protocol"):
        split_cold_valid({k: v for k, v in split.items() if not k.startswith("cold_")}, 0.5)
    with pytest.raises(ValueError, match="cold_valid_share > 0"):
        eval_set(split, "cold_valid")
