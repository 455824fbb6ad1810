"""Descriptor expansion: α-weighted query expansion (α-QE) and database-side augmentation (DBA), as
in Radenović et al., TPAMI 2018. The arithmetic only: α-QE as a step of the query path is
:mod:`retrieval.search.rerank.qe`; DBA is an index-side transform (:func:`dba_index`, ``tools/index.py
--dba``).

For a vector ``v`` with neighbours ``x_1..x_k`` (the top-k database vectors by inner product)::

    v' = L2( v + Σ_i w_i x_i ),   w_i = max(vᵀx_i, 0) ** α

* ``v`` itself always enters with weight 1 (the ``v +`` term); it is never one of the ``k``.
* **α-QE**: the ``k`` neighbours are the top-k *database* vectors of each query. A query that is
  itself stored in the database (e.g. every image of a class folder is a query) would find its own
  copy first; pass ``self_ids`` (its database index) to skip that copy, so the ``k`` are other images.
* **DBA**: each database vector's ``k`` neighbours are the top-k *other* database vectors — its own
  entry (its top-1 neighbour) is skipped; an exact duplicate elsewhere in the database still counts.
  All vectors are augmented from the *original* database (one pass, not iterated).
* ``α = 0`` gives every neighbour weight 1 (average query expansion, ``0 ** 0 = 1``).
* Negative similarities are clamped at 0 before the power, so a non-integer α never makes a NaN
  and an anti-correlated neighbour adds nothing (for α = 0 it still adds with weight 1).
* Weights use exact inner products recomputed from the stored vectors, whatever index found them.

All arrays are float32 row-major; inputs should be L2-normalised (outputs are).
"""
from __future__ import annotations

from typing import Optional

import faiss
import numpy as np

_EPS = 1e-12


def _as_f32(x: np.ndarray, name: str) -> np.ndarray:
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    if x.ndim != 2:
        raise ValueError(f"{name} must be (n, D), got shape {x.shape}")
    return x


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation. x: (N, D) float → (N, D) float32 (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(n, _EPS)).astype(np.float32)


def expansion_weights(sims: np.ndarray, alpha: float) -> np.ndarray:
    """w = max(s, 0) ** α. sims: any shape float → float32 of the same shape (α=0 → all ones)."""
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    s = np.maximum(np.asarray(sims, dtype=np.float32), 0.0)
    if alpha == 0:
        return np.ones_like(s)
    return np.power(s, np.float32(alpha))


def first_other(ids: np.ndarray, self_ids: Optional[np.ndarray], k: int) -> np.ndarray:
    """The first ``k`` valid ids of each row of ``ids`` other than the row's own copy.

    ids: (Q, n) int64, best first, −1 pads; self_ids: (Q,) int64 (−1: none) or None. Returns (Q, k)
    int64, −1 pads (order kept)."""
    ids = np.asarray(ids, dtype=np.int64)
    keep = ids >= 0
    if self_ids is not None:
        keep &= ids != np.asarray(self_ids, np.int64)[:, None]
    order = np.argsort(~keep, axis=1, kind="stable")  # kept ids first, in their order
    out = np.where(np.take_along_axis(keep, order, 1), np.take_along_axis(ids, order, 1), -1)[:, :k]
    if out.shape[1] < k:
        out = np.concatenate([out, np.full((out.shape[0], k - out.shape[1]), -1, np.int64)], 1)
    return out


def _neighbours(
    queries: np.ndarray, database: np.ndarray, k: int, self_ids: Optional[np.ndarray]
) -> np.ndarray:
    """(Q, k) int64 ids of the top-k database vectors by inner product, own copy skipped; -1 pads."""
    kk = min(k + (1 if self_ids is not None else 0), database.shape[0])
    index = faiss.IndexFlatIP(database.shape[1])
    index.add(database)
    _, ids = index.search(queries, kk)
    return first_other(ids, self_ids, k)


