"""The index folder on disk: its files, its meta.json, reading it, and the one writer that commits it.

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
      graph/*.npz        optional (tools/index.py --graph): the k-NN graph of the descriptors
                         (:mod:`retrieval.search.knn_graph`), the file the path store names
      local/<first id>/  optional (tools/index.py --local-features): RootSIFT features of the ids
                         from <first id> on, packed (:class:`retrieval.search.packed_features.PackedFeatures`)

:func:`write_index` is the only code that writes a folder: saving an index
(:meth:`retrieval.search.index.ImageIndex.save`), building one from shards
(:mod:`retrieval.search.build`) and compacting one (:mod:`retrieval.search.compaction`) call it. A
new folder is written to a temporary folder and renamed. **Adding** to a saved folder writes only
what is new: the new descriptor rows (appended), one new segment, the new rows of ``paths.sqlite``
and ``meta.json``; the SQLite transaction is the commit point (it records the row count and the
segments), so an interrupted addition leaves the index as it was.
A folder with a k-NN graph keeps it equal to the brute-force graph of its live ids: every write
grows it for the added ids and drops the removed ones (:func:`retrieval.search.knn_graph.grow_knn_graph`)
before the commit, under a new file name that the same transaction records; a graph whose record
does not match the committed rows (written by a version that did not keep it) is forgotten and
built again on first use.
Folders of version 1 (``paths.json``, ``faiss.index``) are still read (:func:`read_index_folder`).
"""
from __future__ import annotations

import json
import os
import shutil
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, Union

import faiss
import numpy as np

from retrieval.core.config import from_dict
from retrieval.core.errors import DataError
from retrieval.core.io import atomic_dir, atomic_path, read_json
from retrieval.search import descriptor_file
from retrieval.search.factory import is_exact
from retrieval.search.index_config import IndexConfig
from retrieval.search.knn_graph import KnnGraph, grow_knn_graph
from retrieval.search.ondisk import lists_to_disk, read_ondisk
from retrieval.search.packed_features import PackedFeatures
from retrieval.search.paths_store import PathStore, Stat

PathLike = Union[str, Path]
INDEX_FORMAT = "gemseg-index"
INDEX_VERSION = 2
META, STORE, DESCRIPTORS, TRAINED, SEGMENTS, GRAPH, LOCAL = (
    "meta.json", "paths.sqlite", "descriptors.npy", "trained.index", "segments", "graph", "local")
#: a segment to write: a faiss index, or a function of its on-disk lists file (``None`` when the
#: lists stay in memory) that returns the index (lists merged straight into that file)
SegmentSource = Union[Any, Callable[[Optional[Path]], Any]]


@dataclass
class IndexInfo:
    """What ``meta.json`` says of an index besides its counts: the descriptor dimension, the faiss
    factory, the model that made the descriptors (fingerprint, config as a plain dict, source file),
    the search settings and whether its inverted lists live on disk."""

    dim: int
    factory: str
    fingerprint: Optional[str]
    model_config: Dict[str, Any]
    model_source: Optional[str]
    config: IndexConfig
    on_disk: bool = False

    @classmethod
    def from_meta(cls, meta: Dict[str, Any], where: str) -> "IndexInfo":
        """From the content of a ``meta.json`` (``where``: its path, for error messages)."""
        cfg = from_dict(IndexConfig, meta.get("index_config", {}), where=f"{where}:index_config")
        return cls(int(meta["dim"]), meta["factory"], meta.get("fingerprint"), meta.get("model") or {},
                   meta.get("model_source"), cfg, bool(meta.get("on_disk", False)))


@dataclass
class Segment:
    """A faiss index over ids ``offset .. offset+count-1`` (stored with local ids from 0)."""

    index: Any
    offset: int
    count: int


