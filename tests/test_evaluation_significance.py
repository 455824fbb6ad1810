"""retrieval.evaluation.significance: the paired cluster bootstrap and the sign test, against a
hand-worked example and scipy."""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats

from retrieval.evaluation.significance import min_groups, paired_bootstrap, sign_test


def test_two_groups_by_hand():
    """Two groups with mean differences −1 and +3 (one query each): a resample is {A, A} (¼, gain
    −1), {A, B} (½, gain +1) or {B, B} (¼, gain +3). So P(gain ≤ 0) = ¼, the 10 % quantile is −1
    (not significant) and the 90 % quantile is +3."""
    a = np.zeros(2)
    b = np.array([-1.0, 3.0])
    g = paired_bootstrap(a, b, confidence=0.9, resamples=40_000, seed=0)
    assert g.estimate == pytest.approx(1.0)
    assert g.low == -1.0 and g.high == 3.0 and not g.significant
    assert g.p_value == pytest.approx(0.25, abs=0.01)
    assert (g.queries, g.groups) == (2, 2)


def test_groups_are_resampled_whole():
    """Group A: queries with differences 0, 0, 0 (sum 0, 3 queries); group B: 4 (one query). The
    pooled mean of a resample is {A, A}: 0, {A, B}: 4/4 = 1, {B, B}: 4 — with the probabilities ¼,
    ½, ¼; the observed gain is the mean over the 4 queries, 1."""
    a = np.zeros(4)
    b = np.array([0.0, 0.0, 0.0, 4.0])
    groups = np.array([7, 7, 7, 2])
    g = paired_bootstrap(a, b, groups, confidence=0.8, resamples=40_000, seed=1)
    assert g.estimate == pytest.approx(1.0) and g.groups == 2 and g.queries == 4
    assert (g.low, g.high) == (0.0, 4.0)  # the 20 % and 80 % quantiles of {0: ¼, 1: ½, 4: ¼}
    assert g.p_value == pytest.approx(0.25, abs=0.01)


@pytest.mark.parametrize("shift", [0.0, 0.05, 0.2])
def test_per_query_bootstrap_matches_scipy(shift):
    """One group per query: the percentile bound is scipy.stats.bootstrap's (paired, percentile,
    one-sided) up to the Monte-Carlo error of two independent resamplings."""
    rng = np.random.default_rng(3)
    a = rng.uniform(0, 1, 60)
    b = np.clip(a + shift + rng.normal(0, 0.2, 60), 0, 1)
    g = paired_bootstrap(a, b, confidence=0.95, resamples=20_000, seed=0)
    ref = scipy.stats.bootstrap((a, b), lambda x, y, axis=-1: np.mean(y - x, axis=axis), paired=True,
                                vectorized=True, method="percentile", alternative="greater",
                                confidence_level=0.95, n_resamples=20_000, rng=np.random.default_rng(9))
    se = np.std(b - a) / math.sqrt(60)
    assert g.low == pytest.approx(ref.confidence_interval.low, abs=0.05 * se)
    assert g.estimate == pytest.approx(np.mean(b - a))
    assert g.significant == (ref.confidence_interval.low > 0)


def test_equal_groups_match_scipy_on_group_means():
    """Groups of equal size: resampling groups is the bootstrap of the groups' mean differences."""
    rng = np.random.default_rng(5)
    G, k = 12, 4
    effect = rng.normal(0.03, 0.05, G)  # each class gains differently
    a = rng.uniform(0.3, 0.9, G * k)
    b = a + np.repeat(effect, k) + rng.normal(0, 0.01, G * k)
    groups = np.repeat(np.arange(G), k)
    g = paired_bootstrap(a, b, groups, confidence=0.95, resamples=20_000, seed=0)
    means = (b - a).reshape(G, k).mean(1)
    ref = scipy.stats.bootstrap((means,), np.mean, method="percentile", alternative="greater",
                                confidence_level=0.95, n_resamples=20_000, rng=np.random.default_rng(1))
    assert g.low == pytest.approx(ref.confidence_interval.low, abs=0.05 * means.std() / math.sqrt(G))
    assert g.groups == G and g.queries == G * k


def test_seeded_and_checked():
    a, b = np.zeros(5), np.arange(5.0)
    assert paired_bootstrap(a, b, seed=4) == paired_bootstrap(a, b, seed=4)
    with pytest.raises(ValueError):
        paired_bootstrap(a, b[:4])
    with pytest.raises(ValueError):
        paired_bootstrap(a, b, confidence=1.0)
    with pytest.raises(ValueError):
        paired_bootstrap(a, np.full(5, np.nan))


def test_sign_test_matches_scipy_binomtest():
    rng = np.random.default_rng(2)
    for trial in range(5):
        G = int(rng.integers(3, 15))
        groups = np.repeat(np.arange(G), 3)
        a = rng.uniform(size=3 * G)
        b = a + rng.normal(0.02 * trial, 0.05, 3 * G)
        gains, n, p = sign_test(a, b, groups)
        means = (b - a).reshape(G, 3).mean(1)
        assert (gains, n) == (int((means > 0).sum()), G)
        assert p == pytest.approx(scipy.stats.binomtest(gains, n, 0.5, alternative="greater").pvalue)
    # by hand: 3 groups, all gain: p = 1/8; a tie is dropped
    assert sign_test(np.zeros(4), np.array([1.0, 2.0, 3.0, 0.0])) == (3, 3, 0.125)


def test_min_groups_is_where_the_extreme_outcome_reaches_the_level():
    for alpha in (0.05, 0.01, 0.05 / 20, 0.05 / 300):
        n = min_groups(alpha)
        assert 0.5 ** n <= alpha < 0.5 ** (n - 1)
        all_gain = sign_test(np.zeros(n), np.ones(n))[2]
        assert all_gain <= alpha and sign_test(np.zeros(n - 1), np.ones(n - 1))[2] > alpha
    assert min_groups(0.05) == 5 and min_groups(0.05 / 20) == 9
