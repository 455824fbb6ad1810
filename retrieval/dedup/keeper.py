"""Which copy of a group to keep: the largest resolution, then the least compressed, then the
oldest; with the reason, in words.

Compression, from least to most: a lossless file (PNG, TIFF, BMP, GIF, lossless WebP) before a
lossy one; among JPEGs, the higher quality estimated from the luminance quantisation table (the
IJG scale: a table equal to the standard one is quality 50, half of it 75); then more bytes per
pixel (only for lossy formats with no quality to read: more bytes can also mean added detail, a
caption). Oldest: the earliest modification time. Last, the shortest then smallest path, so the
choice is always the same for the same files. Nothing is decided from file names.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image

PathLike = Union[str, Path]
LOSSLESS = {"PNG", "TIFF", "BMP", "GIF", "PPM", "TGA"}
# the IJG standard luminance table (JPEG spec Annex K), in natural order
_STD_LUMA = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99], np.float64)


@dataclass
class FileFacts:
    """What the keeper rule looks at, read from a file's header.

    width, height: upright pixels; format: PIL's name (``JPEG``, ``PNG``...); lossless: no lossy
    coding; quality: estimated JPEG quality 1–100 (None for other formats); bytes; mtime: seconds.
    """

    path: str
    width: int
    height: int
    format: str
    lossless: bool
    quality: Optional[float]
    bytes: int
    mtime: float

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def bytes_per_pixel(self) -> float:
        return self.bytes / max(1, self.pixels)


def jpeg_quality(tables: dict) -> Optional[float]:
    """Estimated quality (1–100) of a JPEG from its quantisation tables (``PIL.Image.quantization``:
    table id → 64 values); None without a luminance table. Inverts the IJG scaling
    ``table = (std · s + 50) // 100`` with ``s = 5000/q`` (q < 50) or ``200 - 2q``."""
    if not tables or 0 not in tables:
        return None
    t = np.asarray(list(tables[0]), np.float64)
    if t.size != 64:
        return None
    # the table is stored in zigzag order by some writers; the mean ratio is order-free
    s = float(np.mean(t) / np.mean(_STD_LUMA)) * 100.0
    q = (200.0 - s) / 2.0 if s <= 100.0 else 5000.0 / s
    return float(np.clip(q, 1.0, 100.0))


def file_facts(path: PathLike) -> FileFacts:
    """:class:`FileFacts` of an image file (pixels are not decoded)."""
    st = os.stat(path)
    with Image.open(path) as im:
        w, h = im.size
        try:
            if im.getexif().get(0x0112, 1) in (5, 6, 7, 8):
                w, h = h, w
        except Exception:  # a damaged EXIF block
            pass
        fmt = (im.format or "").upper()
        quality = jpeg_quality(getattr(im, "quantization", None) or {}) if fmt in ("JPEG", "MPO") else None
        lossless = fmt in LOSSLESS or (fmt == "WEBP" and bool(im.info.get("lossless")))
    return FileFacts(str(path), int(w), int(h), fmt, lossless, quality, int(st.st_size), float(st.st_mtime))


def _compression(f: FileFacts) -> Tuple[float, float]:
    """(quality, bytes per pixel) as the rule compares them, larger is less compressed: a JPEG's
    estimated quality (rounded) decides alone; bytes per pixel only for lossy formats without one
    (an edit that adds detail, a caption, must not win over the original by its bytes)."""
    if f.lossless:
        return 101.0, 0.0
    if f.quality is not None:
        return float(round(f.quality)), 0.0
    return 0.0, f.bytes_per_pixel


def _rank_key(f: FileFacts) -> Tuple:
    q, bpp = _compression(f)
    return (-f.pixels, not f.lossless, -q, -bpp, f.mtime, len(f.path), f.path)


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def _reason(best: FileFacts, other: FileFacts) -> str:
    """Why ``best`` ranks before ``other``: the first rule that tells them apart."""
    if best.pixels != other.pixels:
        return f"largest resolution ({best.width}×{best.height} vs {other.width}×{other.height})"
    if best.lossless != other.lossless:
        return f"same resolution, least compressed (lossless {best.format} vs {other.format})"
    bq = best.quality if best.quality is not None else None
    oq = other.quality if other.quality is not None else None
    if bq is not None and oq is not None and round(bq) != round(oq):
        return f"same resolution, least compressed (JPEG quality ≈{bq:.0f} vs ≈{oq:.0f})"
    if _compression(best) != _compression(other):
        return f"same resolution, least compressed ({best.bytes_per_pixel:.2f} vs {other.bytes_per_pixel:.2f} bytes/pixel)"
    if best.mtime != other.mtime:
        return f"same resolution and compression, oldest ({_when(best.mtime)} vs {_when(other.mtime)})"
    return "identical files; first by path"


def choose_keeper(facts: Sequence[FileFacts]) -> Tuple[int, str]:
    """The position in ``facts`` of the copy to keep, and why (against the runner-up)."""
    if not facts:
        raise ValueError("a group has at least one image")
    order = sorted(range(len(facts)), key=lambda k: _rank_key(facts[k]))
    if len(order) == 1:
        return order[0], "the only copy"
    return order[0], _reason(facts[order[0]], facts[order[1]])


def ranked(facts: Sequence[FileFacts]) -> List[int]:
    """Positions in ``facts``, the keeper first, then by the same rule."""
    return sorted(range(len(facts)), key=lambda k: _rank_key(facts[k]))
