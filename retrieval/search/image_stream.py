"""Image paths of a source, streamed: a list file of millions of lines is never held in memory.

The order is :func:`retrieval.core.images.list_images`'s: a folder in sorted path order (walked
one directory at a time, each directory's entries sorted), a ``.txt`` list in file order (relative
paths taken from the list's folder; blank lines and ``#`` comments skipped), an image file alone.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, Set, Union

from retrieval.core.errors import DataError
from retrieval.core.images import IMAGE_EXTENSIONS

PathLike = Union[str, Path]


def _is_image(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _walk(folder: str, seen: Set[str]) -> Iterator[str]:
    real = os.path.realpath(folder)
    if real in seen:  # a symlink loop or a folder reached twice
        return
    seen.add(real)
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return
    for e in entries:
        if e.name.startswith("."):
            continue
        if e.is_dir(follow_symlinks=True):
            yield from _walk(e.path, seen)
        elif _is_image(e.name):
            yield e.path


def _lines(txt: Path) -> Iterator[str]:
    try:
        with open(txt, encoding="utf-8-sig") as f:
            for line in f:
                s = line.strip()
                if s and not s.startswith("#"):
                    p = Path(s).expanduser()
                    yield str(p if p.is_absolute() else txt.parent / p)
    except UnicodeDecodeError:
        raise DataError(f"{txt}: not a UTF-8 text file of image paths") from None
    except OSError as e:
        raise DataError(f"{txt}: cannot read ({e.strerror or e})") from None


def iter_image_paths(source: PathLike) -> Iterator[str]:
    """Every image path of ``source`` (folder, ``.txt`` list or image file), in a fixed order.

    Raises DataError (when iterated) for a missing source, a folder without images or a list
    without paths, and for a file that is neither an image nor a ``.txt`` list."""
    src = Path(source).expanduser()
    if not src.exists():
        raise DataError(f"{src}: not found")
    if src.is_dir():
        it = _walk(str(src), set())
    elif src.suffix.lower() == ".txt":
        it = _lines(src)
    elif _is_image(src.name):
        it = iter([str(src)])
    else:
        raise DataError(f"{src}: not a folder, a .txt list of image paths or an image file")
    n = 0
    for p in it:
        n += 1
        yield p
    if n == 0:
        raise DataError(f"{src}: no image paths found (looked for {', '.join(IMAGE_EXTENSIONS)})")
