"""The ``exact`` tier: files with the same bytes, or the same decoded pixels.

Two files are exact duplicates when their bytes are equal (SHA-256 of the file), or when they
decode to the same pixels after EXIF rotation and conversion to RGB (SHA-256 of the size and the
RGB bytes: a PNG and a TIFF of one picture, a copy whose metadata was stripped). Lossy
re-encodings are never exact; they are ``near``.
"""
from __future__ import annotations

import hashlib
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from tqdm import tqdm

from retrieval.core.errors import ImageError
from retrieval.core.images import load_image

PathLike = Union[str, Path]
_CHUNK = 1 << 20


def file_digest(path: PathLike) -> str:
    """SHA-256 of the file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def pixel_digest(path: PathLike) -> Optional[str]:
    """SHA-256 of the decoded image (upright, RGB): its size then its bytes; None when the file
    does not decode."""
    try:
        img = load_image(path)
    except ImageError:
        return None
    h = hashlib.sha256(f"{img.width}x{img.height}".encode())
    h.update(np.asarray(img, dtype=np.uint8).tobytes())
    return h.hexdigest()


def exact_groups(paths: Sequence[PathLike], progress: bool = False) -> List[List[int]]:
    """Groups (lists of positions in ``paths``, each sorted, at least two, ordered by their first)
    of files with equal bytes or equal decoded pixels (every file is decoded: equal pixels may come
    from different formats). Files that cannot be read are left out."""
    n = len(paths)
    parent = list(range(n))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    by_key: Dict[Tuple[str, str], int] = {}
    for i, p in enumerate(tqdm(paths, desc="dedup: hash", unit="img", disable=not progress)):
        keys = []
        try:
            keys.append(("file", file_digest(p)))
        except OSError:
            continue
        px = pixel_digest(p)
        if px is not None:
            keys.append(("pixels", px))
        for k in keys:
            j = by_key.setdefault(k, i)
            if j != i:
                parent[find(i)] = find(j)
    groups: Dict[int, List[int]] = defaultdict(list)
    for i in range(n):
        groups[find(i)].append(i)
    return sorted((sorted(g) for g in groups.values() if len(g) > 1), key=lambda g: g[0])
