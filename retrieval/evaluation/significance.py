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

Levels for several comparisons at once (Bonferroni) are the caller's: test each of ``K``
comparisons at ``alpha / K`` to hold the chance of any false "significant" at ``alpha``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

#: bootstrap resamples drawn per chunk (bounds the memory of the (chunk, groups) count matrix)
_CHUNK_CELLS = 4_000_000


@dataclass(frozen=True)
class Gain:
    """A paired gain ``mean(b − a)`` and its bootstrap interval.

    estimate: the observed gain over all queries. low: the one-sided lower confidence bound at
    ``confidence`` (the ``1 − confidence`` quantile of the bootstrap distribution). high: the
    ``confidence`` quantile (so ``[low, high]`` is a two-sided ``2·confidence − 1`` interval).
    p_value: the bootstrap's one-sided p-value, the fraction of resamples with a gain ≤ 0.
    queries, groups: how many of each the gain is over. resamples: bootstrap draws.
    """

    estimate: float
    low: float
    high: float
    confidence: float
    p_value: float
    queries: int
    groups: int
    resamples: int

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
    g_sum = np.bincount(gid, weights=d, minlength=G)
    g_n = np.bincount(gid, minlength=G).astype(np.float64)
    rng = np.random.default_rng(seed)
    stats = np.empty(int(resamples))
    chunk = max(1, _CHUNK_CELLS // max(G, 1))
    for s in range(0, stats.size, chunk):
        m = min(chunk, stats.size - s)
        counts = rng.multinomial(G, np.full(G, 1.0 / G), size=m).astype(np.float64)  # (m, G)
        stats[s:s + m] = (counts @ g_sum) / (counts @ g_n)
    low, high = np.quantile(stats, [1.0 - confidence, confidence])
    return Gain(float(d.mean()), float(low), float(high), float(confidence), float(np.mean(stats <= 0.0)),
                int(d.size), int(G), int(stats.size))


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
