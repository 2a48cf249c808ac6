"""Paired significance of HR@K between two policies (pure numpy)."""

import numpy as np
import pytest


def test_paired_hr_mcnemar_and_bootstrap():
    from rl_align.eval.evaluate import target_ranks
    from rl_align.eval.significance import mcnemar_exact, paired_hr

    assert target_ranks(np.array([[3, 1, -1], [5, 6, 7]]), np.array([1, 9])).tolist() == [1, -1]
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(5, 0) == pytest.approx(2 / 32)            # 2 · ½⁵
    assert mcnemar_exact(3, 3) == 1.0
    # B hits 20 extra users and loses 5 of A's 100: ratio 115/100, discordant 20 vs 5
    a = np.full(1000, -1)
    b = np.full(1000, -1)
    a[:100] = 0
    b[5:120] = 3
    b[100:105] = 10                                                  # retrieved, but outside the top 10
    r = paired_hr(a, b, k=10, n_boot=500)
    assert (r["wins"], r["losses"]) == (15, 5) and r["ratio"] == pytest.approx(1.10)
    assert r["p"] == pytest.approx(mcnemar_exact(15, 5)) and 0.02 < r["p"] < 0.05
    assert r["ci_low"] < 1.10 < r["ci_high"]
    same = paired_hr(a, a, n_boot=200)
    assert same["ratio"] == 1.0 and same["p"] == 1.0 and same["ci_low"] == same["ci_high"] == 1.0
    with pytest.raises(ValueError, match="same users"):
        paired_hr(a, b[:10])


def test_mcnemar_exact_with_more_than_1023_discordant_pairs():
    """2 ** n overflows a float past n = 1023: pooled cold cases over five seeds reach that."""
    import math

    from rl_align.eval.significance import mcnemar_exact

    assert mcnemar_exact(600, 600) == 1.0
    even = mcnemar_exact(560, 540)                                  # n = 1100, a small imbalance
    assert 0.5 < even < 0.6                                         # normal approx.: 2·(1 − Φ(19.5 / √275)) ≈ 0.56
    assert mcnemar_exact(400, 700) < 1e-15                          # far from even: tiny, not an error
    assert mcnemar_exact(51, 49) == pytest.approx(2 * sum(math.comb(100, i) for i in range(50)) / 2 ** 100)


def test_the_clustered_sign_test_counts_clusters_not_cases():
    from rl_align.eval.significance import clustered_sign_test, mcnemar_exact

    # cluster 0: B hits 9 of its 10 cases, A none; clusters 1-3: A hits one case each, B none
    clusters = np.repeat([0, 1, 2, 3], 10)
    a = np.zeros(40, bool)
    a[[10, 20, 30]] = True
    b = np.zeros(40, bool)
    b[:9] = True
    r = clustered_sign_test(a, b, clusters)
    assert (r["wins"], r["losses"], r["clusters"]) == (1, 3, 4) and r["p"] == mcnemar_exact(1, 3)
    assert mcnemar_exact(9, 3) < 0.15 < r["p"]           # case by case B looks ahead; cluster by cluster it is not
    tie = clustered_sign_test(a, a, clusters)
    assert (tie["wins"], tie["losses"], tie["p"]) == (0, 0, 1.0)
    with pytest.raises(ValueError, match="three"):
        clustered_sign_test(a, b, clusters[:-1])
