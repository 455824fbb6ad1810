"""``superglobal``: SuperGlobal re-ranking (Shao, Chen, Karpur, Cui, Araujo, Cao, "Global Features
are All You Need for Image Retrieval and Reranking", ICCV 2023) on the stored global descriptors,
as a step of the query path: no local features, no forward pass.

For a query ``q`` and its top ``M`` hits ``x_1..x_M`` (L2-normalised stored descriptors):

1. **Top-M descriptor augmentation** (the paper's MDescAug): each hit is refined with its own ``K``
   nearest neighbours *among the M hits* (by ``x_iᵀx_j``)::

       x'_i = (x_i + Σ_{j ∈ N_K(i)} β (x_iᵀx_j) x_j) / (1 + Σ_{j ∈ N_K(i)} β (x_iᵀx_j))

2. **Query refinement by max-pooling** (RerankwMDA): with ``s1_i = qᵀx'_i``, the query becomes
   the element-wise maximum of the refined descriptors of its ``K + 1`` best hits by ``s1``::

       q' = max_{i ∈ top_{K+1}(s1)} x'_i,     s2_i = q'ᵀx'_i

3. The hits are re-ranked by ``(s1_i + s2_i) / 2`` (also their new scores).

Defaults are those of the authors' code: M = 400, K = 9, β = 0.15 (their ROxford / RParis runs also
use M = 600). As in their code, the refined descriptors are not re-normalised. Where two hits are
exact duplicates, a hit is refined with itself (weight 1) and its duplicate among its K others (the
authors' code takes the first of the tie as the weight-1 one: the same sum). The paper's other part
— GeM pooled over regions and scales (R-GeM, S-GeM) — changes the descriptors themselves (a forward
pass), so it belongs to the model, not to a re-ranker.

Only the first min(M, hits) of each row are re-ordered; hits past M keep their place and scores.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Tuple

import numpy as np
import scipy.sparse as sp

from retrieval.core.errors import DataError
from retrieval.search.rerank.registry import register_reranker
from retrieval.search.rerank.step import RerankContext, Reranker


@dataclass
class SuperGlobalParams:
    """M: hits re-ranked (the query's top M). K: neighbours of each hit among them (and K + 1
    hits max-pooled into the refined query). beta: weight of a neighbour per unit similarity."""

    M: int = 400
    K: int = 9
    beta: float = 0.15

    def validate(self) -> "SuperGlobalParams":
        for name in ("M", "K"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise DataError(f"superglobal:{name} must be an integer ≥ 1, got {v!r}")
        if not (self.beta >= 0 and np.isfinite(self.beta)):
            raise DataError(f"superglobal:beta must be a finite number ≥ 0, got {self.beta}")
        return self


def hit_graph(X: np.ndarray, K: int, beta: float) -> sp.csr_matrix:
    """Step 1's weights: X (M, D) float32 hits → (M, M) float64 CSR ``A`` with
    ``A[i, j] = β·x_iᵀx_j`` for the ``K`` nearest *other* hits j of hit i (k = min(K, M − 1) a row,
    columns ascending), so that ``x'_i = (x_i + Σ_j A[i, j] x_j) / (1 + Σ_j A[i, j])``.

    Cost: the Gram matrix ``X Xᵀ`` (numpy runs ``X @ X.T`` as one symmetric float32 BLAS update,
    M²·D/2), a partition of its rows for each row's K-th largest value (no sort, no index
    partition) and a mask. Where hits tie at the K-th place, the lowest-numbered of the tied hits
    are taken (the order of a stable sort; exact duplicates of a hit are its nearest others); the
    hit itself is never its own neighbour — its weight 1 is added apart."""
    X = np.ascontiguousarray(X, dtype=np.float32)
    M = X.shape[0]
    k = min(int(K), M - 1)
    if k < 1:
        return sp.csr_matrix((M, M), dtype=np.float64)
    G = X @ X.T
    np.fill_diagonal(G, -np.inf)
    if k == M - 1:
        mask = ~np.eye(M, dtype=bool)
        flat = np.flatnonzero(mask)
    else:
        t = np.partition(G, M - k, axis=1)[:, M - k]  # each row's k-th largest similarity
        mask = G >= t[:, None]
        flat = np.flatnonzero(mask)
        if flat.size > M * k:  # ties at the k-th place: keep the lowest-numbered of them
            rows = flat // M
            eq = G.reshape(-1)[flat] == t[rows]
            gt = np.count_nonzero(G > t[:, None], axis=1)
            start = np.searchsorted(rows, np.arange(M))
            ce = np.cumsum(eq)
            rank = ce - np.where(start > 0, ce[np.maximum(start - 1, 0)], 0)[rows] - 1
            flat = flat[~eq | (rank < (k - gt)[rows])]
    rows, cols = np.divmod(flat, M)
    w = G.reshape(-1)[flat].astype(np.float64) * float(beta)
    indptr = np.zeros(M + 1, np.int64)
    np.cumsum(np.bincount(rows, minlength=M), out=indptr[1:])
    return sp.csr_matrix((w, cols, indptr), shape=(M, M))


def refine_hits(X: np.ndarray, K: int, beta: float) -> np.ndarray:
    """Step 1 (module docstring): X (M, D) float32 hits → (M, D) float32 refined descriptors, the
    weighted sums as the sparse :func:`hit_graph` (K non-zeros a row) times X: M·K·D, not the dense
    (M, M) weight matrix's second M²·D product."""
    X = np.ascontiguousarray(X, dtype=np.float32)
    A = hit_graph(X, K, beta)
    den = 1.0 + np.asarray(A.sum(axis=1)).reshape(-1)
    num = X + A.astype(np.float32) @ X
    return (num / den[:, None].astype(np.float32)).astype(np.float32, copy=False)


