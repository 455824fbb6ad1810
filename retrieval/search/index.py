"""A searchable collection of descriptors: faiss segments, descriptors and ids ↔ paths in one folder.

Folder layout (format version 2)::

    index/
      meta.json          format, version, factory, dim, count, the model's config and fingerprint
      paths.sqlite       ids ↔ paths, file size and mtime per id, removed flags, committed segments
      descriptors.npy    (N, D) float32 row-major, grown in place, read memory-mapped: exact search
                         (Flat), re-ranking, DBA, rebuilding another factory
      trained.index      the trained, empty faiss index (absent for Flat): every segment is a copy
      segments/*.index   faiss indexes over consecutive id ranges (one built from shards with
                         --on-disk keeps its inverted lists beside it, in segments/*.ivfdata,
                         memory-mapped at search time)

A new index is written to a temporary folder and renamed. **Adding** to a saved index writes only
what is new: the new descriptor rows (appended), one new segment, the new rows of ``paths.sqlite``
and ``meta.json``; the SQLite transaction is the commit point, so an interrupted addition leaves the
index as it was. Searching asks every segment and merges the lists. A re-described or vanished
file's id is flagged removed (:meth:`ImageIndex.remove`) and never returned again (faiss skips it
with an id selector); its descriptor and codes stay until :mod:`retrieval.search.compaction`
(``tools/index.py --compact``) rewrites the folder without them.
Folders of version 1 (``paths.json``) are still read; saving one rewrites it in version 2.

Any faiss factory string works (``Flat``, ``HNSW32``, ``IVF1024,PQ64``, ``OPQ64,IVF1024,PQ64``...).
The templates ``{n}`` (inverted lists) and ``{m}`` (PQ sub-quantizers) and the aliases ``ivfpq``,
``opq`` and ``hnsw`` are filled from the collection size and dimension when the index is trained
(:mod:`retrieval.search.factory`). ``Flat`` is searched exactly over the memory-mapped descriptors;
other indexes re-rank their top candidates with exact inner products by default.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from retrieval.core.config import from_dict
from retrieval.core.errors import ConfigError, DataError, ModelMismatchError
from retrieval.core.io import atomic_dir, atomic_path, read_json
from retrieval.search import descriptor_file
from retrieval.search.factory import ALIASES, is_exact, minimum_size, resolve_factory, train_size
from retrieval.search.ivf_training import train_index
from retrieval.search.ondisk import read_ondisk
from retrieval.search.paths_store import PathStore, Stat
from retrieval.search.topk import exact_knn, merge_topk, search_without

__all__ = ["ImageIndex", "IndexConfig", "check_index_target", "resolve_factory", "is_exact", "ALIASES"]

INDEX_FORMAT = "gemseg-index"
INDEX_VERSION = 2
META, STORE, DESCRIPTORS, TRAINED, SEGMENTS = (
    "meta.json", "paths.sqlite", "descriptors.npy", "trained.index", "segments")


@dataclass
class IndexConfig:
    """How descriptors are indexed and searched.

    factory: faiss factory string or alias (see module doc). train_size: descriptors sampled to
    train a compressed index (``None`` = chosen from the collection size). nprobe / ef_search:
    search-time accuracy knobs of IVF / HNSW indexes. rerank: re-rank the top ``rerank_k``
    candidates with exact inner products (``None`` = on for every index that is not exact).
    """

    factory: str = "Flat"
    train_size: Optional[int] = None
    nprobe: Optional[int] = None
    ef_search: Optional[int] = None
    rerank: Optional[bool] = None
    rerank_k: int = 100
    seed: int = 0

    def validate(self) -> None:
        if not self.factory.strip():
            raise ConfigError("index.factory: empty factory string")
        if self.rerank_k < 1:
            raise ConfigError(f"index.rerank_k: must be ≥ 1, got {self.rerank_k}")


def _faiss():
    import faiss  # imported lazily: heavy, and tests of other modules need not pay for it

    return faiss


def make_faiss_index(factory: str, dim: int) -> Any:
    """``faiss.index_factory`` (inner product) with a one-line ConfigError for a bad string."""
    faiss = _faiss()
    try:
        return faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as e:
        msg = str(e).strip().splitlines()[-1][:160]
        raise ConfigError(f"invalid faiss factory string '{factory}' for dimension {dim}: {msg}") from None


def read_segment(path: Path, ondisk: bool = False) -> Any:
    """A segment's faiss index; on-disk inverted lists are found beside it and memory-mapped."""
    try:
        return read_ondisk(path) if ondisk else _faiss().read_index(str(path))
    except RuntimeError as e:
        raise DataError(f"index file {path} is damaged: {str(e).strip().splitlines()[-1][:120]}") from None


