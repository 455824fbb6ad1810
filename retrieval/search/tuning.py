"""How close an approximate index comes to exact search, and the cheapest setting that reaches a recall.

``knn_recall`` is the measure faiss's benchmarks and autofaiss report ("1-recall@k" generalised to
k): for each query, the share of the exact top-k that the index also returns in its top-k,
averaged over queries. ``smallest_reaching`` walks a knob (``nprobe``, ``efSearch``, re-ranked
candidates) from cheap to dear and stops at the first value whose recall reaches a target — the
same search autofaiss does on ``efSearch`` / ``nprobe`` when it tunes an index, here against an
explicit recall instead of a time per query. Both are used by ``benchmarks/bench_peers.py`` to
compare indexes at matched recall.
"""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Tuple, TypeVar

import numpy as np

T = TypeVar("T")


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
