"""The rule for a query's box, in one place: the CLI (``--box``), the Python API (``boxes=``), the
server (``box=``) and the evaluation (a dataset's ``bbx``) all crop through :func:`crop_to_box`.

A box is ``(x1, y1, x2, y2)`` in pixels of the query image as it is read (EXIF rotation applied),
x2 and y2 exclusive. Its coordinates are rounded to whole pixels (Python's ``round``, as the crop
does), and the rounded box must lie inside the image and hold at least one pixel:
``0 ≤ x1 < x2 ≤ width`` and ``0 ≤ y1 < y2 ≤ height``. Anything else is **refused** with a
one-line :class:`~retrieval.core.errors.DataError` (exit code 2 in the tools, 422 from the
server), a box partly outside included: it is never clipped, and never silently dropped.

Why refuse rather than clip: a box that leaves the image was drawn on another image, or on a
resized copy, or its numbers are in the wrong order or units; clipping it would search with a
region the user did not choose and report nothing. Rounding first leaves room for annotation
tools that write sub-pixel coordinates (a box ending at ``width + 0.4`` is the whole width).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

from PIL import Image

from retrieval.core.errors import DataError

PixelBox = Tuple[int, int, int, int]


def _text(box: Sequence[float]) -> str:
    return ",".join(f"{float(v):g}" for v in box)


def check_box(box: Sequence[float], size: Tuple[int, int], name: str = "the query") -> PixelBox:
    """``box`` (x1, y1, x2, y2 pixels) checked against an image of ``size`` = (W, H): the rounded
    box (module docstring), or a DataError naming ``name``, the box and the image size."""
    try:
        values = [float(v) for v in box]
    except (TypeError, ValueError):
        values = []
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise DataError(f"box of {name} must be four finite numbers x1,y1,x2,y2 in pixels, got {box!r}")
    w, h = int(size[0]), int(size[1])
    x1, y1, x2, y2 = (int(round(v)) for v in values)
    raw = values
    if not (raw[0] < raw[2] and raw[1] < raw[3]) or not (0 <= x1 <= w and 0 <= x2 <= w and 0 <= y1 <= h and 0 <= y2 <= h):
        raise DataError(f"box {_text(raw)} is not inside the {w}x{h} image of {name}: need "
                        f"0 ≤ x1 < x2 ≤ {w} and 0 ≤ y1 < y2 ≤ {h} (pixels)")
    if x2 <= x1 or y2 <= y1:
        raise DataError(f"box {_text(raw)} of {name} holds no whole pixel once rounded")
    return x1, y1, x2, y2


def crop_to_box(img: Image.Image, box: Optional[Sequence[float]], name: str = "the query") -> Image.Image:
    """``img`` cropped to ``box`` after :func:`check_box`; ``None`` returns ``img`` itself."""
    if box is None:
        return img
    return img.crop(check_box(box, img.size, name))
