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

Defaults are those of the authors' code: M = 400, K = 9, β = 0.15 (their ROxford / RParis runs
also use M = 600). As in their code, the refined descriptors are not re-normalised. Where two
hits are exact duplicates, a hit counts as its own first neighbour (the authors' code takes the
first of the tie). The paper's other part — GeM pooled over regions and scales (R-GeM, S-GeM) —
changes the descriptors themselves (a forward pass), so it belongs to the model, not to a re-ranker.

Only the first min(M, hits) of each row are re-ordered; hits past M keep their place and scores.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Tuple

import numpy as np

from retrieval.core.errors import DataError
from retrieval.search.rerank.registry import register_reranker
from retrieval.search.rerank.step import Reranker, RerankContext


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


def refine_hits(X: np.ndarray, K: int, beta: float) -> np.ndarray:
    """Step 1 (module docstring): X (M, D) float32 hits → (M, D) float32 refined descriptors."""
    G = X @ X.T
    M = X.shape[0]
    k = min(K + 1, M)
    H = G.copy()
    np.fill_diagonal(H, np.inf)  # a hit is its own first neighbour
    if k < M:  # the k largest of each row (a partition, then those k sorted: O(M²) not O(M² log M))
        part = np.argpartition(-H, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(H, part, 1), axis=1, kind="stable")
        nn = np.take_along_axis(part, order, 1)
    else:
        nn = np.argsort(-H, axis=1, kind="stable")
    w = np.take_along_axis(G, nn, 1).astype(np.float32) * np.float32(beta)
    w[:, 0] = 1.0
    A = np.zeros((M, M), np.float32)  # the weights as a matrix: one BLAS product, no (M, k, D) gather
    np.put_along_axis(A, nn, w, 1)
    return ((A @ X) / w.sum(1, keepdims=True)).astype(np.float32)


def superglobal_scores(q: np.ndarray, X: np.ndarray, K: int = 9, beta: float = 0.15) -> np.ndarray:
    """Steps 1-3 for one query: q (D,) float32, X (M, D) float32 its hits → (M,) float32 scores."""
    R = refine_hits(X, K, beta)
    s1 = R @ q
    top = np.argsort(-s1, kind="stable")[:min(K + 1, X.shape[0])]
    q2 = R[top].max(axis=0)
    return ((s1 + R @ q2) / 2.0).astype(np.float32)


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