def write_faiss(index: Any, path: Path) -> None:
    """``faiss.write_index`` through a temporary file and a rename."""
    with atomic_path(path) as tmp:
        _faiss().write_index(index, str(tmp))


def check_index_target(folder: Union[str, Path]) -> None:
    """Refuse to write an index over anything that is not one: a file, or a non-empty folder
    without ``meta.json`` (the user's data is never overwritten)."""
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir()
                            or (any(folder.iterdir()) and not (folder / META).is_file())):
        raise DataError(f"{folder} exists and is not a gemseg index; choose another --out")


def index_meta(dim: int, factory: str, count: int, live: int, fingerprint: Optional[str],
               model: Dict[str, Any], model_source: Optional[str], config: IndexConfig, on_disk: bool,
               bytes_per_vector: Optional[float]) -> Dict[str, Any]:
    """The content of ``meta.json`` (informative: the path store holds the committed counts)."""
    return {"format": INDEX_FORMAT, "version": INDEX_VERSION, "factory": factory, "dim": dim,
            "count": count, "live": live, "fingerprint": fingerprint, "model": model,
            "model_source": model_source, "index_config": dict(vars(config)), "on_disk": on_disk,
            "bytes_per_vector": bytes_per_vector}


def write_meta(folder: Path, meta: Dict[str, Any]) -> None:
    with atomic_path(folder / META) as tmp:
        Path(tmp).write_text(json.dumps(meta, indent=2))