@dataclass
class SavedFolder:
    """An index folder as read. ``store``: its ids ↔ paths (``None`` for a version-1 folder, whose
    ``paths`` are a list); ``descriptors``: (count, D) float32, memory-mapped; ``removed``: sorted
    (r,) int64 ids flagged removed; ``segments``: in id order."""

    info: IndexInfo
    count: int
    descriptors: np.ndarray
    removed: np.ndarray
    segments: List[Segment]
    store: Optional[PathStore] = None
    paths: Optional[List[str]] = None
    graph: Optional[Dict[str, Any]] = None
    local: Optional[Dict[str, Any]] = None


def read_local_packs(folder: PathLike, record: Optional[Dict[str, Any]]) -> List[Tuple[int, PackedFeatures]]:
    """The folder's stored local-feature packs named by ``record``: ``[(first id, pack)]``
    (memory-mapped; a pack that cannot be read is left out: its ids are described at query time)."""
    out: List[Tuple[int, PackedFeatures]] = []
    for p in (record or {}).get("packs", []):
        try:
            out.append((int(p["offset"]), PackedFeatures.load(Path(folder) / p["dir"], record["max_features"],
                                                              record["max_side"])))
        except (OSError, ValueError, KeyError):
            continue
    return out


def graph_record_valid(record: Optional[Dict[str, Any]], count: int, n_removed: int) -> bool:
    """Whether a path store's ``graph`` record covers ``count`` rows with ``n_removed`` removed."""
    return bool(record) and int(record.get("count", -1)) == count and int(record.get("removed", -1)) == n_removed


def read_graph(folder: PathLike, record: Optional[Dict[str, Any]]) -> Optional[KnnGraph]:
    """The folder's stored k-NN graph named by ``record`` (``None``: none, or its file unreadable)."""
    if not record:
        return None
    try:
        return KnnGraph.load(Path(folder) / record["file"])
    except (OSError, ValueError, KeyError):
        return None


# -- files -------------------------------------------------------------------------------------------
def read_segment(path: Path, ondisk: bool = False) -> Any:
    """A segment's faiss index; on-disk inverted lists are found beside it and memory-mapped."""
    try:
        return read_ondisk(path) if ondisk else faiss.read_index(str(path))
    except RuntimeError as e:
        raise DataError(f"index file {path} is damaged: {str(e).strip().splitlines()[-1][:120]}") from None


def write_faiss(index: Any, path: Path) -> None:
    """``faiss.write_index`` through a temporary file and a rename."""
    with atomic_path(path) as tmp:
        faiss.write_index(index, str(tmp))


def read_trained(folder: Path) -> Optional[Any]:
    """The trained, empty faiss index of the folder (``None``: it has none, e.g. Flat)."""
    return read_segment(folder / TRAINED) if has_trained(folder) else None


def has_trained(folder: Path) -> bool:
    return (Path(folder) / TRAINED).is_file()


def segment_bytes(folder: Path) -> int:
    """Bytes of the folder's segment files (on-disk inverted lists included)."""
    return sum(f.stat().st_size for f in (Path(folder) / SEGMENTS).glob("*") if f.is_file())


def check_index_target(folder: PathLike) -> None:
    """Refuse to write an index over anything that is not one: a file, or a non-empty folder
    without ``meta.json`` (the user's data is never overwritten)."""
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir()
                            or (any(folder.iterdir()) and not (folder / META).is_file())):
        raise DataError(f"{folder} exists and is not a gemseg index; choose another --out")


# -- meta.json ---------------------------------------------------------------------------------------
def index_meta(info: IndexInfo, count: int, live: int, bytes_per_vector: Optional[float]) -> Dict[str, Any]:
    """The content of ``meta.json`` (informative: the path store holds the committed counts)."""
    return {"format": INDEX_FORMAT, "version": INDEX_VERSION, "factory": info.factory, "dim": info.dim,
            "count": count, "live": live, "fingerprint": info.fingerprint, "model": info.model_config,
            "model_source": info.model_source, "index_config": dict(vars(info.config)), "on_disk": info.on_disk,
            "bytes_per_vector": bytes_per_vector}


