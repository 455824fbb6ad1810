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
  are added to a copy of the trained index; exact (``Flat``) indexes have no segment.

The new folder is written to a temporary folder and renamed over ``out`` (by default the folder
itself); the old one stays readable until the rename.
"""
from __future__ import annotations

import itertools
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Union

import numpy as np
from tqdm import tqdm

from retrieval.core.io import atomic_dir
from retrieval.search import descriptor_file
from retrieval.search.index import (
    DESCRIPTORS,
    SEGMENTS,
    STORE,
    TRAINED,
    ImageIndex,
    check_index_target,
    index_meta,
    read_segment,
    write_faiss,
    write_meta,
)
from retrieval.search.ondisk import lists_to_disk
from retrieval.search.paths_store import PathStore

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
    import faiss

    out = faiss.clone_index(trained)
    dst_ivf = faiss.extract_index_ivf(out)
    dst = faiss.ArrayInvertedLists(dst_ivf.nlist, dst_ivf.code_size)
    cs = dst_ivf.code_size
    total = 0
    for seg in index.segments:
        inv = faiss.extract_index_ivf(seg.index).invlists
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


def compact_index(folder: PathLike, out: Optional[PathLike] = None, *, progress: bool = True) -> CompactReport:
    """Rewrite the index at ``folder`` into ``out`` (default: ``folder`` itself) without its removed
    ids and with one segment (module doc)."""
    import faiss

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
    with atomic_dir(out) as tmp:
        descriptor_file.create(tmp / DESCRIPTORS, index.dim, _live_blocks(folder, index.ntotal, removed))
        segments = []
        if (folder / TRAINED).is_file():
            trained = read_segment(folder / TRAINED)
            (tmp / SEGMENTS).mkdir()
            seg = tmp / SEGMENTS / "000000.index"
            try:
                faiss.extract_index_ivf(trained)
                merged = _copy_lists(index, removed, trained, progress)
                if index.on_disk:
                    lists_to_disk(merged, tmp / SEGMENTS / "000000.ivfdata")
            except RuntimeError:  # not an IVF index: add the live descriptors again
                merged = faiss.clone_index(trained)
                for X in _live_blocks(folder, index.ntotal, removed):
                    merged.add(X)
            write_faiss(merged, seg)
            shutil.copy2(folder / TRAINED, tmp / TRAINED)
            segments.append({"file": f"{SEGMENTS}/000000.index", "offset": 0, "count": live,
                             "ondisk": bool(index.on_disk)})
        store = PathStore(tmp / STORE, create=True)
        rows = index.saved_rows(live_only=True)
        by_path, by_stat = itertools.tee(rows)  # consumed in step by commit's zip: a row at a time
        store.commit(0, (p for _, p, _ in by_path), (st for _, _, st in by_stat), info={"segments": segments})
        store.close()
        if not segments:  # exact search reads the float32 descriptors
            bpv: Optional[float] = 4.0 * index.dim
        else:
            bpv = folder_bytes(tmp / SEGMENTS) / live if live else None
        write_meta(tmp, index_meta(index.dim, index.factory, live, live, index.fingerprint, index.model_config,
                                   index.model_source, index.config, index.on_disk, bpv))
    index.close()
    return CompactReport(str(out), index.factory, before, int(removed.size), live, segments_before, bytes_before,
                         folder_bytes(out), time.perf_counter() - t0)
