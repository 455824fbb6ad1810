"""Top-k by inner product: exact search over blocks of rows, merging top-k lists, dropping ids.

The blocks may be memory-mapped (a descriptor file larger than RAM): each is searched exactly
with faiss's brute-force ``knn`` and the per-block top-k lists are merged.
"""
from __future__ import annotations

from typing import Iterable, List, Tuple

import faiss
import numpy as np

BLOCK_ROWS = 1 << 18


def merge_topk(scores: List[np.ndarray], ids: List[np.ndarray], k: int) -> Tuple[np.ndarray, np.ndarray]:
    """Merge per-part results (each (Q, k_i) float32 scores, best first, and int64 ids, −1 = none)
    into the best ``k``: (Q, k) float32 and (Q, k) int64 (−1 and −inf pad)."""
    S = np.concatenate(scores, axis=1) if scores else np.zeros((0, 0), np.float32)
    I = np.concatenate(ids, axis=1) if ids else np.zeros((0, 0), np.int64)
    S = np.where(I < 0, -np.inf, S).astype(np.float32)
    order = np.argsort(-S, axis=1, kind="stable")[:, :k]
    S, I = np.take_along_axis(S, order, 1), np.take_along_axis(I, order, 1)
    if S.shape[1] < k:
        pad = k - S.shape[1]
        S = np.concatenate([S, np.full((S.shape[0], pad), -np.inf, np.float32)], 1)
        I = np.concatenate([I, np.full((I.shape[0], pad), -1, np.int64)], 1)
    return S, I


def exact_knn(Q: np.ndarray, blocks: Iterable[Tuple[np.ndarray, int]], k: int) -> Tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` inner products of ``Q`` (q, D) float32 against ``blocks`` of
    ``(rows (n_i, D) float32, id of the first row)``; returns (q, k) float32, (q, k) int64."""
    scores, ids = [], []
    for X, first in blocks:
        for a in range(0, X.shape[0], BLOCK_ROWS):
            part = np.ascontiguousarray(X[a:a + BLOCK_ROWS], dtype=np.float32)
            kk = min(k, part.shape[0])
            if kk == 0:
                continue
            s, i = faiss.knn(Q, part, kk, faiss.METRIC_INNER_PRODUCT)
            scores.append(s.astype(np.float32))
            ids.append(np.where(i >= 0, i + first + a, -1).astype(np.int64))
    return merge_topk(scores, ids, k)


def drop_ids(scores: np.ndarray, ids: np.ndarray, dropped: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
    """Remove ``dropped`` ids (sorted int64) from (Q, m) results, keeping the order; the first
    ``k`` kept per row, padded with −1 / −inf."""
    if dropped.size:
        gone = np.isin(ids, dropped)
        ids = np.where(gone, -1, ids)
    return merge_topk([scores], [ids], k)