def write_meta(folder: Path, meta: Dict[str, Any]) -> None:
    with atomic_path(folder / META) as tmp:
        Path(tmp).write_text(json.dumps(meta, indent=2))


def read_meta(folder: Path) -> Dict[str, Any]:
    """The folder's ``meta.json``, checked to be a gemseg index this version reads."""
    meta_path = folder / META
    if not meta_path.is_file():
        if not folder.exists():
            raise DataError(f"index not found: {folder} (build one with: gemseg index --images DIR --out {folder})")
        raise DataError(f"{folder} is not a gemseg index folder (no meta.json); build one with: "
                        "gemseg index --images DIR --out FOLDER")
    meta = read_json(meta_path, f"index {folder}")
    if meta.get("format") != INDEX_FORMAT:
        raise DataError(f"{folder} is not a gemseg index folder")
    if meta.get("version", 1) > INDEX_VERSION:
        raise DataError(f"{folder} is an index of a newer gemseg (format {meta['version']}); upgrade gemseg")
    return meta


# -- reading -----------------------------------------------------------------------------------------
def read_index_folder(folder: PathLike) -> SavedFolder:
    """Read the index folder ``folder`` (version 2, or 1)."""
    folder = Path(folder)
    meta = read_meta(folder)
    info = IndexInfo.from_meta(meta, str(folder / META))
    if meta.get("version", 1) < 2:
        return _read_v1(folder, info)
    store = PathStore(folder / STORE)
    count = store.count()
    segments = []
    for s in store.info("segments", []):
        seg = Segment(read_segment(folder / s["file"], s.get("ondisk", False)), s["offset"], s["count"])
        if seg.index.ntotal != seg.count:
            raise DataError(f"index {folder} is damaged: {s['file']} holds {seg.index.ntotal} of {seg.count} vectors")
        segments.append(seg)
    removed = store.removed_ids()
    graph = store.info("graph")
    return SavedFolder(info, count, descriptor_file.open_rows(folder / DESCRIPTORS, count), removed,
                       segments, store, graph=graph if graph_record_valid(graph, count, removed.size) else None,
                       local=store.info("local_features"))


def _read_v1(folder: Path, info: IndexInfo) -> SavedFolder:
    """A version-1 folder: ``paths.json``, ``descriptors.npy`` and (not Flat) ``faiss.index``."""
    try:
        paths = json.loads((folder / "paths.json").read_text())
        desc = np.load(folder / DESCRIPTORS, mmap_mode="r")
    except (OSError, ValueError) as e:
        raise DataError(f"index {folder} is damaged ({e}); rebuild it with: "
                        "gemseg index --images DIR --out FOLDER") from None
    segments = []
    if (folder / "faiss.index").is_file() and not is_exact(info.factory):
        seg = read_segment(folder / "faiss.index")
        if seg.ntotal != len(paths):
            raise DataError(f"index {folder} is damaged: {seg.ntotal} vectors for {len(paths)} paths")
        segments.append(Segment(seg, 0, len(paths)))
    return SavedFolder(info, len(paths), desc, np.zeros(0, np.int64), segments, paths=list(paths))


