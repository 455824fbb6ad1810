"""Merging IVF indexes into one whose inverted lists live in a file (faiss's OnDiskInvertedLists).

The parts are opened memory-mapped, so the merged lists need not fit in RAM; the merged index is
written beside its lists file and read back with ``IO_FLAG_ONDISK_SAME_DIR``, so the folder can be
moved (see :func:`retrieval.search.index_folder.read_segment`). The same idea as faiss's
``contrib/ondisk.py``, written for this package's segments.
"""
from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, List, Sequence, Union

import faiss

from retrieval.search.factory import ivf_of

PathLike = Union[str, Path]


@contextmanager
def silenced() -> Iterator[None]:
    """Silence what faiss's C++ code prints on stdout/stderr about on-disk lists ("resizing ...",
    "updating ondisk filename ..."): a tool's ``--json`` output must stay JSON."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, null):
            os.close(fd)


def read_ondisk(path: PathLike) -> Any:
    """An index whose on-disk lists file lies beside it (wherever the folder was moved)."""
    with silenced():
        return faiss.read_index(str(path), faiss.IO_FLAG_ONDISK_SAME_DIR)


def _require_ivf(index: Any) -> Any:
    ivf = ivf_of(index)
    if ivf is None:
        raise ValueError("only IVF indexes have inverted lists to merge")
    return ivf


def merge_parts(trained: Any, part_files: Sequence[PathLike], lists_file: PathLike = None) -> Any:
    """Fill the empty, trained IVF index ``trained`` with the vectors of the IVF indexes saved in
    ``part_files`` (same trained quantizer; ids kept as they were added). ``lists_file``: put the
    merged inverted lists in this file (on disk) instead of in memory. Returns ``trained``."""
    ivf = _require_ivf(trained)
    if trained.ntotal:
        raise ValueError("merging needs an empty index")
    if lists_file is None:
        for f in part_files:
            part = faiss.read_index(str(f))  # kept alive while its IVF is merged
            ivf.merge_from(_require_ivf(part), 0)
            del part
        trained.ntotal = ivf.ntotal
        return trained
    keep: List[Any] = []  # the parts' indexes must outlive the merge (their lists are borrowed)
    lists = faiss.InvertedListsPtrVector()
    for f in part_files:
        part = faiss.read_index(str(f), faiss.IO_FLAG_MMAP)
        keep.append(part)
        lists.push_back(_require_ivf(part).invlists)
    with silenced():
        merged = faiss.OnDiskInvertedLists(ivf.nlist, ivf.code_size, str(lists_file))
        ntotal = merged.merge_from_multiple(lists.data(), lists.size(), False, False) if lists.size() else 0
    ivf.replace_invlists(merged, True)
    merged.this.disown()  # owned by the index now
    ivf.ntotal = trained.ntotal = ntotal
    del keep
    return trained


def lists_to_disk(index: Any, lists_file: PathLike) -> Any:
    """Move the in-memory inverted lists of an IVF ``index`` into the on-disk lists file
    ``lists_file``, in place (the in-memory lists are freed); returns ``index``."""
    ivf = _require_ivf(index)
    lists = faiss.InvertedListsPtrVector()
    lists.push_back(ivf.invlists)
    with silenced():
        disk = faiss.OnDiskInvertedLists(ivf.nlist, ivf.code_size, str(lists_file))
        disk.merge_from_multiple(lists.data(), lists.size(), False, False)
    ivf.replace_invlists(disk, True)
    disk.this.disown()  # owned by the index now
    return index


def lists_in_memory(index: Any) -> Any:
    """Copy the inverted lists of an IVF ``index`` (e.g. on-disk ones) into RAM, in place (to
    compare an on-disk index with the same index in memory); returns ``index``."""
    ivf = _require_ivf(index)
    ram = faiss.ArrayInvertedLists(ivf.nlist, ivf.code_size)
    ivf.invlists.copy_subset_to(ram, 0, 0, 2 ** 62)  # every id
    ivf.replace_invlists(ram, True)
    ram.this.disown()
    return index