def superglobal_scores(q: np.ndarray, X: np.ndarray, K: int = 9, beta: float = 0.15) -> np.ndarray:
    """Steps 1-3 for one query: q (D,) float32, X (M, D) float32 its hits → (M,) float32 scores.

    The refined hits are never formed: a refined hit's similarity to a vector v is
    ``x'_iᵀv = ((I + A)(X v))_i / (1 + Σ_j A[i, j])`` (:func:`hit_graph`'s ``A``), two M·D
    products; only the K + 1 refined hits that are max-pooled into ``q'`` are built. The same
    numbers as :func:`refine_hits` then ``R @ q`` up to float rounding (tested), at the cost of
    ``X Xᵀ`` alone."""
    X = np.ascontiguousarray(X, dtype=np.float32)
    q = np.asarray(q, np.float32)
    A = hit_graph(X, K, beta)
    den = 1.0 + np.asarray(A.sum(axis=1)).reshape(-1)

    def refined_dot(v: np.ndarray) -> np.ndarray:
        xv = (X @ v).astype(np.float64)
        return (xv + A @ xv) / den

    s1 = refined_dot(q)
    top = np.argsort(-s1, kind="stable")[:min(K + 1, X.shape[0])]
    Rt = (X[top] + A[top].toarray().astype(np.float32) @ X) / den[top, None].astype(np.float32)
    q2 = Rt.max(axis=0)
    return ((s1 + refined_dot(q2)) / 2.0).astype(np.float32)


@register_reranker
class SuperGlobal(Reranker):
    """The query path's ``superglobal`` step (module docstring); leaves ``context.notes
    ["superglobal"]``: M, K, beta, seconds per query."""

    name = "superglobal"
    summary = "SuperGlobal re-ranking (Shao et al. ICCV 2023): top M refined with their neighbours, max-pooled query"
    Params = SuperGlobalParams

    def depth(self) -> int:
        return int(self.params.M)

    def rerank(self, ctx: RerankContext, ids: np.ndarray, scores: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        t0 = time.perf_counter()
        p = self.params
        ids = np.array(ids, np.int64, copy=True)
        scores = np.array(scores, np.float32, copy=True)
        for q in range(ids.shape[0]):
            head = np.flatnonzero(ids[q] >= 0)[:p.M]
            if head.size < 2:
                continue
            X = ctx.index.rows(ids[q, head])
            s = superglobal_scores(ctx.descriptors[q].astype(np.float32), X, p.K, p.beta)
            order = np.argsort(-s, kind="stable")
            ids[q, head] = ids[q, head][order]
            scores[q, head] = s[order]
        ctx.notes[self.name] = {"M": p.M, "K": p.K, "beta": p.beta,
                                "seconds_per_query": (time.perf_counter() - t0) / max(ids.shape[0], 1)}
        return ids, scores
