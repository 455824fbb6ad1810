"""A searchable collection of descriptors: faiss segments, descriptors and ids ↔ paths.

:class:`ImageIndex` holds an index's contents: the saved part (a folder, read through
:mod:`retrieval.search.index_folder`, which also documents the folder's layout and writes it) and
what was added or removed since (pending until :meth:`ImageIndex.save`). Searching asks every
segment and merges the lists. A re-described or vanished file's id is flagged removed
(:meth:`ImageIndex.remove`) and never returned again (faiss skips it with an id selector); its
descriptor and codes stay until :mod:`retrieval.search.compaction` (``tools/index.py --compact``)
rewrites the folder without them. Folders of version 1 (``paths.json``) are still read; saving one
rewrites it in version 2.

Any faiss factory string works (``Flat``, ``HNSW32``, ``IVF1024,PQ64``, ``OPQ64,IVF1024,PQ64``...).
The templates ``{n}`` (inverted lists) and ``{m}`` (PQ sub-quantizers) and the aliases ``ivfpq``,
``opq`` and ``hnsw`` are filled from the collection size and dimension when the index is trained
(:mod:`retrieval.search.factory`). ``Flat`` is searched exactly over the memory-mapped descriptors;
other indexes re-rank their top candidates with exact inner products by default.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import faiss
import numpy as np
from tqdm import tqdm

from retrieval.core.errors import DataError, ImageError, ModelMismatchError
from retrieval.core.images import load_image
from retrieval.search import descriptor_file
from retrieval.search.factory import (
    ALIASES,
    is_exact,
    ivf_of,
    make_faiss_index,
    minimum_size,
    resolve_factory,
    train_size,
)
from retrieval.search.index_config import IndexConfig
from retrieval.search.index_folder import (
    DESCRIPTORS,
    IndexInfo,
    SavedFolder,
    Segment,
    check_index_target,
    graph_record_valid,
    has_trained,
    index_meta,
    read_graph,
    read_index_folder,
    read_local_packs,
    read_trained,
    segment_bytes,
    write_index,
)
from retrieval.search.ivf_training import train_index
from retrieval.search.knn_graph import DEFAULT_K, KnnGraph, build_knn_graph, grow_knn_graph
from retrieval.search.local_features import sift_features
from retrieval.search.packed_features import LocalFeatures, PackedFeatures
from retrieval.search.paths_store import PathStore, Stat
from retrieval.search.topk import exact_knn, merge_topk, rerank_exact, search_without

__all__ = ["ImageIndex", "IndexConfig", "check_index_target", "resolve_factory", "is_exact", "ALIASES",
           "make_faiss_index", "minimum_size"]


class IndexPaths(Sequence[str]):
    """``index.paths``: the path of every id, read from the store on demand (``list(...)`` to load
    them all); compares equal to a list of the same paths."""

    def __init__(self, owner: "ImageIndex") -> None:
        self._owner = owner

    def __len__(self) -> int:
        return self._owner.ntotal

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        i = int(i)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        o = self._owner
        return o._store.get(i) if i < o._saved else o._new_paths[i - o._saved]  # type: ignore[union-attr]

    def __iter__(self) -> Iterator[str]:
        o = self._owner
        if o._store is not None:
            yield from (p for _, p, _ in o._store.iter_rows(0, o._saved))
        yield from o._new_paths

    def many(self, ids: Sequence[int]) -> List[str]:
        """Paths of ``ids`` in one query."""
        o = self._owner
        old = [int(i) for i in ids if int(i) < o._saved]
        found = dict(zip(old, o._store.get_many(old))) if old else {}  # type: ignore[union-attr]
        return [found[int(i)] if int(i) < o._saved else o._new_paths[int(i) - o._saved] for i in ids]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (IndexPaths, list, tuple)):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    def __repr__(self) -> str:
        return f"<{len(self)} index paths>"


class ImageIndex:
    """Descriptors of a collection of images in faiss inner-product segments.

    Args:
        dim: descriptor dimension D.
        factory: faiss factory string (templates allowed until the index is trained).
        model_config: the descriptor model's config as a plain dict (stored in meta.json).
        fingerprint: the descriptor model's fingerprint (``DescriptorNet.fingerprint()``).
        config: search settings (:class:`IndexConfig`).
    """

    def __init__(self, dim: int, factory: str = "Flat", model_config: Optional[Dict[str, Any]] = None,
                 fingerprint: Optional[str] = None, config: Optional[IndexConfig] = None) -> None:
        self.dim = int(dim)
        self.config = config or IndexConfig(factory=factory)
        self.factory = factory
        self.model_config = model_config or {}
        self.fingerprint = fingerprint
        self.model_source: Optional[str] = None  # checkpoint/config the model came from, if any
        self.train_seconds = 0.0
        self.on_disk = False
        # persisted part (a saved index folder): ids 0 .. _saved-1
        self._folder: Optional[Path] = None
        self._legacy = False
        self._store: Optional[PathStore] = None
        self._saved = 0
        self._stored: np.ndarray = np.zeros((0, self.dim), np.float32)
        self._segments: List[Segment] = []
        # pending part (added since): ids _saved .. ntotal-1
        self._new_paths: List[str] = []
        self._new_stats: List[Stat] = []
        self._new_desc: List[np.ndarray] = []
        self._new_seg: Any = None
        self._removed = np.zeros(0, np.int64)  # sorted ids never returned again
        self._new_removed: List[int] = []
        self._template: Any = None  # the trained, empty faiss index
        self._graph_record: Optional[Dict[str, Any]] = None  # the folder's stored k-NN graph, if any
        self._graph: Optional[KnnGraph] = None  # the k-NN graph in memory (covers ntotal when current)
        self._local_record: Optional[Dict[str, Any]] = None  # the folder's stored local features, if any
        self._local_packs: Optional[List[Tuple[int, PackedFeatures]]] = None
        if not is_exact(factory) and "{" not in factory and factory.strip().lower() not in ALIASES:
            self._template = make_faiss_index(factory, self.dim)  # a bad string fails here, early

    # -- contents ----------------------------------------------------------------------------------
    @property
    def ntotal(self) -> int:
        """Ids in the index (removed ones included: ids are row numbers)."""
        return self._saved + len(self._new_paths)

    @property
    def n_live(self) -> int:
        """Ids that searches can return."""
        return self.ntotal - len(self._removed)

    def __len__(self) -> int:
        return self.ntotal

    @property
    def paths(self) -> IndexPaths:
        return IndexPaths(self)

    @property
    def removed_ids(self) -> np.ndarray:
        return self._removed

    def _pending_matrix(self) -> np.ndarray:
        if len(self._new_desc) > 1:
            self._new_desc = [np.ascontiguousarray(np.concatenate(self._new_desc))]
        return self._new_desc[0] if self._new_desc else np.zeros((0, self.dim), np.float32)

    def descriptors(self) -> np.ndarray:
        """All stored descriptors, (N, D) float32 in id order (memory-mapped when the index is a
        saved folder with nothing added since)."""
        if not self._new_desc:
            return self._stored
        if self._saved == 0:
            return self._pending_matrix()
        return np.concatenate([self._stored, self._pending_matrix()])

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """Descriptors of ``ids`` ((m,) int64, all ≥ 0): (m, D) float32."""
        ids = np.asarray(ids, dtype=np.int64)
        out = np.empty((ids.shape[0], self.dim), np.float32)
        old = ids < self._saved
        if old.any():
            o = np.flatnonzero(old)
            srt = np.argsort(ids[o], kind="stable")  # sorted reads of the memory map
            out[o[srt]] = self._stored[ids[o][srt]]
        if (~old).any():
            out[~old] = self._pending_matrix()[ids[~old] - self._saved]
        return out

    def find(self, paths: Sequence[str]) -> Dict[str, Tuple[int, Stat]]:
        """``path → (id, (size, mtime_ns) or None)`` for the live ids among ``paths``."""
        out = self._store.lookup(paths) if self._store is not None else {}
        if self._new_paths:
            want = set(paths)
            for j, p in enumerate(self._new_paths):
                i = self._saved + j
                if p in want and not self._is_removed(i):
                    out[p] = (i, self._new_stats[j])
        return {p: v for p, v in out.items() if not self._is_removed(v[0])}

    def _is_removed(self, i: int) -> bool:
        k = np.searchsorted(self._removed, i)
        return bool(k < self._removed.size and self._removed[k] == i)

    def vanished(self) -> List[int]:
        """Live ids whose file no longer exists."""
        rows = self._store.iter_rows(0, self._saved, live_only=True) if self._store is not None else iter(())
        gone = [i for i, p, _ in rows if not os.path.exists(p) and not self._is_removed(i)]
        return gone + [self._saved + j for j, p in enumerate(self._new_paths)
                       if not os.path.exists(p) and not self._is_removed(self._saved + j)]

    def remove(self, ids: Sequence[int]) -> None:
        """Flag ``ids`` removed: searches never return them again (saved with :meth:`save`)."""
        ids = [int(i) for i in ids if 0 <= int(i) < self.ntotal]
        self._new_removed.extend(ids)
        self._removed = np.union1d(self._removed, np.array(ids, np.int64)).astype(np.int64)

    # -- building ----------------------------------------------------------------------------------
    def add(self, descriptors: np.ndarray, paths: Sequence[Union[str, Path]],
            stats: Optional[Sequence[Stat]] = None) -> None:
        """Add ``descriptors`` (n, D) float32 for ``paths`` (n), with each file's ``(size,
        mtime_ns)`` when known. Trains the index first when it needs training (on a sample of
        these descriptors)."""
        X = np.ascontiguousarray(descriptors, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != self.dim:
            raise ModelMismatchError(f"descriptors of shape {X.shape} do not fit a {self.dim}-d index")
        if len(paths) != X.shape[0] or (stats is not None and len(stats) != X.shape[0]):
            raise ValueError(f"{X.shape[0]} descriptors but {len(paths)} paths")
        if X.shape[0] == 0:
            return
        if not is_exact(self.factory) and self._new_seg is None:
            self._new_seg = self._empty_segment(X)
        if self._new_seg is not None:
            self._new_seg.add(X)
        self._new_desc.append(X)
        self._new_paths.extend(str(p) for p in paths)
        self._new_stats.extend(stats if stats is not None else [None] * X.shape[0])

    def _empty_segment(self, X: np.ndarray) -> Any:
        if self._template is None and self._folder is not None:
            self._template = read_trained(self._folder)
        if self._template is None or not self._template.is_trained:
            if self._template is None or "{" in self.factory or self.factory.strip().lower() in ALIASES:
                self.factory = resolve_factory(self.factory, self.ntotal + X.shape[0], self.dim)
                self._template = make_faiss_index(self.factory, self.dim)
            if is_exact(self.factory):
                return None
            if not self._template.is_trained:
                self.train(X)
        return faiss.clone_index(self._template)

    def check_size(self, n: int) -> None:
        """Before any image is described: a factory that must be trained refuses a collection of
        ``n`` images smaller than :func:`~retrieval.search.factory.minimum_size`, in plain words
        (DataError). An index already trained (a template on disk or in memory) takes any number."""
        if self._template is not None and self._template.is_trained:
            return
        if self._folder is not None and has_trained(self._folder):
            return
        need = minimum_size(self.factory, self.dim, n)
        if n < need:
            raise DataError(f"the '{self.factory}' index needs at least {need} images to train; this collection "
                            f"has {n}: use --factory Flat (exact) or hnsw below that")

    def train(self, X: np.ndarray) -> None:
        """Train the (empty) faiss index on a sample of ``X`` (n, D) float32."""
        n_train = train_size(self._template, X.shape[0], self.config.train_size)
        rng = np.random.default_rng(self.config.seed)
        sample = X[np.sort(rng.choice(X.shape[0], n_train, replace=False))] if n_train < X.shape[0] else X
        t0 = time.perf_counter()
        try:
            train_index(self._template, sample, seed=self.config.seed)
        except RuntimeError as e:
            raise DataError(
                f"cannot train index '{self.factory}' on {sample.shape[0]} descriptors "
                f"({str(e).strip().splitlines()[-1][:120]}); index more images or use --factory Flat") from None
        self.train_seconds = time.perf_counter() - t0

    # -- searching ---------------------------------------------------------------------------------
    def check_model(self, fingerprint: Optional[str], dim: Optional[int] = None) -> None:
        """Refuse descriptors made by another model than the one that built this index."""
        if dim is not None and dim != self.dim:
            raise ModelMismatchError(
                f"query descriptor has dimension {dim} but the index holds {self.dim}-d descriptors "
                f"of model {self.fingerprint}; search with the model that built the index")
        if fingerprint is not None and self.fingerprint is not None and fingerprint != self.fingerprint:
            raise ModelMismatchError(
                f"the query model (fingerprint {fingerprint}) is not the one that built this index "
                f"({self.fingerprint}); search with the index's model or re-index")

    @classmethod
    def load_built_by(cls, folder: Union[str, Path], fingerprint: str, hint: str) -> "ImageIndex":
        """:meth:`load` the index at ``folder`` and require that the model of ``fingerprint`` built
        it; otherwise a one-line ModelMismatchError that ends with ``hint`` (what to do instead)."""
        index = cls.load(folder)
        if index.fingerprint != fingerprint:
            raise ModelMismatchError(f"{folder} was built by another model (fingerprint {index.fingerprint}, "
                                     f"this model {fingerprint}); {hint}")
        return index

    @property
    def segments(self) -> List[Segment]:
        """The saved segments (faiss indexes over consecutive id ranges), in id order."""
        return list(self._segments)

    def saved_rows(self, live_only: bool = True) -> Iterator[Tuple[int, str, Stat]]:
        """``(id, path, (size, mtime_ns) or None)`` of the saved ids in id order, streamed from the
        path store (the live ones only by default)."""
        if self._store is not None:
            yield from self._store.iter_rows(0, self._saved, live_only=live_only)

    def close(self) -> None:
        """Close the path store (the object is not usable afterwards)."""
        if self._store is not None:
            self._store.close()

    def _all_segments(self) -> List[Segment]:
        segs = list(self._segments)
        if self._new_seg is not None and self._new_seg.ntotal:
            segs.append(Segment(self._new_seg, self._saved, self._new_seg.ntotal))
        return segs

    @property
    def nprobe(self) -> Optional[int]:
        """The number of inverted lists a search visits now (``None``: not an IVF index)."""
        for seg in self._all_segments():
            ivf = ivf_of(seg.index)
            return None if ivf is None else int(ivf.nprobe)
        return None

    def search(self, queries: np.ndarray, k: int = 10, *, fingerprint: Optional[str] = None,
               nprobe: Optional[int] = None, ef_search: Optional[int] = None,
               rerank: Optional[bool] = None, rerank_k: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
        """Top-``k`` database items for each query (removed ids never among them).

        Args:
            queries: (Q, D) float32 (a (D,) vector is taken as one query).
            fingerprint: the query model's fingerprint; a different one raises ModelMismatchError.
        Returns:
            scores (Q, k) float32 (inner products, best first) and ids (Q, k) int64 (−1 = none).
        """
        Q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        self.check_model(fingerprint, Q.shape[1])
        if self.n_live <= 0:
            return np.zeros((Q.shape[0], 0), np.float32), np.zeros((Q.shape[0], 0), np.int64)
        k = min(k, self.n_live)
        if is_exact(self.factory):
            blocks = [(self._stored, 0), (self._pending_matrix(), self._saved)]
            return exact_knn(Q, blocks, k, self._removed)
        if rerank is None:
            rerank = self.config.rerank if self.config.rerank is not None else True
        kk = min(self.n_live, max(k, rerank_k or self.config.rerank_k)) if rerank else k
        scores, cand = self._search_segments(Q, kk, nprobe if nprobe is not None else self.config.nprobe,
                                             ef_search if ef_search is not None else self.config.ef_search)
        if not rerank:
            return scores[:, :k], cand[:, :k]
        return rerank_exact(Q, cand, self.rows, k)

    def _search_segments(self, Q: np.ndarray, k: int, nprobe: Optional[int],
                         ef_search: Optional[int]) -> Tuple[np.ndarray, np.ndarray]:
        """Top-``k`` of every segment, merged; removed ids are skipped inside faiss (an id selector
        passed with the search parameters), so ``k`` does not grow with the removed ids."""
        scores, ids = [], []
        for seg in self._all_segments():
            ps = faiss.ParameterSpace()
            for name, value in (("nprobe", nprobe), ("efSearch", ef_search)):
                if value is not None:
                    try:
                        ps.set_index_parameter(seg.index, name, int(value))
                    except RuntimeError:
                        pass  # not an IVF / HNSW index
            lo, hi = np.searchsorted(self._removed, [seg.offset, seg.offset + seg.count])
            gone = self._removed[lo:hi] - seg.offset
            kk = min(k, seg.count - gone.size)
            if kk <= 0:
                continue
            if gone.size:
                s, i = search_without(seg.index, Q, kk, gone)
            else:
                s, i = seg.index.search(Q, kk)
            scores.append(s)
            ids.append(np.where(i >= 0, i + seg.offset, -1))
        return merge_topk(scores, ids, k)

    # -- the k-NN graph ------------------------------------------------------------------------------
    @property
    def has_local_features(self) -> bool:
        """Whether the folder stores local features (``tools/index.py --local-features``)."""
        return bool(self._local_record)

    def packed_live_local_features(self) -> Optional[PackedFeatures]:
        """The stored local features of the live ids, in id order, packed again (for compaction;
        ``None``: none stored)."""
        rec = self._local_record
        if not rec:
            return None
        live = [i for i in range(self.ntotal) if not self._is_removed(i)]
        feats = [self.stored_local_features(i, int(rec["max_features"]), int(rec["max_side"])) for i in live]
        return PackedFeatures.pack(feats, int(rec["max_features"]), int(rec["max_side"]))

    @property
    def has_graph_in_memory(self) -> bool:
        """Whether a k-NN graph was already read or built in this process."""
        return self._graph is not None

    @property
    def has_stored_graph(self) -> bool:
        """Whether the folder holds a k-NN graph of its saved ids (``tools/index.py --graph``)."""
        return self._graph_record is not None

    def knn_graph(self, k: Optional[int] = None, progress: bool = False) -> KnnGraph:
        """The k-NN graph of the index as it is now (:mod:`retrieval.search.knn_graph`), with at
        least ``k`` neighbours a row: the folder's stored graph (grown in memory for what was added
        or removed since), or one built now on first use (kept in memory, not written: a search
        never writes the folder; ``tools/index.py --graph`` stores one). ``k``: default the stored
        graph's, else :data:`~retrieval.search.knn_graph.DEFAULT_K`."""
        if k is None:
            k = int(self._graph_record["k"]) if self._graph_record is not None else DEFAULT_K
        g = self._graph
        if (g is None or g.k < k) and self._graph_record is not None and int(self._graph_record.get("k", 0)) >= k:
            g = read_graph(self._folder, self._graph_record)  # type: ignore[arg-type]
            if g is not None and g.n != self._saved:
                g = None
        if g is None or g.k < k:
            g = build_knn_graph(self.descriptors(), k, self._removed, progress=progress)
        elif g.n != self.ntotal or not np.array_equal(g.removed, self._removed):
            g = grow_knn_graph(g, self.descriptors(), self._removed, progress=progress)
        self._graph = g
        return g

    def store_graph(self, k: int = DEFAULT_K, progress: bool = False) -> KnnGraph:
        """Build (or reuse) the k-NN graph with ``k`` neighbours and store it in the saved folder
        this index was loaded from (nothing pending: save first)."""
        if self._folder is None or self._legacy:
            raise DataError("the k-NN graph is stored in a saved index folder: save the index first")
        if self._new_paths or self._new_removed:
            raise DataError("the index has unsaved additions or removals: save it before storing its graph")
        if self._graph_record is not None and int(self._graph_record.get("k", 0)) == k:
            return self.knn_graph(k, progress)
        g = self._graph if self._graph is not None and self._graph.k == k and self._graph.n == self.ntotal \
            else build_knn_graph(self.descriptors(), k, self._removed, progress=progress)
        write_index(self._folder, self.info(), base=self._folder, graph=g)
        self._graph_record, self._graph = self._stored_graph_record(), g
        return g

    def _stored_graph_record(self) -> Optional[Dict[str, Any]]:
        """The path store's ``graph`` record, when it covers the saved ids."""
        if self._store is None:
            return None
        record = self._store.info("graph")
        return record if graph_record_valid(record, self._saved, self._removed.size) else None

    # -- stored local features ----------------------------------------------------------------------
    def _packs(self) -> List[Tuple[int, PackedFeatures]]:
        if self._local_packs is None:
            self._local_packs = read_local_packs(self._folder, self._local_record) if self._folder else []
        return self._local_packs

    def stored_local_features(self, i: int, max_features: int, max_side: int) -> Optional[LocalFeatures]:
        """The stored local features of id ``i`` (``tools/index.py --local-features``), its strongest
        ``max_features``, when they were computed at ``max_side`` with at least that many; else ``None``
        (then they are computed from the file)."""
        rec = self._local_record
        if not rec or rec.get("max_side") != max_side or int(rec.get("max_features", 0)) < max_features:
            return None
        for first, pack in self._packs():
            if first <= i < first + len(pack):
                return pack.get(i - first, max_features)
        return None

    def local_features_bytes(self) -> int:
        """Bytes of the stored local features."""
        return sum(p.nbytes() for _, p in self._packs())

    def local_features_end(self) -> int:
        """One past the last id whose local features the folder stores (0: none)."""
        return max([first + len(p) for first, p in self._packs()] + [0])

    def store_local_features(self, max_features: int = 1000, max_side: int = 640, progress: bool = False) -> int:
        """Compute the RootSIFT features of the saved ids that have none stored yet (all of them
        when the stored ones were computed otherwise) and store them in the folder; returns how many
        ids were described. Unreadable files and removed ids are stored as having none."""
        if self._folder is None or self._legacy or self._new_paths or self._new_removed:
            raise DataError("local features are stored in a saved index folder with nothing pending: save it first")
        rec = self._local_record
        same = bool(rec) and rec.get("max_side") == max_side and rec.get("max_features") == max_features
        first = self.local_features_end() if same else 0
        feats: List[Optional[LocalFeatures]] = []
        for i in tqdm(range(first, self.ntotal), desc="local features", unit="img", disable=not progress, leave=False):
            if self._is_removed(i):
                feats.append(None)
                continue
            try:
                feats.append(sift_features(load_image(self.paths[i]), max_features, max_side))
            except (ImageError, OSError):
                feats.append(None)
        if not feats:
            return 0
        pack = PackedFeatures.pack(feats, max_features, max_side)
        write_index(self._folder, self.info(), base=self._folder, local_features=(first, pack))
        self._local_record = self._store.info("local_features") if self._store is not None else None
        self._local_packs = None
        return len(feats)

    # -- persistence -------------------------------------------------------------------------------
    def info(self) -> IndexInfo:
        """What this index's ``meta.json`` says besides its counts."""
        return IndexInfo(self.dim, self.factory, self.fingerprint, self.model_config, self.model_source,
                         self.config, self.on_disk)

    def meta(self) -> Dict[str, Any]:
        return index_meta(self.info(), self.ntotal, self.n_live, self.bytes_per_vector())

    def bytes_per_vector(self) -> Optional[float]:
        """Bytes of the faiss segments per id (4·D for Flat, whose search reads the descriptors)."""
        if self.ntotal == 0:
            return None
        if is_exact(self.factory):
            return 4.0 * self.dim
        size = segment_bytes(self._folder) if self._folder is not None and not self._legacy else 0
        if self._new_seg is not None and self._new_seg.ntotal:
            size += len(faiss.serialize_index(self._new_seg))
        return size / self.ntotal

    def save(self, folder: Union[str, Path]) -> Path:
        """Write the index to ``folder`` (:func:`~retrieval.search.index_folder.write_index`). The
        folder it was loaded from (or last saved to) only receives what was added since; any other
        folder is written whole, to a temporary folder renamed over ``folder`` (never over anything
        that is not an index: :func:`~retrieval.search.index_folder.check_index_target`)."""
        folder = Path(folder)
        base = self._folder if not self._legacy else None
        in_place = base is not None and folder.exists() and os.path.samefile(folder, base)
        if in_place and not self._new_paths and not self._new_removed:
            return folder  # nothing new: nothing written
        new_seg = self._new_seg if self._new_seg is not None and self._new_seg.ntotal else None
        write_index(folder, self.info(), base=base, descriptors=self._new_desc, paths=self._new_paths,
                    stats=self._new_stats, removed=self._new_removed, segment=new_seg,
                    trained=self._trained_template() if new_seg is not None else None)
        if in_place:
            self._settle()
            self._graph_record = self._stored_graph_record()
        else:
            self._attach(folder)
        return folder

    def _trained_template(self) -> Any:
        """The trained, empty faiss index every segment copies (``None`` for Flat); a version-1
        index's is its own index, emptied."""
        if self._template is None and self._new_seg is not None:
            self._template = faiss.clone_index(self._new_seg)
            self._template.reset()
        return self._template

    def _settle(self) -> None:
        """After a commit to this index's own folder: the pending part is now saved."""
        if self._new_seg is not None and self._new_seg.ntotal:
            self._segments.append(Segment(self._new_seg, self._saved, int(self._new_seg.ntotal)))
        self._saved = self.ntotal
        self._stored = descriptor_file.open_rows(self._folder / DESCRIPTORS, self._saved)  # type: ignore[operator]
        self._new_paths, self._new_stats, self._new_desc, self._new_seg, self._new_removed = [], [], [], None, []

    def _attach(self, folder: Path) -> None:
        """Point this object at the saved ``folder`` (after a whole write)."""
        fresh = type(self).load(folder)
        if self._store is not None:
            self._store.close()
        self.__dict__.update(fresh.__dict__)

    @classmethod
    def load(cls, folder: Union[str, Path], mmap: bool = True) -> "ImageIndex":
        """Read an index folder (descriptors are always memory-mapped; ``mmap`` is kept for
        compatibility)."""
        saved = read_index_folder(folder)
        info = saved.info
        obj = cls(info.dim, "Flat", info.model_config, info.fingerprint, info.config)
        obj.factory, obj.model_source, obj.on_disk = info.factory, info.model_source, info.on_disk
        obj._folder = Path(folder).resolve()
        if saved.store is None:
            obj._hold_v1(saved)
        else:
            obj._store, obj._saved, obj._stored = saved.store, saved.count, saved.descriptors
            obj._removed, obj._segments = saved.removed, saved.segments
            obj._graph_record = saved.graph
            obj._local_record = saved.local
        return obj

    def _hold_v1(self, saved: SavedFolder) -> None:
        """A version-1 folder (paths.json): held as a pending, unsaved index over its files."""
        self._legacy = True
        self._new_paths, self._new_stats = list(saved.paths or []), [None] * saved.count
        self._new_desc = [saved.descriptors] if saved.count else []
        self._new_seg = saved.segments[0].index if saved.segments else None
