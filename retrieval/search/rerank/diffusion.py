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
query's top K (*truncation*: the sub-matrix of ``I − αS`` over the shortlist, as the authors' code
and its public reimplementations do). Per query that is a gather of the K shortlist rows of ``W``
(K·k entries) mapped to shortlist positions, and at most ``iters`` sparse products with the (K, K)
sub-matrix (:func:`conjugate_gradient`: scipy's iterates without its per-call set-up). The
shortlist is re-ranked by ``f``; its scores are ``f / max f`` (in [0, 1]). Defaults are the
paper's: k = 50, kq = 10, α = 0.99, γ = 3, at most 20 CG iterations; truncation K = 1000.

Only the first min(K, hits) of each row are re-ordered; hits past K keep their place and scores.

The graph is the index folder's (``tools/index.py --graph``) or, without one, built in memory on
the first diffusion query — up to :data:`FIRST_USE_MAX` live images (brute force grows as N²: 10⁵
images of 128-d took 113 s on one core); a larger index without a stored graph is a one-line error
that says how to store one.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np
import scipy.sparse as sp

from retrieval.core.errors import DataError
from retrieval.search.knn_graph import KnnGraph
from retrieval.search.rerank.registry import register_reranker
from retrieval.search.rerank.step import RerankContext, Reranker

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


def normalized_affinity(W: sp.csr_matrix, nodes: np.ndarray, degrees: Optional[np.ndarray] = None,
                        scratch: Optional[np.ndarray] = None) -> sp.csr_matrix:
    """``S`` restricted to ``nodes`` ((T,) int64, distinct): ``D^{-1/2} W D^{-1/2}`` with the degrees
    of the whole graph ``W`` (N, N) CSR (``degrees``: its (N,) row sums, when known) → (T, T)
    float64 CSR (within a row, the columns in ``W``'s order).

    The rows of ``nodes`` are gathered from ``W`` (T·k entries) and their columns mapped to
    positions in ``nodes`` through an (N,) int64 table — ``scratch``, all −1, when the caller keeps
    one across queries (it is left all −1 again) — rather than ``W[nodes][:, nodes]``, whose column
    selection is a sparse product with an (N, T) selection matrix."""
    nodes = np.asarray(nodes, np.int64)
    T = nodes.size
    full = np.asarray(W.sum(axis=1)).reshape(-1) if degrees is None else degrees
    inv = 1.0 / np.sqrt(full[nodes] + 1e-12)
    pos = np.full(W.shape[1], -1, np.int64) if scratch is None else scratch
    pos[nodes] = np.arange(T, dtype=np.int64)
    try:
        rows = W[nodes]  # CSR row gather, (T, N)
        local = pos[rows.indices]
    finally:
        if scratch is not None:
            pos[nodes] = -1
    keep = local >= 0
    r = np.repeat(np.arange(T, dtype=np.int64), np.diff(rows.indptr))[keep]
    c = local[keep]
    v = rows.data[keep] * inv[r] * inv[c]
    indptr = np.zeros(T + 1, np.int64)
    np.cumsum(np.bincount(r, minlength=T), out=indptr[1:])
    return sp.csr_matrix((v, c, indptr), shape=(T, T))


def conjugate_gradient(matvec: Callable[[np.ndarray], np.ndarray], b: np.ndarray, iters: int, tol: float
                       ) -> Tuple[np.ndarray, int]:
    """Solve ``A x = b`` for a symmetric positive definite ``A`` given by ``matvec`` ((T,) float64 →
    (T,) float64), b (T,) float64, from x = 0: at most ``iters`` iterations, stopping once
    ‖b − A x‖ < tol·‖b‖ (the stopping rule and the iterates of ``scipy.sparse.linalg.cg`` with no
    preconditioner). Returns x (T,) float64 and 0 when it converged, else ``iters``."""
    b = np.asarray(b, np.float64)
    x = np.zeros_like(b)
    stop = tol * float(np.linalg.norm(b))
    if stop == 0.0:
        return b.copy(), 0
    r = b.copy()
    p: Optional[np.ndarray] = None
    rho_prev = 1.0
    for _ in range(int(iters)):
        rho = float(r @ r)
        if np.sqrt(rho) < stop:
            return x, 0
        if p is None:
            p = r.copy()
        else:
            p *= rho / rho_prev
            p += r
        q = matvec(p)
        step = rho / float(p @ q)
        x += step * p
        r -= step * q
        rho_prev = rho
    return x, int(iters)


def diffuse(S: sp.spmatrix, y: np.ndarray, alpha: float = 0.99, iters: int = 20, tol: float = 1e-6) -> np.ndarray:
    """Solve ``(I − α S) f = y`` by conjugate gradient (:func:`conjugate_gradient`; ``I − αS`` is
    applied as ``p − α S p``, never formed): S (T, T) symmetric sparse, y (T,) → f (T,) float64."""
    S = sp.csr_matrix(S)
    a = float(alpha)
    f, _ = conjugate_gradient(lambda p: p - a * (S @ p), np.asarray(y, np.float64), iters, tol)
    return f


def diffusion_rerank(graph: KnnGraph, ids: np.ndarray, scores: np.ndarray, params: DiffusionParams
                     ) -> Tuple[np.ndarray, np.ndarray]:
    """Re-rank each row's top K by diffusion (module docstring): ids (Q, n) int64 (−1 pads),
    scores (Q, n) float32 → the same, the first min(K, hits) of each row re-ordered."""
    params.validate()
    ids = np.array(ids, np.int64, copy=True)
    scores = np.array(scores, np.float32, copy=True)
    W = graph.affinity(params.k, params.gamma)
    deg = graph.degrees(params.k, params.gamma)
    scratch = np.full(W.shape[1], -1, np.int64)  # positions of a query's nodes, reset after each
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
        f = diffuse(normalized_affinity(W, nodes, deg, scratch), y, params.alpha, params.iters, params.tol)
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
