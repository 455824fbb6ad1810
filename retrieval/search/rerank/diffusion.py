"""``diffusion``: diffusion over the database's k-NN graph (Iscen, Tolias, Avrithis, Furon, Chum,
"Efficient Diffusion on Region Manifolds: Recovering Small Objects with Compact CNN
Representations", CVPR 2017), on global descriptors, as a step of the query path.

The database's k-NN graph (:mod:`retrieval.search.knn_graph`, stored by ``tools/index.py --graph``
or built on first use) gives the affinity ``W``: ``w_ij = max(x_iᵀx_j, 0)^γ`` between *mutual*
k-nearest neighbours. With degrees ``d_i = Σ_j w_ij`` over the whole graph and
``S = D^{-1/2} W D^{-1/2}``, a query with similarities ``s_j`` to the database is diffused by
solving::

    (I − α S) f = y,    y_j = max(s_j, 0)^γ for the query's kq nearest, 0 elsewhere

by conjugate gradient (the matrix is symmetric positive definite for α < 1), restricted to the
query's top K (*truncation*: the sub-matrix of ``I − αS`` over the shortlist, as the authors'
code and its public reimplementations do). The shortlist is re-ranked by ``f``; its scores are
``f / max f`` (in [0, 1]). Defaults are the paper's: k = 50, kq = 10, α = 0.99, γ = 3, at most 20
CG iterations; truncation K = 1000.

Only the first min(K, hits) of each row are re-ordered; hits past K keep their place and scores.

The graph is the index folder's (``tools/index.py --graph``) or, without one, built in memory on
the first diffusion query — up to :data:`FIRST_USE_MAX` live images (brute force grows as N²: 10⁵
images of 128-d took 113 s on one core); a larger index without a stored graph is a one-line error
that says how to store one.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import cg

from retrieval.core.errors import DataError
from retrieval.search.knn_graph import KnnGraph
from retrieval.search.rerank.registry import register_reranker
from retrieval.search.rerank.step import Reranker, RerankContext


#: The most live images whose k-NN graph a query builds on first use (module docstring).
FIRST_USE_MAX = 20000


@dataclass
class DiffusionParams:
    """K: truncation, the query's top K hits diffused over. kq: the query's nearest hits that
    start the diffusion. k: graph neighbours per image. alpha, gamma: the paper's α and γ.
    iters, tol: conjugate gradient's iteration cap and relative residual."""

    K: int = 1000
    kq: int = 10
    k: int = 50
    alpha: float = 0.99
    gamma: float = 3.0
    iters: int = 20
    tol: float = 1e-6

    def validate(self) -> "DiffusionParams":
        for name in ("K", "kq", "k", "iters"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise DataError(f"diffusion:{name} must be an integer ≥ 1, got {v!r}")
        if not 0.0 < self.alpha < 1.0:
            raise DataError(f"diffusion:alpha must be in (0, 1), got {self.alpha}")
        if not self.gamma > 0 or not np.isfinite(self.gamma):
            raise DataError(f"diffusion:gamma must be > 0, got {self.gamma}")
        if not self.tol > 0:
            raise DataError(f"diffusion:tol must be > 0, got {self.tol}")
        return self


def normalized_affinity(W: sp.csr_matrix, nodes: np.ndarray, degrees: Optional[np.ndarray] = None) -> sp.csr_matrix:
    """``S`` restricted to ``nodes`` ((T,) int64): ``D^{-1/2} W D^{-1/2}`` with the degrees of the
    whole graph ``W`` (N, N) (``degrees``: its (N,) row sums, when known) → (T, T) float64 CSR."""
    full = np.asarray(W.sum(axis=1)).reshape(-1) if degrees is None else degrees
    d = full[nodes] + 1e-12
    inv = 1.0 / np.sqrt(d)
    sub = W[nodes][:, nodes]
    return sp.diags(inv) @ sub @ sp.diags(inv)


def diffuse(S: sp.spmatrix, y: np.ndarray, alpha: float = 0.99, iters: int = 20, tol: float = 1e-6) -> np.ndarray:
    """Solve ``(I − α S) f = y`` by conjugate gradient: S (T, T) symmetric, y (T,) → f (T,) float64."""
    T = S.shape[0]
    A = sp.identity(T, format="csr") - alpha * sp.csr_matrix(S)
    f, _ = cg(A, np.asarray(y, np.float64), rtol=tol, maxiter=int(iters))
    return np.asarray(f, np.float64)


def diffusion_rerank(graph: KnnGraph, ids: np.ndarray, scores: np.ndarray, params: DiffusionParams
                     ) -> Tuple[np.ndarray, np.ndarray]:
    """Re-rank each row's top K by diffusion (module docstring): ids (Q, n) int64 (−1 pads),
    scores (Q, n) float32 → the same, the first min(K, hits) of each row re-ordered."""
    params.validate()
    ids = np.array(ids, np.int64, copy=True)
    scores = np.array(scores, np.float32, copy=True)
    W = graph.affinity(params.k, params.gamma)
    deg = graph.degrees(params.k, params.gamma)
    for q in range(ids.shape[0]):
        valid = np.flatnonzero(ids[q] >= 0)
        T = min(params.K, valid.size)
        if T < 2:
            continue
        head = valid[:T]
        nodes = ids[q, head]
        y = np.zeros(T, np.float64)
        kq = min(params.kq, T)
        y[:kq] = np.maximum(scores[q, head[:kq]].astype(np.float64), 0.0) ** params.gamma
        if not y.any():
            continue
        f = diffuse(normalized_affinity(W, nodes, deg), y, params.alpha, params.iters, params.tol)
        top = f.max()
        if not np.isfinite(top) or top <= 0:
            continue
        order = np.argsort(-f, kind="stable")
        ids[q, head] = nodes[order]
        scores[q, head] = (f[order] / top).astype(np.float32)
    return ids, scores


@register_reranker
class Diffusion(Reranker):
    """The query path's ``diffusion`` step (module docstring); leaves ``context.notes["diffusion"]``:
    K, k, whether the graph was stored in the index folder, seconds per query."""

    name = "diffusion"
    summary = "diffusion over the database's k-NN graph (Iscen et al. CVPR 2017), top K re-ranked"
    Params = DiffusionParams

    def depth(self) -> int:
        return int(self.params.K)

    def rerank(self, ctx: RerankContext, ids: np.ndarray, scores: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        stored = bool(getattr(ctx.index, "has_stored_graph", False))
        ready = stored or bool(getattr(ctx.index, "has_graph_in_memory", False))
        if not ready and ctx.index.n_live > FIRST_USE_MAX:
            raise DataError(f"diffusion needs the index's k-NN graph, and building it for {ctx.index.n_live} images "
                            f"at query time would take long: store it once with gemseg index --out <index> --graph")
        t0 = time.perf_counter()
        graph = ctx.index.knn_graph(self.params.k, progress=ctx.progress)
        t1 = time.perf_counter()
        out = diffusion_rerank(graph, ids, scores, self.params)
        note: Dict[str, Any] = {"K": self.params.K, "k": self.params.k, "graph_stored": stored,
                                "graph_seconds": t1 - t0,
                                "seconds_per_query": (time.perf_counter() - t1) / max(ids.shape[0], 1)}
        ctx.notes[self.name] = note
        return out
