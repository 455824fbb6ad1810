"""Compacting an index folder: removed ids dropped, the live ones renumbered, segments merged into one.

An index that grows keeps every id it ever gave: a re-described or pruned file's id is only
flagged removed (its descriptor and codes stay), and each addition adds a segment that every search
visits. :func:`compact_index` rewrites the folder without them:

* ids: the live ids keep their order and are renumbered ``0 .. live-1`` (new id = old id − the
  removed ids below it);
* descriptors and paths: the live rows, streamed (never the whole matrix in memory);
* IVF segments: the inverted-list entries are **copied**, not re-encoded — every segment is a copy
  of the same trained index, so an entry's codes do not depend on its segment. Entries of removed
  ids are dropped and the others get their new ids; the merged lists are built in RAM (the size
  of the codes, which the index's memory budget already holds) and moved to an on-disk lists file
  when the index had its lists on disk. Search results are those of the
  old index, renumbered, to the last bit of their scores;
* other compressed indexes (HNSW, PQ without IVF) cannot drop entries, so the live descriptors
  are added to a copy of the trained index; exact (``Flat``) indexes have no segment;
* the k-NN graph, when the folder stores one (``tools/index.py --graph``): its removed rows
  deleted and its ids renumbered (:func:`retrieval.search.knn_graph.renumber_graph`; it already
  left the removed ids out, so it stays the brute-force graph of the live ids);
* the stored local features (``tools/index.py --local-features``): those of the live ids, packed again.

The new folder is written to a temporary folder and renamed over ``out`` (by default the folder
itself); the old one stays readable until the rename.
"""
from __future__ import annotations

import itertools
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Union

import faiss
import numpy as np
from tqdm import tqdm

from retrieval.search import descriptor_file
from retrieval.search.factory import ivf_of
from retrieval.search.index import ImageIndex
from retrieval.search.index_folder import DESCRIPTORS, check_index_target, read_trained, write_index
from retrieval.search.knn_graph import renumber_graph

PathLike = Union[str, Path]
BLOCK = 65536  # descriptor rows per block when streaming


@dataclass
class CompactReport:
    """What :func:`compact_index` did: ids before and after, segments before, bytes on disk."""

    out: str
    factory: str
    before: int
    removed: int
    live: int
    segments_before: int
    bytes_before: int
    bytes_after: int
    seconds: float

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file())


def new_ids(old: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """New id of each live ``old`` id: old − (removed ids below it). (n,) int64 → (n,) int64."""
    return np.asarray(old, np.int64) - np.searchsorted(removed, old)


def is_in_sorted(ids: np.ndarray, sorted_ids: np.ndarray) -> np.ndarray:
    """``np.isin(ids, sorted_ids)`` for a sorted ``sorted_ids`` by binary search: O(n log r), not
    a sort of both per call (65,536 lists × 10⁵ removed ids made ``np.isin`` take hours)."""
    if sorted_ids.size == 0:
        return np.zeros(ids.shape, bool)
    pos = np.minimum(np.searchsorted(sorted_ids, ids), sorted_ids.size - 1)
    return sorted_ids[pos] == ids


def _live_blocks(folder: Path, n: int, removed: np.ndarray) -> Iterator[np.ndarray]:
    """The live descriptors of the first ``n`` rows of ``folder``'s descriptor file in id order,
    (b, D) float32 blocks read with file I/O (no memory map grows the resident memory)."""
    for a in range(0, n, BLOCK):
        b = min(n, a + BLOCK)
        X = descriptor_file.read_rows(folder / DESCRIPTORS, a, b)
        lo, hi = np.searchsorted(removed, [a, b])
        if hi > lo:
            X = np.delete(X, removed[lo:hi] - a, axis=0)
        if X.shape[0]:
            yield X


def _copy_lists(index: ImageIndex, removed: np.ndarray, trained: Any, progress: bool) -> Any:
    """The inverted lists of every segment of ``index`` without ``removed`` ids, renumbered, in a
    new in-memory ``ArrayInvertedLists`` filling a copy of ``trained``; returns that index."""
    out = faiss.clone_index(trained)
    dst_ivf = ivf_of(out)
    dst = faiss.ArrayInvertedLists(dst_ivf.nlist, dst_ivf.code_size)
    cs = dst_ivf.code_size
    total = 0
    for seg in index.segments:
        inv = ivf_of(seg.index).invlists
        for lst in tqdm(range(inv.nlist), desc="compact lists", unit="list", disable=not progress, leave=False,
                        mininterval=1.0):
            n = inv.list_size(lst)
            if n == 0:
                continue
            ids = faiss.rev_swig_ptr(inv.get_ids(lst), n).copy() + seg.offset
            codes = faiss.rev_swig_ptr(inv.get_codes(lst), n * cs).copy().reshape(n, cs)
            keep = ~is_in_sorted(ids, removed)
            m = int(keep.sum())
            if m:
                nid = np.ascontiguousarray(new_ids(ids[keep], removed))
                kept = np.ascontiguousarray(codes[keep])
                dst.add_entries(lst, m, faiss.swig_ptr(nid), faiss.swig_ptr(kept))
                total += m
    dst_ivf.replace_invlists(dst, True)
    dst.this.disown()  # owned by the index now
    dst_ivf.ntotal = out.ntotal = total
    return out


def _readded(trained: Any, blocks: Iterator[np.ndarray]) -> Any:
    """A copy of ``trained`` (not IVF: its entries cannot be dropped) holding the descriptors of
    ``blocks`` ((b, D) float32 each)."""
    out = faiss.clone_index(trained)
    for X in blocks:
        out.add(X)
    return out


def compact_index(folder: PathLike, out: Optional[PathLike] = None, *, progress: bool = True) -> CompactReport:
    """Rewrite the index at ``folder`` into ``out`` (default: ``folder`` itself) without its removed
    ids and with one segment (module doc)."""
    t0 = time.perf_counter()
    folder = Path(folder)
    out = Path(out) if out is not None else folder
    index = ImageIndex.load(folder)
    if out.resolve() != folder.resolve():
        check_index_target(out)
    removed = np.asarray(index.removed_ids, np.int64)
    before, live = index.ntotal, index.n_live
    bytes_before = folder_bytes(folder)
    segments_before = len(index.segments)
    trained = read_trained(folder)
    segment = None
    if trained is not None:
        segment = (_copy_lists(index, removed, trained, progress) if ivf_of(trained) is not None
                   else _readded(trained, _live_blocks(folder, index.ntotal, removed)))
    graph = renumber_graph(index.knn_graph(progress=progress)) if index.has_stored_graph else None
    packed = index.packed_live_local_features()
    by_path, by_stat = itertools.tee(index.saved_rows(live_only=True))  # consumed in step: a row at a time
    write_index(out, index.info(), descriptors=_live_blocks(folder, index.ntotal, removed),
                paths=(p for _, p, _ in by_path), stats=(st for _, _, st in by_stat), segment=segment,
                ondisk=index.on_disk, trained=trained, graph=graph,
                local_features=None if packed is None else (0, packed))
    index.close()
    return CompactReport(str(out), index.factory, before, int(removed.size), live, segments_before, bytes_before,
                         folder_bytes(out), time.perf_counter() - t0)
