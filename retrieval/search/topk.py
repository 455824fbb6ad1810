"""Top-k by inner product: exact search over blocks of rows, merging top-k lists, dropping ids.

The blocks may be memory-mapped (a descriptor file larger than RAM): each is searched exactly
with faiss's brute-force ``knn`` and the per-block top-k lists are merged.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, List, Optional, Tuple

import faiss
import numpy as np

from retrieval.search.factory import ivf_of

BLOCK_ROWS = 1 << 18


def rerank_exact(Q: np.ndarray, cand: np.ndarray, rows: Callable[[np.ndarray], np.ndarray],
                 k: int) -> Tuple[np.ndarray, np.ndarray]:
    """The candidates ``cand`` ((Q, C) int64, −1 = none) of the (Q, D) float32 queries ``Q``
    re-ranked by their exact inner products with ``rows(ids)`` ((n,) int64 → (n, D) float32):
    scores (Q, k) float32, best first (ties in candidate order, −1 last), and ids (Q, k) int64."""
    X = rows(np.clip(cand, 0, None).reshape(-1)).reshape(cand.shape + (Q.shape[1],))
    exact = np.einsum("qkd,qd->qk", X, Q)
    exact[cand < 0] = -np.inf
    order = np.argsort(-exact, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(exact, order, 1).astype(np.float32), np.take_along_axis(cand, order, 1)


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


def exact_knn(Q: np.ndarray, blocks: Iterable[Tuple[np.ndarray, int]], k: int,
              removed: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` inner products of ``Q`` (q, D) float32 against ``blocks`` of
    ``(rows (n_i, D) float32, id of the first row)``; returns (q, k) float32, (q, k) int64.
    ``removed``: sorted int64 ids never returned (each block asks for ``k`` plus the removed ids
    it holds, so the cost follows the removed rows of a block, not of the whole index)."""
    removed = np.zeros(0, np.int64) if removed is None else np.asarray(removed, np.int64)
    scores, ids = [], []
    for X, first in blocks:
        for a in range(0, X.shape[0], BLOCK_ROWS):
            part = np.ascontiguousarray(X[a:a + BLOCK_ROWS], dtype=np.float32)
            lo, hi = np.searchsorted(removed, [first + a, first + a + part.shape[0]])
            kk = min(k + int(hi - lo), part.shape[0])
            if kk == 0:
                continue
            s, i = faiss.knn(Q, part, kk, faiss.METRIC_INNER_PRODUCT)
            i = np.where(i >= 0, i + first + a, -1).astype(np.int64)
            if hi > lo:
                s, i = drop_ids(s.astype(np.float32), i, removed[lo:hi], min(k, kk))
            scores.append(s.astype(np.float32))
            ids.append(i)
    return merge_topk(scores, ids, k)


def drop_ids(scores: np.ndarray, ids: np.ndarray, dropped: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
    """Remove ``dropped`` ids (sorted int64) from (Q, m) results, keeping the order; the first
    ``k`` kept per row, padded with −1 / −inf."""
    if dropped.size:
        gone = np.isin(ids, dropped)
        ids = np.where(gone, -1, ids)
    return merge_topk([scores], [ids], k)


def _search_params(index: Any, sel: Any) -> Any:
    """Search parameters carrying ``sel`` and the index's own nprobe / efSearch (faiss's parameter
    objects default to nprobe 1 and efSearch 16, not to the index's settings)."""
    ivf = ivf_of(index)
    if ivf is not None:
        return faiss.SearchParametersIVF(sel=sel, nprobe=int(ivf.nprobe), max_codes=int(ivf.max_codes))
    core = faiss.downcast_index(index)
    while isinstance(core, faiss.IndexPreTransform):
        core = faiss.downcast_index(core.index)
    if isinstance(core, faiss.IndexHNSW):
        return faiss.SearchParametersHNSW(sel=sel, efSearch=int(core.hnsw.efSearch))
    return faiss.SearchParameters(sel=sel)


def search_without(index: Any, Q: np.ndarray, k: int, gone: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """``index.search(Q, k)`` (a faiss index) never returning the ids ``gone`` ((r,) int64, the
    index's own ids): they are skipped inside faiss with an id selector; for an index whose search
    takes no selector, ``k + r`` results are asked for and ``gone`` dropped. (Q, k) float32, int64."""
    gone = np.ascontiguousarray(np.unique(gone), dtype=np.int64)
    batch = faiss.IDSelectorBatch(gone)  # kept in a name: the selector below only points at it
    keep = faiss.IDSelectorNot(batch)
    try:
        return index.search(Q, k, params=_search_params(index, keep))
    except RuntimeError:  # this index type does not take a selector
        s, i = index.search(Q, min(index.ntotal, k + gone.size))
        return drop_ids(s, i, gone, k)
