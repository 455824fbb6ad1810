"""retrieval.evaluation.significance: the paired cluster bootstrap and the sign test, against a
hand-worked example and scipy."""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats

from retrieval.evaluation.significance import min_groups, paired_bootstrap, sign_test, simultaneous_bootstrap


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


# ----------------------------------------------------------------------------------------------
# Several candidates at once: the max-T step-down bootstrap
# ----------------------------------------------------------------------------------------------
def test_max_t_by_hand():
    """Two groups, one query each. Candidate 1 gains 0.1 and 0.3, candidate 2 the reverse: both
    gain 0.2. A resample is {A, A} (¼), {A, B} (½) or {B, B} (¼), so candidate 1's resampled gain is
    0.1, 0.2 or 0.3 and candidate 2's the mirror: the largest centred gain over both is +0.1 (½) or
    0 (½), its 90 % quantile +0.1 = c·s, and each candidate's bound is 0.2 − 0.1 = 0.1 > 0. A third
    candidate that gains −0.1 and +0.2 (0.05) has ``t`` below ``c`` in every round."""
    a = np.zeros(2)
    bs = [np.array([0.1, 0.3]), np.array([0.3, 0.1]), np.array([-0.1, 0.2])]
    g1, g2, g3 = simultaneous_bootstrap(a, bs, confidence=0.9, resamples=40_000, seed=0)
    for g in (g1, g2):
        assert g.estimate == pytest.approx(0.2) and g.significant
        assert g.low == pytest.approx(0.1) and g.high == pytest.approx(0.3)
        assert g.confidence == 0.9 and (g.queries, g.groups) == (2, 2)
    assert g3.estimate == pytest.approx(0.05) and not g3.significant and g3.low < 0


def _max_t_reference(a, bs, groups, confidence, resamples, seed):
    """The step-down max-T written out with loops (the same group draws as the library's)."""
    _, gid = np.unique(groups, return_inverse=True)
    G = gid.max() + 1
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(G, np.full(G, 1.0 / G), size=resamples)
    K = len(bs)
    est = np.array([np.mean(b - a) for b in bs])
    star = np.empty((resamples, K))
    for r in range(resamples):
        w = counts[r][gid]  # each query weighted by its group's count
        for k in range(K):
            star[r, k] = np.sum(w * (bs[k] - a)) / np.sum(w)
    sd = star.std(axis=0)
    T = (star - est) / sd
    t = est / sd
    left, crit = list(range(K)), np.zeros(K)
    while left:
        c = np.quantile(T[:, left].max(axis=1), confidence)
        for k in left:
            crit[k] = c
        gone = [k for k in left if t[k] > c]
        if not gone:
            break
        left = [k for k in left if k not in gone]
    return est - crit * sd, est + crit * sd


def test_max_t_matches_a_loop_reference():
    rng = np.random.default_rng(3)
    groups = np.repeat(np.arange(9), rng.integers(2, 6, 9))
    a = rng.uniform(0.3, 0.9, groups.size)
    common = np.repeat(rng.normal(0, 0.03, 9), np.bincount(groups))
    bs = [np.clip(a + s + common + rng.normal(0, 0.02, a.size), 0, 1) for s in (0.06, 0.05, 0.0, -0.02)]
    gains = simultaneous_bootstrap(a, bs, groups, confidence=0.95, resamples=2000, seed=5)
    low, high = _max_t_reference(a, bs, groups, 0.95, 2000, 5)
    np.testing.assert_allclose([g.low for g in gains], low, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose([g.high for g in gains], high, rtol=1e-9, atol=1e-12)
    assert [g.significant for g in gains] == list(low > 0)
    assert gains[0].significant and not gains[3].significant


def test_one_candidate_is_the_basic_bootstrap_and_copies_cost_nothing():
    """With one candidate the bound is the basic bootstrap's, 2·gain − (the ``confidence``
    quantile of the resampled gains), on the very resamples of :func:`paired_bootstrap`; ten
    copies of it (perfectly correlated candidates) give the same bound, where Bonferroni would
    test each at 0.5 %."""
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(12), 4)
    a = rng.uniform(0.4, 0.9, 48)
    b = np.clip(a + 0.03 + np.repeat(rng.normal(0, 0.04, 12), 4), 0, 1)
    one = simultaneous_bootstrap(a, [b], groups, resamples=5000, seed=2)[0]
    ref = paired_bootstrap(a, b, groups, confidence=0.95, resamples=5000, seed=2)
    assert one.estimate == pytest.approx(ref.estimate)
    assert one.low == pytest.approx(2 * ref.estimate - ref.high, rel=1e-9)
    ten = simultaneous_bootstrap(a, [b] * 10, groups, resamples=5000, seed=2)
    assert all(g.low == pytest.approx(one.low) for g in ten)
    bonf = paired_bootstrap(a, b, groups, confidence=1 - 0.05 / 10, resamples=20_000, seed=2)
    assert bonf.low < one.low


@pytest.mark.slow
def test_max_t_holds_its_level_under_the_null():
    """No candidate gains (11 correlated candidates, as successive epochs are): over 300 seeded
    validation sets, the share where any is called significant stays near 5 %, and a real gain
    shared by them passes more often than under Bonferroni."""
    rng = np.random.default_rng(11)
    G, per, K = 16, 4, 11
    groups = np.repeat(np.arange(G), per)
    false = bonf_hits = maxt_hits = 0
    for i in range(300):
        a = rng.uniform(0.3, 0.9, G * per)
        shared = np.repeat(rng.normal(0, 0.04, G), per)
        noise = [np.repeat(rng.normal(0, 0.01, G), per) for _ in range(K)]
        null = [a + shared + n for n in noise]  # each class's gain drawn around 0
        false += any(g.significant for g in simultaneous_bootstrap(a, null, groups, resamples=1000, seed=i))
        if i < 60:  # power: the same candidates gaining 0.03
            real = [x + 0.03 for x in null]
            maxt_hits += simultaneous_bootstrap(a, real, groups, resamples=1000, seed=i)[0].significant
            bonf_hits += paired_bootstrap(a, real[0], groups, confidence=1 - 0.05 / K, resamples=4000,
                                          seed=i).significant
    assert false / 300 <= 0.08, false
    assert maxt_hits > bonf_hits, (maxt_hits, bonf_hits)
