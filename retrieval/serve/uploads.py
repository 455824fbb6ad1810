"""What a client sends: an uploaded image, decoded safely, and a box on it.

:func:`decode_upload` reads only the bytes it is given (never a path), refuses an image whose
header announces more than ``max_pixels`` pixels before decoding it (decompression bombs), and
decodes the rest exactly as :func:`retrieval.core.images.load_image` decodes a file (EXIF rotation,
any mode → 8-bit RGB), so an upload and the same file on disk give the same pixels.
"""
from __future__ import annotations

import io
import math
import re
import warnings
from typing import Optional, Tuple

from PIL import Image

from retrieval.core.errors import DataError, ImageError
from retrieval.core.images import load_image
from retrieval.search.query_box import check_box
from retrieval.serve.errors import BadParameterError

Box = Tuple[float, float, float, float]


def upload_name(filename: Optional[str]) -> str:
    """A safe display name for an upload: its base name, printable, at most 80 characters."""
    base = re.split(r"[\\/]", filename or "")[-1]
    base = "".join(c for c in base if c.isprintable())[:80]
    return base or "upload"


def decode_upload(data: bytes, name: str, max_pixels: int) -> Image.Image:
    """The uploaded bytes ``data`` as an upright RGB image.

    Raises:
        ImageError: empty, not an image, corrupt or truncated, or more than ``max_pixels`` pixels
            (checked from the header, before any pixel is decoded).
    """
    if not data:
        raise ImageError(name, "empty upload")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                w, h = im.size
    except Image.DecompressionBombError:
        raise ImageError(name, "image too large (decompression bomb guard)") from None
    except Exception:  # noqa: BLE001 - anything Pillow cannot identify is not an image
        raise ImageError(name, "not an image (cannot identify format)") from None
    if w * h > max_pixels:
        raise ImageError(name, f"image too large: {w}x{h} = {w * h} pixels exceeds the server's limit of "
                               f"{max_pixels} (decompression bomb guard)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return load_image(name, data=data)


def parse_box(text: Optional[str], size: Tuple[int, int]) -> Optional[Box]:
    """``"x1,y1,x2,y2"`` in pixels of an image of ``size`` = (W, H) → the box, or ``None`` for no
    text. The box is checked by the query path's one rule (:mod:`retrieval.search.query_box`:
    inside the image once rounded, at least one pixel), here before any work.

    Raises:
        BadParameterError: not four numbers, or a box outside the image or empty.
    """
    if text is None or not text.strip():
        return None
    parts = text.split(",")
    try:
        box = tuple(float(v) for v in parts)
    except ValueError:
        box = ()
    if len(box) != 4 or not all(math.isfinite(v) for v in box):
        raise BadParameterError(f"box must be four numbers x1,y1,x2,y2 in pixels, got '{text[:60]}'")
    try:
        check_box(box, size, "the query")
    except DataError as e:
        raise BadParameterError(str(e)) from None
    return box