# -- the writer --------------------------------------------------------------------------------------
def write_index(out: PathLike, info: IndexInfo, *, base: Optional[PathLike] = None,
                descriptors: Iterable[np.ndarray] = (), paths: Iterable[str] = (), stats: Iterable[Stat] = (),
                removed: Iterable[int] = (), segment: Optional[SegmentSource] = None, ondisk: bool = False,
                trained: Any = None, graph: Optional[KnnGraph] = None,
                local_features: Optional[Tuple[int, PackedFeatures]] = None) -> Dict[str, Any]:
    """Write the index folder ``out``: the new ids' descriptors, their segment, their rows of the
    path store and ``meta.json``; the store's transaction commits them (module doc).

    Args:
        out: the index folder.
        info: what meta.json says besides the counts (which are the store's).
        base: the saved folder this adds to: ``out`` itself (what is new is appended in place),
            another index folder (copied, added to, renamed over ``out``), or ``None``: a new
            folder (written to a temporary folder renamed over ``out``).
        descriptors: the new ids' descriptors in id order, blocks of (b, D) float32.
        paths, stats: the new ids' paths and ``(size, mtime_ns)`` (or ``None``), streamed.
        removed: ids flagged removed by this write.
        segment: the faiss index over the new ids (local ids from 0), or a function of its lists
            file (:data:`SegmentSource`); ``None``: no segment (Flat).
        ondisk: the segment's inverted lists go to a lists file beside it (an index's in-memory
            lists are moved there).
        trained: the trained, empty faiss index every segment copies (written if the folder has none).
        graph: the k-NN graph of the folder after this write (all ids, removed ones left out) to
            store; ``None``: a graph the folder has is grown and dropped to match (module doc).
        local_features: ``(first id, pack)``: local features of the ids from ``first id`` on to store
            (added to those the folder has when computed the same way, else replacing them).
    Returns:
        the content of the ``meta.json`` written.
    """
    out = Path(out)
    in_place = base is not None and out.exists() and os.path.samefile(out, base)
    if not in_place:
        check_index_target(out)
    with (nullcontext(out) if in_place else atomic_dir(out)) as folder:
        if base is not None and not in_place:
            for f in Path(base).iterdir():  # a copy of the saved part, then what is new
                (shutil.copytree if f.is_dir() else shutil.copy2)(f, folder / f.name)
        meta = _commit(folder, info, descriptors, paths, stats, removed, segment, ondisk, trained, graph,
                       local_features)
    return meta


def _commit(folder: Path, info: IndexInfo, descriptors: Iterable[np.ndarray], paths: Iterable[str],
            stats: Iterable[Stat], removed: Iterable[int], segment: Optional[SegmentSource], ondisk: bool,
            trained: Any, graph: Optional[KnnGraph] = None,
            local_features: Optional[Tuple[int, PackedFeatures]] = None) -> Dict[str, Any]:
    """Add to ``folder`` (a new one when it has no path store yet) and commit (:func:`write_index`)."""
    created = not (folder / STORE).is_file()
    store = PathStore(folder / STORE, create=created)
    try:
        start = store.count()
        n = _write_descriptors(folder, info.dim, descriptors, start, created)
        if trained is not None and not has_trained(folder):
            write_faiss(trained, folder / TRAINED)
        segments = store.info("segments", [])
        if segment is not None:
            name = f"{SEGMENTS}/{'000000' if created else f'{start:012d}'}.index"
            segments.append(_write_segment(folder, name, segment, ondisk, start, n))
        removed = sorted({int(i) for i in removed})
        extra = _write_graph(folder, store, start, n, removed, graph, created)
        if local_features is not None:
            extra["local_features"] = _write_local(folder, None if created else store.info("local_features"),
                                                   *local_features)
        store.commit(start, paths, stats, removed, info={"segments": segments, **extra})  # the commit point
        count, live = store.count(), store.count() - store.removed_ids().size
        _drop_stale_graphs(folder, store.info("graph"))
        _drop_stale_local(folder, store.info("local_features"))
    finally:
        store.close()
    bpv = None if count == 0 else (segment_bytes(folder) / count if segments else 4.0 * info.dim)
    meta = index_meta(info, count, live, bpv)
    write_meta(folder, meta)
    return meta


