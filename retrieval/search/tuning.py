"""How close an approximate index comes to exact search, and the cheapest setting that reaches a recall.

``knn_recall`` is the measure faiss's benchmarks and autofaiss report ("1-recall@k" generalised to
k): for each query, the share of the exact top-k that the index also returns in its top-k,
averaged over queries. ``smallest_reaching`` walks a knob (``nprobe``, ``efSearch``, re-ranked
candidates) from cheap to dear and stops at the first value whose recall reaches a target — the
same search autofaiss does on ``efSearch`` / ``nprobe`` when it tunes an index, here against an
explicit recall instead of a time per query. Both are used by ``benchmarks/bench_peers.py`` to
compare indexes at matched recall, and by :mod:`retrieval.search.build`, which stores the cheapest
``efSearch`` / ``nprobe`` of :data:`EF_LADDER` / :func:`nprobe_ladder` reaching a target recall on
held-out rows (:func:`without_self` takes a database row's own id out of its lists).
"""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Tuple, TypeVar

import numpy as np

T = TypeVar("T")
#: efSearch values a build tries, cheap → dear: steps of about 1.25×, so the value stored is within
#: a quarter of the cheapest that reaches the target
EF_LADDER = (16, 20, 24, 32, 40, 48, 64, 80, 96, 128, 160, 192, 256, 320, 384, 512, 640, 768, 1024)


def nprobe_ladder(nlist: int) -> List[int]:
    """nprobe values a build tries for ``nlist`` inverted lists: 1, 2, 4, … (powers of two below
    ``nlist``), then ``nlist`` itself (every list: exact for lossless codes)."""
    out, v = [], 1
    while v < nlist:
        out.append(v)
        v *= 2
    return out + [max(1, int(nlist))]


def without_self(ids: np.ndarray, own: np.ndarray, k: int) -> np.ndarray:
    """The first ``k`` ids of each row of ``ids`` other than that row's ``own`` id, order kept.

    Args:
        ids: (Q, m) int64 results of searching database rows (−1 = none), best first.
        own: (Q,) int64 the id of each query row in the database.
        k: columns kept; a row with fewer than ``k`` others is padded with −1.
    Returns:
        (Q, k) int64.
    """
    ids, own = np.asarray(ids, np.int64), np.asarray(own, np.int64).reshape(-1)
    if ids.ndim != 2 or ids.shape[0] != own.shape[0]:
        raise ValueError(f"ids {ids.shape} and own {own.shape}: expected (Q, m) and (Q,)")
    keep = (ids != own[:, None]) & (ids >= 0)
    # stable: the kept ids first, in their order, then the dropped ones (as −1)
    order = np.argsort(~keep, axis=1, kind="stable")
    out = np.where(np.take_along_axis(keep, order, 1), np.take_along_axis(ids, order, 1), -1)[:, :k]
    if out.shape[1] < k:
        out = np.concatenate([out, np.full((out.shape[0], k - out.shape[1]), -1, np.int64)], axis=1)
    return out


def knn_recall(ids: np.ndarray, truth: np.ndarray, k: int) -> float:
    """Mean over queries of |ids[q, :k] ∩ truth[q, :k]| / k.

    Args:
        ids: (Q, ≥k) int64 ids returned by the index, best first; −1 (no result) never matches,
            and an id returned twice counts once.
        truth: (Q, ≥k) int64 exact top-k ids, best first, distinct within a row.
        k: how many of each list count (both need at least ``k`` columns).
    Returns:
        recall@k in [0, 1] (1.0 for Q = 0).
    """
    ids, truth = np.asarray(ids), np.asarray(truth)
    if ids.ndim != 2 or truth.ndim != 2 or ids.shape[0] != truth.shape[0]:
        raise ValueError(f"ids {ids.shape} and truth {truth.shape}: expected two (Q, k) arrays of the same Q")
    if k < 1 or ids.shape[1] < k or truth.shape[1] < k:
        raise ValueError(f"k = {k}: both arrays need at least k ≥ 1 columns (ids {ids.shape}, truth {truth.shape})")
    if ids.shape[0] == 0:
        return 1.0
    a, t = ids[:, :k], truth[:, :k]
    found = ((t[:, :, None] == a[:, None, :]) & (t[:, :, None] >= 0)).any(axis=2)  # each true id: returned?
    return float(found.sum(axis=1).mean() / k)


def smallest_reaching(values: Sequence[T], recall_of: Callable[[T], float],
                      target: float) -> Tuple[Optional[T], List[Tuple[T, float]]]:
    """The first of ``values`` (ordered cheap → dear) whose ``recall_of`` reaches ``target``.

    Stops at that value, so the dear end of the ladder is only searched when needed.
    Returns ``(value or None when none reaches it, [(value, recall), ...] as measured)``.
    """
    seen: List[Tuple[T, float]] = []
    for v in values:
        r = float(recall_of(v))
        seen.append((v, r))
        if r >= target:
            return v, seen
    return None, seen
