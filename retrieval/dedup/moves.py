"""Moving copies aside and back: never deleting, always undoable, safe to kill.

``--move-to DIR`` moves the copies a result suggests removing into ``DIR`` (keeping their folder
layout below the collection's root, so two ``IMG_0001.jpg`` never collide) and writes a manifest,
``DIR/dedup-moves-<time>.json``, that ``--undo MANIFEST`` reverses. Nothing is ever deleted.

The manifest is written (to a temporary file, then renamed) **before** the first file moves, with
every move's source, destination, size and SHA-256, so a move killed at any point can be finished
(:func:`resume`, which ``--move-to`` runs first on an unfinished manifest in ``DIR``) or rolled
back (:func:`undo`). Each move is a rename when source and destination share a file system;
otherwise the file is copied to a temporary name beside the destination, synced, renamed into
place, checked against its hash, and only then is the source removed. The state of a move is
read from the files themselves (source there, destination not: to do; destination there with the
right hash: done; both: a copy whose source was not yet removed), so nothing is lost in between.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from tqdm import tqdm

from retrieval.core.errors import DataError
from retrieval.core.io import atomic_path, read_json
from retrieval.dedup.exact import file_digest

PathLike = Union[str, Path]
FORMAT = "gemseg-dedup-moves"
VERSION = 1
#: Seconds to wait after each move (tests use it to kill a move half way); 0 otherwise.
PAUSE_ENV = "GEMSEG_DEDUP_MOVE_PAUSE"


@dataclass
class MoveReport:
    """What a move, a resume or an undo did: ``manifest``, ``moved`` files now at their target,
    ``already`` files that were there before this run, ``state``: moved | undone."""

    manifest: str
    moved: int
    already: int
    state: str

    def as_dict(self) -> Dict[str, Any]:
        return {"manifest": self.manifest, "moved": self.moved, "already": self.already, "state": self.state}


def _root(paths: Sequence[str]) -> Path:
    parents = [str(Path(p).resolve().parent) for p in paths]
    return Path(os.path.commonpath(parents)) if parents else Path("/")


def plan_moves(sources: Sequence[PathLike], dest: PathLike, root: Optional[PathLike] = None) -> List[Tuple[str, str]]:
    """``(source, destination)`` for each file: its path below ``root`` (default: the common folder of
    the sources) placed under ``dest``."""
    src = [str(Path(s).resolve()) for s in sources]
    base = Path(root).resolve() if root is not None else _root(src)
    dest = Path(dest).resolve()
    out = []
    for s in src:
        try:
            rel = Path(s).relative_to(base)
        except ValueError:
            rel = Path(*Path(s).parts[1:])
        out.append((s, str(dest / rel)))
    return out


def _write(path: Path, doc: Dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(doc, indent=1) + "\n")
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())


def _read(path: PathLike) -> Dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise DataError(f"manifest not found: {p}")
    doc = read_json(p, f"manifest {p}")
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("moves"), list):
        raise DataError(f"{p} is not a manifest of gemseg dedup --move-to")
    return doc


def _transfer(src: str, dst: str, sha: str) -> bool:
    """Move ``src`` to ``dst`` if not done yet (see the module's docstring); True when this call
    moved it, False when it was already there. A DataError when neither file holds the content."""
    s, d = Path(src), Path(dst)
    tmp = d.with_name(f".{d.name}.dedup-tmp")
    if tmp.exists():
        tmp.unlink()  # a copy cut short: the source is still whole
    if d.exists() and not s.exists():
        return False
    if d.exists() and s.exists():
        if file_digest(d) == sha:  # copied, source not yet removed
            s.unlink()
            return False
        raise DataError(f"{dst} already exists and is not {src}; move it away and run again")
    if not s.exists():
        raise DataError(f"{src} is missing and {dst} does not exist: was it moved by hand?")
    d.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(s, d)
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise DataError(f"cannot move {src} to {dst}: {e.strerror}") from None
        shutil.copy2(s, tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, d)
        if file_digest(d) != sha:
            raise DataError(f"the copy of {src} at {dst} does not match it; the source was kept")
        s.unlink()
    return True


def _run(doc: Dict[str, Any], manifest: Path, back: bool, progress: bool) -> Tuple[int, int]:
    pause = float(os.environ.get(PAUSE_ENV, "0") or 0)
    moved = already = 0
    moves = doc["moves"]
    for m in tqdm(moves, desc="dedup: undo" if back else "dedup: move", unit="file", disable=not progress):
        a, b = (m["dst"], m["src"]) if back else (m["src"], m["dst"])
        if _transfer(a, b, m["sha256"]):
            moved += 1
            if pause:
                time.sleep(pause)
        else:
            already += 1
    return moved, already


def move_files(sources: Sequence[PathLike], dest: PathLike, *, root: Optional[PathLike] = None,
               progress: bool = False, note: str = "") -> MoveReport:
    """Move ``sources`` under ``dest`` (:func:`plan_moves`) with a manifest written first; returns
    what was done. An unfinished manifest already in ``dest`` is finished first (:func:`resume`),
    and then the new moves are made."""
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise DataError(f"--move-to {dest} is a file, not a folder")
    for old in sorted(dest.glob("dedup-moves-*.json")) if dest.is_dir() else []:
        if _read(old).get("state") == "moving":
            resume(old, progress=progress)
    plan = plan_moves(sources, dest, root)
    for s, d in plan:
        if Path(d).exists():
            raise DataError(f"{d} already exists; choose an empty --move-to folder")
        if not Path(s).is_file():
            raise DataError(f"{s} is not a file (moved or deleted since it was found?)")
    dest.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    manifest = dest / f"dedup-moves-{stamp}.json"
    k = 1
    while manifest.exists():
        k += 1
        manifest = dest / f"dedup-moves-{stamp}-{k}.json"
    doc = {"format": FORMAT, "version": VERSION, "state": "moving", "created": time.time(), "note": note,
           "moves": [{"src": s, "dst": d, "size": Path(s).stat().st_size, "sha256": file_digest(s)} for s, d in plan]}
    _write(manifest, doc)
    moved, already = _run(doc, manifest, False, progress)
    doc["state"] = "moved"
    _write(manifest, doc)
    return MoveReport(str(manifest), moved, already, "moved")


def resume(manifest: PathLike, progress: bool = False) -> MoveReport:
    """Finish the moves of ``manifest`` (an interrupted ``--move-to``)."""
    p = Path(manifest)
    doc = _read(p)
    if doc.get("state") == "undone":
        raise DataError(f"{p} was undone; run --move-to again to move the files")
    moved, already = _run(doc, p, False, progress)
    doc["state"] = "moved"
    _write(p, doc)
    return MoveReport(str(p), moved, already, "moved")


def undo(manifest: PathLike, progress: bool = False) -> MoveReport:
    """Move every file of ``manifest`` back where it was (whether the move finished or was killed),
    checking each against its SHA-256; the manifest is kept, marked undone."""
    p = Path(manifest)
    doc = _read(p)
    moved, already = _run(doc, p, True, progress)
    for m in doc["moves"]:
        if file_digest(m["src"]) != m["sha256"]:
            raise DataError(f"{m['src']} was restored but differs from the file that was moved")
    doc["state"] = "undone"
    _write(p, doc)
    return MoveReport(str(p), moved, already, "undone")
