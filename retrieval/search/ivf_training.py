"""Training a faiss index whose coarse quantizer has many inverted lists, in minutes on few cores.

Plain k-means for ``IVF65536`` assigns every training vector to all 65,536 centroids at each
iteration: with the ~2·10⁶ vectors faiss asks for (30 per list) that is 3·10¹³ flops per
iteration, hours on a 2-core machine. From :data:`TWO_LEVEL_FROM` lists on, :func:`train_index`
uses **two-level k-means** instead (the scheme of faiss's ``contrib/clustering.py``, as used for
billion-scale indexes): k₁ ≈ √k coarse centroids, then each coarse cluster is split into a number
of centroids proportional to its size, so a vector is compared with √k + k/√k centroids instead of
k. For an inner-product index the clustering is spherical (unit centroids), so that assigning by
inner product and by L2 agree on unit descriptors.

Pre-transforms (OPQ, PCA) are trained first on the sample and applied to it; the codes' encoder
(PQ, SQ) is then trained by faiss on the transformed sample with the quantizer in place.
Below :data:`TWO_LEVEL_FROM` lists, and for indexes without inverted lists, this is
``index.train(X)``.

An HNSW coarse quantizer (``IVF65536_HNSW32``) assigns each added vector to a list by a beam
search; faiss's default beam (``efSearch`` 16) put 7.1 % of 20,000 database vectors in another list
than their nearest centroid at 65,536 lists, and no ``nprobe`` finds a vector again once it sits in
a far list (recall@10 stayed at 0.87 from nprobe 64 to 1024 at N = 10⁷). The trained index gets
:data:`QUANTIZER_EF_SEARCH` (64: 0.2 % misassigned, about 3× slower assignment), which every
segment copied from it inherits; a search visiting ``nprobe`` lists uses a beam of
max(64, nprobe).
"""
from __future__ import annotations

import math
from typing import Any

import faiss
import numpy as np
from tqdm import tqdm

from retrieval.search.factory import ivf_of

TWO_LEVEL_FROM = 2 ** 14  # inverted lists from which the coarse quantizer is trained in two levels
NITER = 20
QUANTIZER_EF_SEARCH = 64  # beam of an HNSW coarse quantizer when assigning vectors to lists


def split_counts(sizes: np.ndarray, k: int) -> np.ndarray:
    """Centroids per coarse cluster: ``k`` shared in proportion to ``sizes`` (largest remainders),
    at least one for a non-empty cluster (while k allows) and never more than its size. (c,) int64, sum == k
    (requires ``sizes.sum() >= k``)."""
    sizes = np.asarray(sizes, dtype=np.int64)
    if sizes.sum() < k:
        raise ValueError(f"{int(sizes.sum())} vectors cannot make {k} centroids")
    share = sizes * (k / sizes.sum())
    out = np.minimum(np.maximum(np.floor(share).astype(np.int64), (sizes > 0).astype(np.int64)), sizes)
    while out.sum() < k:  # hand out the rest by largest remainder, where a cluster has room
        for j in np.argsort(out - share, kind="stable"):
            if out.sum() == k:
                break
            if out[j] < sizes[j]:
                out[j] += 1
    while out.sum() > k:  # the minimum of one per cluster overshot: take back from the largest excess
        floor = 1 if (sizes > 0).sum() <= k else 0
        for j in np.argsort(share - out, kind="stable"):
            if out.sum() == k:
                break
            if out[j] > floor:
                out[j] -= 1
    return out


def two_level_kmeans(X: np.ndarray, k: int, *, spherical: bool = True, niter: int = NITER, seed: int = 0,
                     progress: bool = False) -> np.ndarray:
    """``k`` centroids of ``X`` (n, D) float32 (n ≥ k) by two-level k-means (module doc):
    (k, D) float32, unit rows when ``spherical``."""
    X = np.ascontiguousarray(X, dtype=np.float32)
    n, d = X.shape
    k1 = max(1, min(k, int(round(math.sqrt(k)))))
    top = faiss.Kmeans(d, k1, niter=niter, seed=seed, spherical=spherical, max_points_per_centroid=256)
    top.train(X)
    _, assign = top.index.search(X, 1)
    assign = assign.ravel()
    sizes = np.bincount(assign, minlength=k1)
    counts = split_counts(sizes, k)
    order = np.argsort(assign, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    out = np.empty((k, d), np.float32)
    at = 0
    for c in tqdm(range(k1), desc=f"k-means ({k1} × ~{k // k1})", unit="cluster", disable=not progress,
                  leave=False):
        kc = int(counts[c])
        if kc == 0:
            continue
        sub = X[order[bounds[c]:bounds[c + 1]]]
        if kc == sub.shape[0]:
            cent = sub
        else:
            km = faiss.Kmeans(d, kc, niter=niter, seed=seed + 1 + c, spherical=spherical,
                              min_points_per_centroid=1, max_points_per_centroid=256)
            km.train(sub)
            cent = km.centroids
        out[at:at + kc] = cent
        at += kc
    if spherical:
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    return out


def train_index(index: Any, X: np.ndarray, *, seed: int = 0, progress: bool = False,
                two_level_from: int = TWO_LEVEL_FROM) -> Any:
    """Train the empty faiss ``index`` on ``X`` (n, D) float32; two-level k-means for its coarse
    quantizer from ``two_level_from`` lists (module doc). Returns ``index``."""
    X = np.ascontiguousarray(X, dtype=np.float32)
    ivf = ivf_of(index)
    if ivf is None or ivf.nlist < two_level_from or ivf.quantizer.ntotal:
        index.train(X)
        return widen_quantizer_beam(index)
    outer = faiss.downcast_index(index)
    inner, x = outer, X
    if isinstance(outer, faiss.IndexPreTransform):
        for i in range(outer.chain.size()):
            vt = outer.chain.at(i)
            vt.train(x)
            x = vt.apply(x)
        inner = faiss.downcast_index(outer.index)
    spherical = ivf.metric_type == faiss.METRIC_INNER_PRODUCT
    centroids = two_level_kmeans(x, ivf.nlist, spherical=spherical, seed=seed, progress=progress)
    ivf.quantizer.train(centroids)
    ivf.quantizer.add(centroids)
    inner.train(x)  # the quantizer is complete, so faiss trains only the codes' encoder
    outer.is_trained = True
    return widen_quantizer_beam(index)


def widen_quantizer_beam(index: Any, ef_search: int = QUANTIZER_EF_SEARCH) -> Any:
    """Give the HNSW coarse quantizer of an IVF ``index`` a search beam of at least ``ef_search``
    (module doc); other indexes are returned as they are."""
    ivf = ivf_of(index)
    if ivf is not None:
        q = faiss.downcast_index(ivf.quantizer)
        if isinstance(q, faiss.IndexHNSW):
            q.hnsw.efSearch = max(int(q.hnsw.efSearch), int(ef_search))
    return index
