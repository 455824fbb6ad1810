"""Which image files a source names — streamed, or as a list with the files left out and why.

One set of rules, for every source a tool takes (``--images``, list files, dataset folders):

* a **folder**: every file below it whose extension is in
  :data:`retrieval.core.images.IMAGE_EXTENSIONS` (any case), walked one directory at a time in
  sorted path order; hidden files and folders (``.name``) are skipped; symlinked folders are
  followed once (a symlink loop or a folder reached twice is walked once). Every other visible
  file is left out with a reason (:func:`retrieval.core.images.unsupported_reason`).
* a **.txt list**: one path per line, in file order, read line by line (a list of millions of
  lines is never held in memory); relative paths are taken from the list's folder; blank lines
  and lines starting with ``#`` are skipped. The listed files are not checked here (a missing one
  is reported when it is loaded).
* an **image file**: itself.

:func:`iter_image_paths` streams the paths (``str``); :func:`scan_images` and :func:`list_images`
collect them (``Path``), :func:`scan_images` with the left-out files. Which files are images and
how they are decoded is :mod:`retrieval.core.images`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Set, Tuple, Union

from retrieval.core import images
from retrieval.core.errors import DataError

PathLike = Union[str, Path]
#: ``(path, None)`` for an image file, ``(path, reason)`` for a file left out.
Entry = Tuple[str, Optional[str]]


def is_image_name(name: str) -> bool:
    """Whether the file name ``name`` has an image extension (:data:`retrieval.core.images.IMAGE_EXTENSIONS`)."""
    return os.path.splitext(name)[1].lower() in images.IMAGE_EXTENSIONS


@dataclass
class ImageListing:
    """What a folder holds: ``paths`` (the image files, sorted) and ``skipped`` ((path, reason) of
    every other visible file, e.g. ``"unsupported format .heic (…)"``). Hidden files (``.name``)
    are neither."""

    paths: List[Path]
    skipped: List[Tuple[str, str]] = field(default_factory=list)


def _walk(folder: str, seen: Set[str]) -> Iterator[Entry]:
    """Every visible file below ``folder``, depth first with each directory's entries sorted by
    name (which is sorted path order)."""
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
        try:
            is_dir = e.is_dir(follow_symlinks=True)
        except OSError:
            is_dir = False
        if is_dir:
            yield from _walk(e.path, seen)
        else:
            yield e.path, None if is_image_name(e.name) else images.unsupported_reason(e.name)


def _lines(txt: Path) -> Iterator[Entry]:
    """The paths a ``.txt`` list names, line by line."""
    try:
        with open(txt, encoding="utf-8-sig") as f:
            for line in f:
                s = line.strip()
                if s and not s.startswith("#"):
                    p = Path(s).expanduser()
                    yield str(p if p.is_absolute() else txt.parent / p), None
    except UnicodeDecodeError:
        raise DataError(f"{txt}: not a UTF-8 text file of image paths") from None
    except OSError as e:
        raise DataError(f"{txt}: cannot read ({e.strerror or e})") from None


def _no_images_message(src: Path, left_out: Dict[str, int]) -> str:
    """Why a folder gives no image: what was looked for and, per extension, what was left out."""
    msg = f"{src}: no images found in this folder or below (looked for {', '.join(images.IMAGE_EXTENSIONS)})"
    if left_out:
        msg += "; left out: " + ", ".join(f"{n} {e}" for e, n in sorted(left_out.items()))
        hints = sorted({images.UNSUPPORTED_HINTS[e] for e in left_out if e in images.UNSUPPORTED_HINTS})
        if hints:
            msg += f" ({'; '.join(hints)})"
    return msg


def iter_entries(source: PathLike) -> Iterator[Entry]:
    """Every file ``source`` names, in order: ``(path, None)`` for an image, ``(path, reason)``
    for a file of a folder that is left out (the rules in the module docstring).

    Raises (when iterated) DataError for a missing source, a folder without images (the message
    counts what was left out, per extension), a list without paths, and a file that is neither an
    image nor a ``.txt`` list.
    """
    src = Path(source).expanduser()
    if not src.exists():
        raise DataError(f"{src}: not found")
    if src.is_dir():
        entries = _walk(str(src), set())
    elif src.suffix.lower() == ".txt":
        entries = _lines(src)
    elif is_image_name(src.name):
        entries = iter([(str(src), None)])
    else:
        raise DataError(f"{src}: not a folder, a .txt list of image paths or an image file "
                        f"({', '.join(images.IMAGE_EXTENSIONS)})")
    found = 0
    left_out: Dict[str, int] = {}
    for path, reason in entries:
        if reason is None:
            found += 1
        else:
            ext = Path(path).suffix.lower() or "(none)"
            left_out[ext] = left_out.get(ext, 0) + 1
        yield path, reason
    if not found:
        raise DataError(_no_images_message(src, left_out) if src.is_dir()
                        else f"{src}: the list names no image paths")


def iter_image_paths(source: PathLike) -> Iterator[str]:
    """Every image path of ``source`` (folder, ``.txt`` list or image file), streamed in the order
    of :func:`list_images`. Raises DataError when iterated, as :func:`iter_entries`."""
    for path, reason in iter_entries(source):
        if reason is None:
            yield path


def scan_images(source: PathLike) -> ImageListing:
    """:func:`list_images` that also says which files of a folder were left out and why, sorted
    (a ``.txt`` list or a single file skips nothing here: its files are checked when they are
    loaded). Raises DataError as :func:`iter_entries`."""
    paths: List[Path] = []
    skipped: List[Tuple[str, str]] = []
    for path, reason in iter_entries(source):
        if reason is None:
            paths.append(Path(path))
        else:
            skipped.append((path, reason))
    return ImageListing(paths, sorted(skipped))


def list_images(source: PathLike) -> List[Path]:
    """The image files named by ``source``: a folder's (sorted by path), a ``.txt`` list's (in
    file order) or the image file itself (the rules in the module docstring).

    Raises:
        DataError: ``source`` does not exist, is a folder without images, a list without paths, or
            a file that is neither an image nor a ``.txt`` list.
    """
    return scan_images(source).paths