@dataclass
class Segment:
    """A faiss index over ids ``offset .. offset+count-1`` (stored with local ids from 0)."""

    index: Any
    offset: int
    count: int


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
        faiss = _faiss()
        if self._template is None and self._folder is not None and (self._folder / TRAINED).is_file():
            self._template = read_segment(self._folder / TRAINED)
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
        if self._folder is not None and (self._folder / TRAINED).is_file():
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
        faiss = _faiss()
        for seg in self._all_segments():
            try:
                return int(faiss.extract_index_ivf(seg.index).nprobe)
            except RuntimeError:
                return None
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
        flat = cand.reshape(-1)
        X = self.rows(np.clip(flat, 0, None)).reshape(cand.shape + (self.dim,))
        exact = np.einsum("qkd,qd->qk", X, Q)
        exact[cand < 0] = -np.inf
        order = np.argsort(-exact, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(exact, order, 1).astype(np.float32), np.take_along_axis(cand, order, 1)

    def _search_segments(self, Q: np.ndarray, k: int, nprobe: Optional[int],
                         ef_search: Optional[int]) -> Tuple[np.ndarray, np.ndarray]:
        """Top-``k`` of every segment, merged; removed ids are skipped inside faiss (an id selector
        passed with the search parameters), so ``k`` does not grow with the removed ids."""
        faiss = _faiss()
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

    # -- persistence -------------------------------------------------------------------------------
    def meta(self) -> Dict[str, Any]:
        return index_meta(self.dim, self.factory, self.ntotal, self.n_live, self.fingerprint, self.model_config,
                          self.model_source, self.config, self.on_disk, self.bytes_per_vector())

    def bytes_per_vector(self) -> Optional[float]:
        """Bytes of the faiss segments per id (4·D for Flat, whose search reads the descriptors)."""
        if self.ntotal == 0:
            return None
        if is_exact(self.factory):
            return 4.0 * self.dim
        faiss = _faiss()
        size = 0
        if self._folder is not None and not self._legacy:
            size += sum(f.stat().st_size for f in (self._folder / SEGMENTS).glob("*") if f.is_file())
        if self._new_seg is not None and self._new_seg.ntotal:
            size += len(faiss.serialize_index(self._new_seg))
        return size / self.ntotal

    def save(self, folder: Union[str, Path]) -> Path:
        """Write the index to ``folder``. The folder it was loaded from (or last saved to) only
        receives what was added since; any other folder is written whole, to a temporary folder
        renamed over ``folder``."""
        folder = Path(folder)
        check_index_target(folder)
        if (self._folder is not None and not self._legacy and folder.exists()
                and os.path.samefile(folder, self._folder)):
            if not self._new_paths and not self._new_removed:
                return folder  # nothing new: nothing written
            self._commit(self._folder, self._store)
            self._settle()
            return folder
        with atomic_dir(folder) as tmp:
            if self._folder is not None and not self._legacy:
                for f in self._folder.iterdir():  # a copy of the saved part, then what is new
                    (shutil.copytree if f.is_dir() else shutil.copy2)(f, tmp / f.name)
                store = PathStore(tmp / STORE)
                self._commit(tmp, store)
                store.close()
            else:
                self._write_new(tmp)
        self._attach(folder)
        return folder

    def _write_meta(self, folder: Path) -> None:
        write_meta(folder, self.meta())

    def _write_new(self, folder: Path) -> None:
        """A complete folder holding this (unsaved or version-1) index."""
        descriptor_file.create(folder / DESCRIPTORS, self.dim, self._new_desc)
        segments = []
        if self._new_seg is not None:
            if self._template is None:  # a version-1 index: its own index, emptied
                self._template = _faiss().clone_index(self._new_seg)
                self._template.reset()
            write_faiss(self._template, folder / TRAINED)
            (folder / SEGMENTS).mkdir()
            write_faiss(self._new_seg, folder / SEGMENTS / "000000.index")
            segments.append({"file": f"{SEGMENTS}/000000.index", "offset": 0, "count": self.ntotal, "ondisk": False})
        store = PathStore(folder / STORE, create=True)
        store.commit(0, self._new_paths, self._new_stats, self._removed, info={"segments": segments})
        store.close()
        self._write_meta(folder)

    def _commit(self, folder: Path, store: PathStore) -> None:
        """Append what is pending to the saved folder ``folder`` (its store: ``store``)."""
        start = self._saved
        if self._new_desc:
            descriptor_file.append(folder / DESCRIPTORS, self._pending_matrix(), start)
        segments = store.info("segments", [])
        if self._new_seg is not None and self._new_seg.ntotal:
            name = f"{SEGMENTS}/{start:012d}.index"
            (folder / SEGMENTS).mkdir(exist_ok=True)
            write_faiss(self._new_seg, folder / name)
            segments.append({"file": name, "offset": start, "count": int(self._new_seg.ntotal), "ondisk": False})
        store.commit(start, self._new_paths, self._new_stats, self._new_removed, info={"segments": segments})
        self._write_meta(folder)

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
        folder = Path(folder)
        meta_path = folder / META
        if not meta_path.is_file():
            if not folder.exists():
                raise DataError(f"index not found: {folder} (build one with tools/index.py --images DIR --out {folder})")
            raise DataError(f"{folder} is not a gemseg index folder (no meta.json); build one with tools/index.py")
        meta = read_json(meta_path, f"index {folder}")
        if meta.get("format") != INDEX_FORMAT:
            raise DataError(f"{folder} is not a gemseg index folder")
        if meta.get("version", 1) > INDEX_VERSION:
            raise DataError(f"{folder} is an index of a newer gemseg (format {meta['version']}); upgrade gemseg")
        cfg = from_dict(IndexConfig, meta.get("index_config", {}), where=f"{meta_path}:index_config")
        obj = cls(meta["dim"], "Flat", meta.get("model"), meta.get("fingerprint"), cfg)
        obj.factory = meta["factory"]
        obj.model_source = meta.get("model_source")
        obj.on_disk = bool(meta.get("on_disk", False))
        obj._folder = folder.resolve()
        if meta.get("version", 1) < 2:
            obj._load_v1(folder)
            return obj
        obj._store = PathStore(folder / STORE)
        obj._saved = obj._store.count()
        obj._stored = descriptor_file.open_rows(folder / DESCRIPTORS, obj._saved)
        obj._removed = obj._store.removed_ids()
        for s in obj._store.info("segments", []):
            seg = Segment(read_segment(folder / s["file"], s.get("ondisk", False)), s["offset"], s["count"])
            if seg.index.ntotal != seg.count:
                raise DataError(f"index {folder} is damaged: {s['file']} holds {seg.index.ntotal} of {seg.count} vectors")
            obj._segments.append(seg)
        return obj

    def _load_v1(self, folder: Path) -> None:
        """A version-1 folder (paths.json): held as a pending, unsaved index over its files."""
        try:
            paths = json.loads((folder / "paths.json").read_text())
            desc = np.load(folder / DESCRIPTORS, mmap_mode="r")
        except (OSError, ValueError) as e:
            raise DataError(f"index {folder} is damaged ({e}); rebuild it with tools/index.py --images") from None
        self._legacy = True
        self._new_paths, self._new_stats = list(paths), [None] * len(paths)
        self._new_desc = [desc] if len(paths) else []
        if (folder / "faiss.index").is_file() and not is_exact(self.factory):
            self._new_seg = read_segment(folder / "faiss.index")
            if self._new_seg.ntotal != len(paths):
                raise DataError(f"index {folder} is damaged: {self._new_seg.ntotal} vectors for {len(paths)} paths")
