"""The database's truncated k-nearest-neighbour graph: what diffusion (:mod:`retrieval.search.rerank.diffusion`)
walks on.

:class:`KnnGraph` holds, for every id of an index, its ``k`` nearest *other* live ids by inner product
of the stored descriptors (best first) and their similarities; removed ids have an empty row and
appear in no row. It is built exactly with faiss's brute-force search over the (memory-mapped)
descriptors (:func:`retrieval.search.topk.exact_knn`), and kept equal to a brute-force graph of
the index as it changes:

* :func:`grow_knn_graph` — ids added: their rows are searched over everything, and every old row
  merges the new ids into its list (an old row's top k over all ids is the top k of its old list and
  of the new ids: the result is the brute-force graph, without redoing the old rows);
* :func:`drop_from_graph` — ids removed: their rows are emptied, and the rows that listed one of them
  are searched again (the same brute-force graph, not a shortened list);
* :func:`renumber_graph` — the index compacted (:mod:`retrieval.search.compaction`): removed rows
  deleted, ids renumbered.

Stored in the index folder (:mod:`retrieval.search.index_folder`) as ``graph/<count>-<removed>.npz``
(ids int32, similarities float32: ``8·k`` bytes per image, 400 B at k = 50), named in the path store
so that the store's transaction commits it with the rows it covers.

:meth:`KnnGraph.affinity` is the graph as diffusion uses it (Iscen et al. CVPR 2017, §3): the
symmetric sparse matrix ``W`` with ``w_ij = max(s_ij, 0)^γ`` where i and j are in each other's k
nearest neighbours (*mutual* neighbours), zero elsewhere and on the diagonal.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, Optional, Tuple, Union

import numpy as np
import scipy.sparse as sp
from tqdm import tqdm

from retrieval.core.io import atomic_path
from retrieval.search.topk import exact_knn

PathLike = Union[str, Path]
#: The graph's neighbours per image, as in Iscen et al. (k = 50).
DEFAULT_K = 50
QUERY_BLOCK = 2048


@dataclass
class KnnGraph:
    """The k-NN graph of N ids (module docstring).

    ids: (N, k) int64, row i: the ids of i's k nearest other live ids, best first (−1 pads).
    sims: (N, k) float32 their inner products (−inf pads).
    removed: sorted (r,) int64 ids the graph leaves out (their rows are all −1).
    """

    ids: np.ndarray
    sims: np.ndarray
    removed: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    _affinity: Dict[Tuple[int, float], sp.csr_matrix] = field(default_factory=dict, repr=False, compare=False)
    _degrees: Dict[Tuple[int, float], np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    @property
    def n(self) -> int:
        return int(self.ids.shape[0])

    @property
    def k(self) -> int:
        return int(self.ids.shape[1])

    def nbytes(self) -> int:
        """Bytes of the graph as stored (int32 ids, float32 similarities)."""
        return int(self.ids.size * 4 + self.sims.size * 4 + self.removed.size * 8)

    def affinity(self, k: Optional[int] = None, gamma: float = 3.0) -> sp.csr_matrix:
        """(N, N) float64 symmetric CSR ``W``: ``max(s, 0)^γ`` between mutual neighbours among the
        first ``k`` of each row (default all), zero elsewhere (module docstring); cached per (k, γ)."""
        k = self.k if k is None else min(int(k), self.k)
        key = (k, float(gamma))
        if key not in self._affinity:
            N = self.n
            rows = np.repeat(np.arange(N, dtype=np.int64), k)
            cols = self.ids[:, :k].reshape(-1)
            vals = self.sims[:, :k].reshape(-1).astype(np.float64)
            ok = cols >= 0
            rows, cols, vals = rows[ok], cols[ok], vals[ok]
            fwd = rows * N + cols
            order = np.argsort(fwd)
            fwd_sorted = fwd[order]
            back = cols * N + rows  # the edge j → i
            pos = np.minimum(np.searchsorted(fwd_sorted, back), max(fwd_sorted.size - 1, 0))
            mutual = (fwd_sorted[pos] == back) if fwd_sorted.size else np.zeros(0, bool)
            w = np.maximum(vals[mutual], 0.0) ** float(gamma)
            W = sp.csr_matrix((w, (rows[mutual], cols[mutual])), shape=(N, N))
            self._affinity[key] = W.maximum(W.T).tocsr()  # equal already up to float rounding
        return self._affinity[key]

    def degrees(self, k: Optional[int] = None, gamma: float = 3.0) -> np.ndarray:
        """(N,) float64 row sums of :meth:`affinity` (cached)."""
        k = self.k if k is None else min(int(k), self.k)
        key = (k, float(gamma))
        if key not in self._degrees:
            self._degrees[key] = np.asarray(self.affinity(k, gamma).sum(axis=1), np.float64).reshape(-1)
        return self._degrees[key]

    def save(self, path: PathLike) -> None:
        """Write the graph to ``path`` (an ``.npz``; through a temporary file and a rename)."""
        buf = io.BytesIO()
        np.savez(buf, ids=self.ids.astype(np.int32), sims=self.sims.astype(np.float32),
                 removed=self.removed.astype(np.int64))
        with atomic_path(path) as tmp:
            Path(tmp).write_bytes(buf.getvalue())

    @classmethod
    def load(cls, path: PathLike) -> "KnnGraph":
        with np.load(path) as z:
            return cls(z["ids"].astype(np.int64), z["sims"].astype(np.float32), z["removed"].astype(np.int64))


def _blocks(X: np.ndarray) -> Iterator[Tuple[np.ndarray, int]]:
    yield X, 0


def _search_rows(X: np.ndarray, rows: np.ndarray, k: int, removed: np.ndarray,
                 against: Optional[Tuple[np.ndarray, int]] = None, progress: bool = False,
                 desc: str = "k-NN graph") -> Tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest other live ids of ``rows`` ((m,) int64) among all of ``X`` (or among the
    block ``against`` = (rows, first id)): (m, k) float32 sims, (m, k) int64 ids (−1 pads)."""
    S = np.full((rows.size, k), -np.inf, np.float32)
    I = np.full((rows.size, k), -1, np.int64)
    for a in tqdm(range(0, rows.size, QUERY_BLOCK), desc=desc, unit="block", disable=not progress, leave=False):
        r = rows[a:a + QUERY_BLOCK]
        Q = np.ascontiguousarray(X[r], dtype=np.float32)
        blocks = [against] if against is not None else list(_blocks(X))
        s, i = exact_knn(Q, blocks, k + 1, removed)
        self_hit = i == r[:, None]
        i = np.where(self_hit, -1, i)
        s = np.where(self_hit, -np.inf, s).astype(np.float32)
        order = np.argsort(-s, axis=1, kind="stable")[:, :k]  # self dropped, the others keep their order
        S[a:a + r.size] = np.take_along_axis(s, order, 1)
        I[a:a + r.size] = np.take_along_axis(i, order, 1)
    I[~np.isfinite(S)] = -1
    return S, I


