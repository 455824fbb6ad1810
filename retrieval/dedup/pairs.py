"""Candidate pairs: every pair of descriptors whose similarity reaches a threshold (faiss range
search), exact up to a size and approximate (an inverted-file index) beyond it.

Up to :data:`EXACT_UP_TO` descriptors the search is exact (``IndexFlatIP``, every pair compared).
Beyond, an ``IVF{n},SQ8`` index (8-bit scalar codes: D bytes a vector, so 10⁶ × 1280-D descriptors
take 1.3 GB instead of 5.1 GB) is trained on a sample, filled block by block from the (possibly
memory-mapped) descriptors, and searched with ``nprobe`` lists; each pair it returns is then
scored exactly from the float descriptors, so scores are exact and only recall is approximate
(pairs just above the threshold in a list not visited can be missed; ``docs/dedup.md`` has the
measured recall). Queries go in blocks, so memory is the index plus one block of results.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
from tqdm import tqdm

from retrieval.core.errors import DataError

#: Up to this many descriptors the range search is exact.
EXACT_UP_TO = 50_000
BLOCK = 4096


@dataclass
class Pairs:
    """Pairs ``i < j`` with their similarity: ``i``, ``j`` (m,) int64, ``score`` (m,) float32,
    sorted by (i, j)."""

    i: np.ndarray
    j: np.ndarray
    score: np.ndarray

    def __len__(self) -> int:
        return int(self.i.shape[0])

    def select(self, mask: np.ndarray) -> "Pairs":
        """The pairs where ``mask`` ((m,) bool) is true."""
        return Pairs(self.i[mask], self.j[mask], self.score[mask])

    @staticmethod
    def empty() -> "Pairs":
        return Pairs(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))


def _ivf(X: np.ndarray, nlist: int, seed: int, progress: bool) -> Any:
    import faiss
    n, d = X.shape
    quantizer = faiss.IndexFlatIP(d)
    index = faiss.IndexIVFScalarQuantizer(quantizer, d, nlist, faiss.ScalarQuantizer.QT_8bit,
                                          faiss.METRIC_INNER_PRODUCT)
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n, size=min(n, max(64 * nlist, 50_000)), replace=False))
    index.train(np.ascontiguousarray(X[sample], dtype=np.float32))
    for s in tqdm(range(0, n, 65536), desc="dedup: index", unit="block", disable=not progress):
        index.add(np.ascontiguousarray(X[s:s + 65536], dtype=np.float32))
    return index


def n_lists_for(n: int) -> int:
    """Inverted lists for ``n`` descriptors: about 4·√n, a power of two."""
    return int(2 ** max(4, round(math.log2(4 * math.sqrt(max(n, 1))))))


def range_pairs(X: np.ndarray, threshold: float, *, exact_up_to: int = EXACT_UP_TO,
                nprobe: Optional[int] = None, nlist: Optional[int] = None, seed: int = 0,
                progress: bool = False) -> Pairs:
    """Every pair ``i < j`` of rows of ``X`` ((N, D) float32, L2-normalised; a memory map is
    fine) with ``X[i] · X[j] ≥ threshold``. Exact up to ``exact_up_to`` rows; beyond, an IVF-SQ8
    index with ``nlist`` lists (default :func:`n_lists_for`) searched with ``nprobe`` (default
    ``max(16, nlist // 128)``), its pairs re-scored exactly."""
    import faiss
    if X.ndim != 2 or X.shape[0] == 0:
        raise DataError(f"range search needs an (N, D) descriptor matrix with N ≥ 1, got shape {X.shape}")
    n, d = X.shape
    if n <= exact_up_to:
        index: Any = faiss.IndexFlatIP(d)
        index.add(np.ascontiguousarray(X, dtype=np.float32))
        approx = False
    else:
        nlist = nlist or n_lists_for(n)
        index = _ivf(X, nlist, seed, progress)
        index.nprobe = nprobe or max(16, nlist // 128)
        approx = True
    out_i, out_j, out_s = [], [], []
    # approximate codes may score a true pair a little low: search a margin below, then re-score exactly
    margin = 0.02 if approx else 0.0
    for s in tqdm(range(0, n, BLOCK), desc="dedup: pairs", unit="block", disable=not progress):
        Q = np.ascontiguousarray(X[s:s + BLOCK], dtype=np.float32)
        lims, D, I = index.range_search(Q, float(threshold) - margin)
        q = np.repeat(np.arange(s, s + Q.shape[0], dtype=np.int64), np.diff(lims).astype(np.int64))
        I = I.astype(np.int64)
        keep = I > q  # each unordered pair once, no self pairs
        qi, qj, sc = q[keep], I[keep], D[keep].astype(np.float32)
        if approx and qi.size:
            sc = np.einsum("md,md->m", Q[qi - s], np.asarray(X[qj], dtype=np.float32)).astype(np.float32)
            ok = sc >= threshold
            qi, qj, sc = qi[ok], qj[ok], sc[ok]
        out_i.append(qi)
        out_j.append(qj)
        out_s.append(sc)
    if not out_i:
        return Pairs.empty()
    i, j, sc = np.concatenate(out_i), np.concatenate(out_j), np.concatenate(out_s)
    order = np.lexsort((j, i))
    return Pairs(i[order], j[order], sc[order])
