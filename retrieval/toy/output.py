"""The files both toy generators write: the output folder (emptied; refused when it holds images
that no toy generator wrote), each image as a JPEG with its object mask and part map as PNGs, and
the check on the image size.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from retrieval.core.errors import DataError

JPEG_QUALITY = 92
#: Format version of the ground-truth files (``ground_truth.json``, ``coseg.json``).
_GT_VERSION = 1


def _prepare_root(root: Path, marker: str) -> None:
    """Make ``root``'s output folders empty; refuse to clear a folder no toy generator made."""
    root.mkdir(parents=True, exist_ok=True)
    ours = (root / marker).is_file()
    for sub in ("images", "queries", "masks", "parts"):
        p = root / sub
        if p.exists():
            if not ours and any(p.iterdir()):
                raise DataError(f"{p} exists and is not from a toy generator ({marker} missing); "
                                "choose an empty or new folder")
            shutil.rmtree(p)
    if ours:
        (root / marker).unlink()


def _save(root: Path, rel: str, image: np.ndarray, labels: np.ndarray) -> None:
    """Write ``image`` (S, S, 3) uint8 to ``root/rel`` (JPEG) and, from ``labels`` (S, S) uint8, its
    object mask (0/255) and part map to ``root/masks/...`` and ``root/parts/...`` (PNG)."""
    stem = Path(rel).stem
    sub = Path(rel).parent.relative_to(Path(rel).parts[0])  # "." or the set folder
    ip = root / rel
    ip.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(ip, quality=JPEG_QUALITY)
    for kind, arr in (("masks", ((labels > 0) * 255).astype(np.uint8)), ("parts", labels)):
        d = root / kind / sub
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(d / f"{stem}.png")


def _check_size(image_size: int) -> None:
    """Refuse (DataError) an ``image_size`` that is not an integer ≥ 32."""
    if not isinstance(image_size, (int, np.integer)) or image_size < 32:
        raise DataError(f"image_size must be an integer ≥ 32, got {image_size!r}")
