"""Is one model's gain over another real? Paired tests over the queries of one evaluation.

Two models scored on the same queries give paired per-query APs ``a`` and ``b`` (``(Q,)``
float). The *gain* is ``mean(b − a)``. Queries of one class share their positives, so they are not
independent draws: both tests here resample or count whole **groups** (the class of each query;
one group per query reduces them to the plain per-query versions):

* :func:`paired_bootstrap` — the percentile bootstrap of the gain, resampling groups with
  replacement (the *cluster* bootstrap; the statistic of a resample is the mean of the pooled
  differences of its queries). It gives a one-sided lower confidence bound (the gain is above it
  with probability ``confidence``) and the symmetric upper end; ``significant`` means the lower
  bound is above 0. Seeded: the same inputs give the same interval on every process.
* :func:`sign_test` — the exact one-sided sign test on the groups' mean differences (ties dropped):
  the probability, if gains and losses were equally likely, of at least as many groups gaining.
* :func:`min_groups` — the fewest groups with which *any* test over groups can reach a level
  ``alpha``: ``ceil(log2(1 / alpha))``, since with ``n`` groups the most extreme outcome (every
  group gains) has probability ``2^-n`` under the sign-flip null. With fewer groups a bootstrap
  still produces an interval, but a meaningless one (three classes that all gain give a lower bound
  above 0 every time), so the call is not made.

Several comparisons against the same ``a`` at once:

* :func:`simultaneous_bootstrap` — the studentized **max-T step-down** bootstrap (Romano & Wolf,
  2005): every candidate's gain is resampled with the *same* draws of groups, so the joint
  distribution of the gains, their correlation included, is kept; the critical value is the
  ``confidence`` quantile of the largest centred, studentized gain over the candidates still in
  play, and candidates whose gain passes it are removed and the rest tested again. The chance that
  *any* candidate whose true gain is ≤ 0 is called significant is at most ``1 − confidence``
  (asymptotically in the groups, as for the single bootstrap), whatever the correlation; with
  nearly identical candidates it approaches the single comparison's, where Bonferroni (test each
  of ``K`` at ``(1 − confidence) / K``, :func:`paired_bootstrap`) stays at ``K`` comparisons' worth.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

#: bootstrap resamples drawn per chunk (bounds the memory of the (chunk, groups) count matrix)
_CHUNK_CELLS = 4_000_000


@dataclass(frozen=True)
class Gain:
    """A paired gain ``mean(b − a)`` and its bootstrap interval.

    estimate: the observed gain over all queries. low: the one-sided lower confidence bound at
    ``confidence`` (the ``1 − confidence`` quantile of the bootstrap distribution). high: the
    ``confidence`` quantile (so ``[low, high]`` is a two-sided ``2·confidence − 1`` interval).
    p_value: the bootstrap's one-sided p-value, the fraction of resamples with a gain ≤ 0
    (:func:`simultaneous_bootstrap`: the step-down adjusted one).
    queries, groups: how many of each the gain is over. resamples: bootstrap draws.
    critical: :func:`simultaneous_bootstrap`'s critical value, in standard errors, of the round
    that decided this gain (``low = estimate − critical·se``); NaN for :func:`paired_bootstrap`.
    """

    estimate: float
    low: float
    high: float
    confidence: float
    p_value: float
    queries: int
    groups: int
    resamples: int
    critical: float = float("nan")

    @property
    def significant(self) -> bool:
        """The lower confidence bound is above 0."""
        return self.low > 0.0


def _groups(n: int, groups: Optional[np.ndarray]) -> Tuple[np.ndarray, int]:
    """Group index ``0..G-1`` of each of ``n`` queries (each its own group when ``groups`` is None)."""
    if groups is None:
        return np.arange(n), n
    g = np.asarray(groups).reshape(-1)
    if g.shape != (n,):
        raise ValueError(f"groups: one per query, got {g.shape} for {n} queries")
    _, inv = np.unique(g, return_inverse=True)
    return inv.reshape(-1), int(inv.max()) + 1 if n else 0


def _pair(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, dtype=np.float64).reshape(-1), np.asarray(b, dtype=np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"paired scores differ in length: {a.shape} vs {b.shape}")
    if a.size == 0:
        raise ValueError("no queries to compare")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("paired scores must be finite")
    return b - a


def paired_bootstrap(a: np.ndarray, b: np.ndarray, groups: Optional[np.ndarray] = None, *,
                     confidence: float = 0.95, resamples: int = 10_000, seed: int = 0) -> Gain:
    """The gain ``mean(b − a)`` of paired scores with its cluster-bootstrap interval.

    Args:
        a, b: ``(Q,)`` float scores of the same queries under two models (per-query AP).
        groups: ``(Q,)`` the group (class) of each query; groups are resampled whole. ``None``:
            each query is its own group (the plain paired bootstrap).
        confidence: of the one-sided lower bound, in (0.5, 1).
        resamples: bootstrap draws (raise it for confidences near 1: the tail needs ~100 of them).
        seed: of the resampling (same inputs and seed, same interval).
    Returns:
        :class:`Gain`.
    """
    if not 0.5 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0.5, 1), got {confidence}")
    d = _pair(a, b)
    gid, G = _groups(d.size, groups)
    stats = _resample_gains(d[None, :], gid, G, resamples, seed)[:, 0]
    low, high = np.quantile(stats, [1.0 - confidence, confidence])
    return Gain(float(d.mean()), float(low), float(high), float(confidence), float(np.mean(stats <= 0.0)),
                int(d.size), int(G), int(stats.size))


def _resample_gains(D: np.ndarray, gid: np.ndarray, G: int, resamples: int, seed: int) -> np.ndarray:
    """``(resamples, K)`` gains of the rows of ``D (K, Q)`` under the same draws of ``G`` groups
    with replacement (the statistic of :func:`paired_bootstrap`, row by row): row ``k`` with one
    row is exactly what :func:`paired_bootstrap` draws with the same seed."""
    g_sum = np.stack([np.bincount(gid, weights=d, minlength=G) for d in D])  # (K, G)
    g_n = np.bincount(gid, minlength=G).astype(np.float64)
    rng = np.random.default_rng(seed)
    stats = np.empty((int(resamples), D.shape[0]))
    chunk = max(1, _CHUNK_CELLS // max(G, 1))
    for s in range(0, stats.shape[0], chunk):
        m = min(chunk, stats.shape[0] - s)
        counts = rng.multinomial(G, np.full(G, 1.0 / G), size=m).astype(np.float64)  # (m, G)
        stats[s:s + m] = (counts @ g_sum.T) / (counts @ g_n)[:, None]
    return stats


def simultaneous_bootstrap(a: np.ndarray, bs: Sequence[np.ndarray], groups: Optional[np.ndarray] = None, *,
                           confidence: float = 0.95, resamples: int = 10_000, seed: int = 0) -> List[Gain]:
    """The gains ``mean(b − a)`` of several candidates ``bs`` over the same ``a``, tested together
    by the studentized max-T step-down bootstrap (module docstring).

    For candidate ``k`` with gain ``g_k`` and resampled gains ``g*_bk`` (the same group draws for
    every ``k``), ``s_k`` is the standard deviation of ``g*_·k``, ``t_k = g_k / s_k`` and
    ``T*_bk = (g*_bk − g_k) / s_k``. With ``S`` the candidates not yet called significant (all at
    first), ``c_S`` is the ``confidence`` quantile of ``max_{k∈S} T*_bk``; every ``k ∈ S`` with
    ``t_k > c_S`` is significant and leaves ``S``; repeat until none leaves. A candidate's
    interval is ``[g_k − c·s_k, g_k + c·s_k]`` with the ``c`` of the round that decided it (for
    those never significant, the last round's), so ``low > 0`` exactly when it is significant, and
    the lower bounds of the first round hold together at ``confidence``. ``s_k = 0`` (every
    resample gives the same gain) makes ``t_k`` ±∞ or 0 and ``T*_bk = 0``.

    Args:
        a: ``(Q,)`` float scores of the reference (per-query AP of the simplest candidate).
        bs: ``K`` arrays ``(Q,)`` float: the candidates' scores of the same queries.
        groups: ``(Q,)`` the group (class) of each query, resampled whole (``None``: each query its own).
        confidence: that no candidate with a gain ≤ 0 is called significant, over all ``K``; in (0.5, 1).
        resamples: bootstrap draws, shared by all candidates.
        seed: of the resampling.
    Returns:
        one :class:`Gain` per candidate, in the order of ``bs``: ``confidence`` is the family's,
        ``p_value`` the step-down adjusted p-value (the fraction of resamples whose largest
        ``T*`` over the candidates at least as significant exceeds ``t_k``, made monotone).
    """
    if not 0.5 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0.5, 1), got {confidence}")
    if len(bs) == 0:
        return []
    D = np.stack([_pair(a, b) for b in bs])  # (K, Q)
    gid, G = _groups(D.shape[1], groups)
    stats = _resample_gains(D, gid, G, resamples, seed)  # (B, K)
    est = D.mean(axis=1)
    sd = stats.std(axis=0)
    tiny = sd <= 1e-12 * np.maximum(1.0, np.abs(est))
    safe = np.where(tiny, 1.0, sd)
    T = np.where(tiny, 0.0, (stats - est) / safe)  # (B, K)
    t = np.where(tiny, np.where(est > 0, np.inf, np.where(est < 0, -np.inf, 0.0)), est / safe)
    K = est.size
    crit = np.full(K, np.nan)
    active = np.ones(K, dtype=bool)
    while active.any():
        c = float(np.quantile(T[:, active].max(axis=1), confidence))
        passed = active & (t > c)
        crit[active] = c
        if not passed.any():
            break
        active &= ~passed
    # step-down adjusted p-values: in decreasing t, the max over the candidates not more significant
    order = np.argsort(-t, kind="stable")
    p = np.empty(K)
    run = 0.0
    for i, k in enumerate(order):
        rest = order[i:]
        run = max(run, float(np.mean(T[:, rest].max(axis=1) >= t[k])))
        p[k] = run
    return [Gain(float(est[k]), float(est[k] - crit[k] * sd[k]), float(est[k] + crit[k] * sd[k]), float(confidence),
                 float(p[k]), int(D.shape[1]), int(G), int(stats.shape[0]), float(crit[k])) for k in range(K)]


def sign_test(a: np.ndarray, b: np.ndarray, groups: Optional[np.ndarray] = None) -> Tuple[int, int, float]:
    """The exact one-sided sign test of "``b`` beats ``a``" over groups.

    Each group's mean difference ``b − a`` counts as a gain (> 0), a loss (< 0) or a tie (dropped).
    Returns ``(gains, n, p)``: groups that gain, groups that are not ties, and
    ``P(X ≥ gains)`` for ``X ~ Binomial(n, 1/2)`` (1.0 when ``n = 0``).
    """
    d = _pair(a, b)
    gid, G = _groups(d.size, groups)
    means = np.bincount(gid, weights=d, minlength=G) / np.bincount(gid, minlength=G)
    gains, n = int((means > 0).sum()), int((means != 0).sum())
    p = sum(math.comb(n, k) for k in range(gains, n + 1)) / 2.0 ** n if n else 1.0
    return gains, n, float(p)


def min_groups(alpha: float) -> int:
    """The fewest groups with which a test over groups can reach level ``alpha`` (module
    docstring): ``ceil(log2(1/alpha))``, e.g. 5 for 0.05, 9 for 0.05 / 20."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    return max(1, math.ceil(math.log2(1.0 / alpha) - 1e-12))