def _write_graph(folder: Path, store: PathStore, start: int, n: int, removed: List[int],
                 graph: Optional[KnnGraph], created: bool) -> Dict[str, Any]:
    """Before the commit: the k-NN graph of the folder after it (``graph``, or the folder's own,
    grown and dropped), written under a new name → the store's ``graph`` record (``{}``: no change)."""
    old_removed = np.zeros(0, np.int64) if created else store.removed_ids()
    all_removed = np.union1d(old_removed, np.asarray(removed, np.int64)).astype(np.int64)
    record = None if created else store.info("graph")
    if graph is None:
        if not graph_record_valid(record, start, old_removed.size):
            return {"graph": None} if record else {}
        if n == 0 and all_removed.size == old_removed.size:
            return {}
        g = read_graph(folder, record)
        if g is None or g.n != start:
            return {"graph": None}
        X = descriptor_file.open_rows(folder / DESCRIPTORS, start + n)
        graph = grow_knn_graph(g, X, all_removed)
    if graph.n != start + n or not np.array_equal(graph.removed, all_removed):
        raise ValueError(f"a k-NN graph of {graph.n} ids ({graph.removed.size} removed) for a folder of "
                         f"{start + n} ({all_removed.size} removed)")
    name = f"{GRAPH}/{start + n:012d}-{all_removed.size:012d}.npz"
    graph.save(folder / name)
    return {"graph": {"file": name, "k": graph.k, "count": start + n, "removed": int(all_removed.size)}}


def _write_local(folder: Path, record: Optional[Dict[str, Any]], first: int, pack: PackedFeatures) -> Dict[str, Any]:
    """Before the commit: write ``pack`` (ids from ``first`` on) → the store's new
    ``local_features`` record (the old packs kept when computed the same way and below ``first``)."""
    same = bool(record) and record.get("max_features") == pack.max_features and record.get("max_side") == pack.max_side
    packs = [p for p in (record or {}).get("packs", []) if same and p["offset"] + p["count"] <= first]
    name = f"{LOCAL}/{first:012d}-{first + len(pack):012d}"
    pack.save(folder / name)
    packs.append({"dir": name, "offset": int(first), "count": len(pack)})
    return {"max_features": pack.max_features, "max_side": pack.max_side, "packs": packs}


def _drop_stale_local(folder: Path, record: Optional[Dict[str, Any]]) -> None:
    """After the commit: delete local-feature packs the store does not name."""
    keep = {(folder / p["dir"]).resolve() for p in (record or {}).get("packs", [])}
    for d in (folder / LOCAL).iterdir() if (folder / LOCAL).is_dir() else ():
        if d.resolve() not in keep:
            shutil.rmtree(d, ignore_errors=True)


def _drop_stale_graphs(folder: Path, record: Optional[Dict[str, Any]]) -> None:
    """After the commit: delete graph files the store does not name."""
    keep = (folder / record["file"]).resolve() if record else None
    for f in (folder / GRAPH).glob("*.npz") if (folder / GRAPH).is_dir() else ():
        if f.resolve() != keep:
            f.unlink(missing_ok=True)


def _write_descriptors(folder: Path, dim: int, blocks: Iterable[np.ndarray], start: int, created: bool) -> int:
    """Write (a new folder) or append the new rows to the descriptor file; the rows written."""
    if created:
        return descriptor_file.create(folder / DESCRIPTORS, dim, blocks)
    end = start
    for X in blocks:
        end = descriptor_file.append(folder / DESCRIPTORS, X, end)
    return end - start


def _write_segment(folder: Path, name: str, segment: SegmentSource, ondisk: bool, offset: int,
                   count: int) -> Dict[str, Any]:
    """Write the segment file ``name`` (with its lists file when ``ondisk``); its store record."""
    (folder / SEGMENTS).mkdir(exist_ok=True)
    lists = (folder / name).with_suffix(".ivfdata") if ondisk else None
    index = segment(lists) if callable(segment) else segment
    if lists is not None and not callable(segment):
        lists_to_disk(index, lists)
    if index.ntotal != count:
        raise ValueError(f"a segment of {index.ntotal} vectors for {count} new descriptors")
    write_faiss(index, folder / name)
    return {"file": name, "offset": offset, "count": count, "ondisk": ondisk}
