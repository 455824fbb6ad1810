"""A ``.npy`` file of float32 descriptors that grows in place: rows are appended, never rewritten.

The file is a standard NumPy ``.npy`` file (``np.load`` reads it) whose header is padded to
:data:`HEADER_BYTES`, so the row count in its header can be rewritten in place when rows are
appended. Appending writes the new rows after the committed ones, flushes them, then updates the
header: an interrupted append leaves rows past the committed count, which the next append
truncates away. The committed row count is kept by the caller (the index's path store), so a
reader maps exactly the committed rows (:func:`open_rows`) whatever the header says.
"""
from __future__ import annotations

import ast
import os
import struct
from pathlib import Path
from typing import Iterable, Tuple, Union

import numpy as np

from retrieval.core.errors import DataError

PathLike = Union[str, Path]
MAGIC = b"\x93NUMPY"
HEADER_BYTES = 128  # whole header (magic, version, length, dict); room for 12-digit row counts


def _header(rows: int, dim: int) -> bytes:
    text = f"{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {dim}), }}"
    room = HEADER_BYTES - len(MAGIC) - 2 - 2
    if len(text) + 1 > room:
        raise ValueError(f"header for shape ({rows}, {dim}) does not fit in {HEADER_BYTES} bytes")
    return MAGIC + bytes([1, 0]) + struct.pack("<H", room) + (text + " " * (room - len(text) - 1) + "\n").encode()


def read_header(path: PathLike) -> Tuple[int, int, int]:
    """``(rows, dim, data offset in bytes)`` of a float32 (n, D) C-order ``.npy`` file."""
    with open(path, "rb") as f:
        magic = f.read(8)
        if magic[:6] != MAGIC:
            raise DataError(f"{path}: not a .npy file")
        size = struct.unpack("<H" if magic[6] == 1 else "<I", f.read(2 if magic[6] == 1 else 4))[0]
        offset = 8 + (2 if magic[6] == 1 else 4) + size
        meta = ast.literal_eval(f.read(size).decode("latin1"))
    shape = tuple(meta["shape"])
    if np.dtype(meta["descr"]) != np.float32 or meta["fortran_order"] or len(shape) != 2:
        raise DataError(f"{path}: expected a C-order float32 (n, D) array, got {meta}")
    return int(shape[0]), int(shape[1]), offset


def create(path: PathLike, dim: int, blocks: Iterable[np.ndarray] = ()) -> int:
    """Write a new file of ``dim``-d rows from ``blocks`` ((b, dim) float32 each); returns the rows."""
    rows = 0
    with open(path, "wb") as f:
        f.write(_header(0, dim))
        for b in blocks:
            b = np.ascontiguousarray(b, dtype=np.float32)
            if b.shape[0]:
                f.write(b.tobytes())
                rows += b.shape[0]
        f.flush()
        f.seek(0)
        f.write(_header(rows, dim))
        f.flush()
        os.fsync(f.fileno())
    return rows


def append(path: PathLike, rows: np.ndarray, committed: int) -> int:
    """Append ``rows`` (n, D) float32 after the first ``committed`` rows of the file (anything past
    them, left by an interrupted append, is dropped); returns the new row count. Only the new rows
    and the header are written."""
    X = np.ascontiguousarray(rows, dtype=np.float32)
    _, dim, offset = read_header(path)
    if offset != HEADER_BYTES:
        raise DataError(f"{path}: not a growable descriptor file; rebuild the index")
    if X.ndim != 2 or X.shape[1] != dim:
        raise ValueError(f"rows of shape {X.shape} do not fit a file of {dim}-d rows")
    with open(path, "r+b") as f:
        f.truncate(offset + committed * dim * 4)
        f.seek(0, os.SEEK_END)
        f.write(X.tobytes())
        f.flush()
        os.fsync(f.fileno())
        f.seek(0)
        f.write(_header(committed + X.shape[0], dim))
        f.flush()
        os.fsync(f.fileno())
    return committed + X.shape[0]


def open_rows(path: PathLike, rows: int) -> np.ndarray:
    """The first ``rows`` rows, memory-mapped read-only: (rows, D) float32."""
    have, dim, offset = read_header(path)
    size = os.path.getsize(path)
    if offset + rows * dim * 4 > size:
        raise DataError(f"{path} holds fewer than the {rows} descriptors its index records; rebuild the index")
    if rows == 0:
        return np.zeros((0, dim), np.float32)
    return np.memmap(path, dtype=np.float32, mode="r", offset=offset, shape=(rows, dim))


def read_rows(path: PathLike, start: int, stop: int) -> np.ndarray:
    """Rows ``start .. stop-1`` read with plain file I/O into a new (stop-start, D) float32 array
    (unlike a memory map, nothing stays mapped: streaming a file larger than RAM keeps the
    process's resident memory at one block)."""
    _, dim, offset = read_header(path)
    with open(path, "rb") as f:
        f.seek(offset + start * dim * 4)
        out = np.fromfile(f, dtype=np.float32, count=(stop - start) * dim)
    if out.size != (stop - start) * dim:
        raise DataError(f"{path} ends before row {stop}; the index is damaged (rebuild it)")
    return out.reshape(stop - start, dim)
