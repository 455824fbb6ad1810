"""Atomic file and folder writes: what a user had is never half-overwritten.

The temporary file or folder is given the permissions a plain ``open()`` / ``mkdir`` would have
given it (``0o666`` / ``0o777`` less the process umask; a file that is replaced keeps its own
mode), not ``tempfile``'s private ``0o600`` / ``0o700``: outputs are as readable as any other file
the user writes.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import shutil
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence, Type, Union

from retrieval.core.errors import DataError, GemsegError, first_line

PathLike = Union[str, Path]


def current_umask() -> int:
    """The process umask (read without changing it where ``/proc`` allows; else set and restored)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def plain_mode(is_dir: bool = False, replacing: Optional[Path] = None) -> int:
    """The permission bits a plain ``open(path, "w")`` (``is_dir``: ``mkdir``) would give a new
    file now: ``0o666`` (``0o777``) less the umask; an existing file ``replacing`` keeps its mode."""
    if replacing is not None:
        try:
            st = replacing.stat()
            if replacing.is_dir() == is_dir:
                return stat.S_IMODE(st.st_mode)
        except OSError:
            pass
    return (0o777 if is_dir else 0o666) & ~current_umask()


@contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary file path beside ``path``; on success it replaces ``path`` atomically.
    The file gets the mode a plain ``open()`` would give it (:func:`plain_mode`).

    On an exception the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        os.chmod(tmp_path, plain_mode(replacing=path))
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextmanager
def atomic_dir(path: PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it replaces folder ``path``.

    The old folder (if any) is moved aside and deleted only after the new one is in place, so an
    interruption at any point leaves either the old or the new folder readable at ``path`` (or, in
    the instant between the two renames, the old one beside it as ``.<name>.old-*``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        os.chmod(tmp, plain_mode(is_dir=True, replacing=path))
        yield tmp
        old = None
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
            os.rmdir(old)
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def torch_save_atomic(obj: Any, path: PathLike) -> None:
    """``torch.save`` through :func:`atomic_path`."""
    import torch  # here, not at the top: the toy-data generator writes files without loading torch
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def write_csv_atomic(path: PathLike, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Write a CSV file (``header`` then ``rows``) through :func:`atomic_path`."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(rows)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(buf.getvalue())


def write_log_csv(path: PathLike, fields: Sequence[str], records: Iterable[Any]) -> None:
    """One CSV row per dataclass record, columns ``fields``; floats written with 6 significant digits."""
    def cell(v: Any) -> Any:
        return f"{v:.6g}" if isinstance(v, float) else v

    write_csv_atomic(path, fields, ([cell(dataclasses.asdict(r)[k]) for k in fields] for r in records))


def torch_load(path: PathLike, what: str, error: Type[GemsegError], hint: str = "") -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)`` with one-line errors.

    A missing file raises ``error("<what> not found: <path><hint>")``; a file torch cannot read
    (pickle, zip or torch errors) raises ``error("cannot read <what> <path>: <first line>")``.
    ``weights_only=True`` means a checkpoint can hold tensors and primitives, never code.
    """
    import torch

    p = Path(path)
    if not p.is_file():
        raise error(f"{what} not found: {p}{hint}")
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - pickle, zip and torch errors alike
        raise error(f"cannot read {what} {p}: {first_line(e)}") from None


def read_json(path: PathLike, what: str) -> Any:
    """The JSON document at ``path``; one-line DataError ``"<what> is damaged: ..."`` when it cannot
    be read or parsed."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"{what} is damaged: {e}") from None