def expand(
    vectors: np.ndarray, database: np.ndarray, neighbour_ids: np.ndarray, alpha: float
) -> np.ndarray:
    """v' = L2(v + Σ_i max(vᵀx_i, 0)^α x_i) for given neighbours.

    vectors: (Q, D) float32; database: (N, D) float32; neighbour_ids: (Q, k) int, -1 = none.
    Returns (Q, D) float32.
    """
    vectors = _as_f32(vectors, "vectors")
    database = _as_f32(database, "database")
    ids = np.asarray(neighbour_ids, dtype=np.int64)
    out = np.empty_like(vectors)
    step = 16384
    for a in range(0, vectors.shape[0], step):
        v, i = vectors[a : a + step], ids[a : a + step]
        valid = i >= 0
        nb = database[np.where(valid, i, 0)]  # (b, k, D)
        sims = np.einsum("qd,qkd->qk", v, nb)
        w = expansion_weights(sims, alpha) * valid
        out[a : a + step] = v + np.einsum("qk,qkd->qd", w, nb)
    return l2_normalize(out)


def alpha_qe(
    queries: np.ndarray,
    database: np.ndarray,
    k: int = 2,
    alpha: float = 3.0,
    *,
    self_ids: Optional[np.ndarray] = None,
) -> np.ndarray:
    """α-weighted query expansion.

    queries: (Q, D) float32 L2-normalised; database: (N, D) float32 L2-normalised.
    k: neighbours per query (0 → the queries, re-normalised); alpha ≥ 0.
    self_ids: optional (Q,) int, the database index of each query's own copy (-1 for none); that
        entry is skipped when choosing the k neighbours.
    Returns (Q, D) float32 expanded, L2-normalised queries (search the same database with them).
    """
    queries = _as_f32(queries, "queries")
    database = _as_f32(database, "database")
    if queries.shape[1] != database.shape[1]:
        raise ValueError(f"queries have D={queries.shape[1]} but database D={database.shape[1]}")
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    if k == 0 or database.shape[0] == 0:
        return l2_normalize(queries)
    if self_ids is not None:
        self_ids = np.asarray(self_ids, dtype=np.int64).reshape(-1)
        if self_ids.shape[0] != queries.shape[0]:
            raise ValueError("self_ids must hold one database index per query")
    ids = _neighbours(queries, database, k, self_ids)
    return expand(queries, database, ids, alpha)


def dba(database: np.ndarray, k: int = 2, alpha: float = 3.0) -> np.ndarray:
    """Database-side augmentation: every database vector expanded with its k nearest *other*
    database vectors (its own entry skipped), from the original vectors in one pass.

    database: (N, D) float32 L2-normalised. Returns (N, D) float32 L2-normalised.
    """
    database = _as_f32(database, "database")
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    if k == 0 or database.shape[0] == 0:
        return l2_normalize(database)
    ids = _neighbours(database, database, k, np.arange(database.shape[0], dtype=np.int64))
    return expand(database, database, ids, alpha)


def dba_index(index: object, k: int = 2, alpha: float = 3.0) -> object:
    """A new index of the same type, factory, settings and model over DBA-augmented descriptors.

    ``index``: a :class:`retrieval.search.index.ImageIndex` (duck-typed: ``descriptors()``, ``paths``,
    ``dim``, ``factory``, ``model_config``, ``fingerprint``, ``config``, ``add``). The stored
    descriptors of the result are the augmented ones, so applying it twice augments twice: build
    a DBA index from a freshly made plain index.
    """
    X = dba(np.asarray(index.descriptors(), dtype=np.float32), k, alpha)  # type: ignore[attr-defined]
    new = type(index)(index.dim, index.factory, index.model_config,  # type: ignore[attr-defined]
                      index.fingerprint, index.config)  # type: ignore[attr-defined]
    new.add(X, list(index.paths))  # type: ignore[attr-defined]
    return new