def build_knn_graph(X: np.ndarray, k: int = DEFAULT_K, removed: Optional[np.ndarray] = None,
                    progress: bool = False) -> KnnGraph:
    """The exact k-NN graph of descriptors ``X`` (N, D) float32 (memory-mapped is fine), leaving out
    the sorted ``removed`` ids (module docstring)."""
    if k < 1:
        raise ValueError(f"a k-NN graph needs k ≥ 1, got {k}")
    N = int(X.shape[0])
    removed = np.zeros(0, np.int64) if removed is None else np.unique(np.asarray(removed, np.int64))
    ids = np.full((N, k), -1, np.int64)
    sims = np.full((N, k), -np.inf, np.float32)
    live = np.setdiff1d(np.arange(N, dtype=np.int64), removed)
    if live.size:
        s, i = _search_rows(X, live, k, removed, progress=progress)
        ids[live], sims[live] = i, s
    return KnnGraph(ids, sims, removed)


def grow_knn_graph(g: KnnGraph, X: np.ndarray, removed: Optional[np.ndarray] = None,
                   progress: bool = False) -> KnnGraph:
    """``g`` (over the first ``g.n`` rows) grown to all rows of ``X`` (N, D) float32; ``removed``:
    the sorted ids removed now (default: ``g.removed``; ids removed since ``g`` are dropped too)."""
    removed = g.removed if removed is None else np.unique(np.asarray(removed, np.int64))
    if not np.all(np.isin(g.removed, removed)):
        raise ValueError("a removed id came back: the graph cannot follow that index")
    g = drop_from_graph(g, X[:g.n] if X.shape[0] > g.n else X, removed[removed < g.n])
    n_old, N, k = g.n, int(X.shape[0]), g.k
    if N == n_old:
        return g
    ids = np.full((N, k), -1, np.int64)
    sims = np.full((N, k), -np.inf, np.float32)
    ids[:n_old], sims[:n_old] = g.ids, g.sims
    new = np.setdiff1d(np.arange(n_old, N, dtype=np.int64), removed)
    if new.size:
        s, i = _search_rows(X, new, k, removed, progress=progress)
        ids[new], sims[new] = i, s
    old = np.setdiff1d(np.arange(n_old, dtype=np.int64), removed)
    if old.size and new.size:
        tail = (X[n_old:], n_old)
        s, i = _search_rows(X, old, k, removed, against=tail, progress=progress, desc="k-NN graph (old rows)")
        S = np.concatenate([sims[old], s], axis=1)
        I = np.concatenate([ids[old], i], axis=1)
        S = np.where(I < 0, -np.inf, S)
        order = np.argsort(-S, axis=1, kind="stable")[:, :k]
        S, I = np.take_along_axis(S, order, 1), np.take_along_axis(I, order, 1)
        sims[old], ids[old] = S, np.where(np.isfinite(S), I, -1)
    return KnnGraph(ids, sims, removed)


def drop_from_graph(g: KnnGraph, X: np.ndarray, removed: np.ndarray) -> KnnGraph:
    """``g`` without the sorted ``removed`` ids (all removed ids, old ones included): their rows
    emptied, the rows that listed one searched again over ``X`` (the graph's rows, (g.n, D))."""
    removed = np.unique(np.asarray(removed, np.int64))
    fresh = np.setdiff1d(removed, g.removed)
    if fresh.size == 0:
        return g
    ids, sims = g.ids.copy(), g.sims.copy()
    ids[fresh], sims[fresh] = -1, -np.inf
    hit = np.isin(ids, fresh).any(axis=1)
    redo = np.flatnonzero(hit).astype(np.int64)
    if redo.size:
        s, i = _search_rows(X, redo, g.k, removed)
        ids[redo], sims[redo] = i, s
    return KnnGraph(ids, sims, removed)


def renumber_graph(g: KnnGraph) -> KnnGraph:
    """``g`` for the compacted index: removed rows deleted, every id renumbered to
    ``id − (removed ids below it)`` (what :func:`retrieval.search.compaction.new_ids` does)."""
    live = np.setdiff1d(np.arange(g.n, dtype=np.int64), g.removed)
    ids = g.ids[live]
    new = np.where(ids >= 0, ids - np.searchsorted(g.removed, ids), -1)
    return KnnGraph(new.astype(np.int64), g.sims[live].copy(), np.zeros(0, np.int64))
