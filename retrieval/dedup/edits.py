"""Generated edits of a photo: the kinds of copy a duplicate finder must recognise.

The same edits serve ``--calibrate`` (the threshold of each tier is set on them) and the tests and
the benchmark (their truth). Every edit is a pure function of the image and a seeded generator,
so a run is reproducible.

Kinds (:data:`EDIT_KINDS`) and what each does to a photo (a PIL RGB image):

* ``copy``: nothing (the file is copied byte for byte by :func:`write_edit`);
* ``resize``: long side scaled by 0.35–0.75 (Lanczos);
* ``jpeg``: re-compressed at quality 30–90 (the quality is drawn);
* ``crop``: a border cut away so that 5–30 % of the area is lost (the fraction is drawn; the
  crop window placed at random);
* ``tone``: brightness × 0.7–1.3 and contrast × 0.7–1.3;
* ``rotate``: a small rotation (±2–6°), cropped to the largest upright rectangle inside it;
* ``text``: a caption band of text drawn across the picture (a watermark / date stamp).

``near`` edits are all of these with crops up to :data:`NEAR_CROP` of the area; a crop beyond it is
counted as ``similar`` truth by the tests (a close-up is not the same photo to everyone).
"""
from __future__ import annotations

import io
import math
import shutil
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple, Union

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFont

PathLike = Union[str, Path]
#: The kinds of edit, in the order tables list them.
EDIT_KINDS: Tuple[str, ...] = ("copy", "resize", "jpeg", "crop", "tone", "rotate", "text")
#: Largest share of the area a crop may lose and still count as the same photo (``near``).
NEAR_CROP = 0.20


def _uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def resize(img: Image.Image, rng: np.random.Generator, scale: Optional[float] = None) -> Image.Image:
    """Scaled by ``scale`` (drawn in 0.35–0.75)."""
    s = scale if scale is not None else _uniform(rng, 0.35, 0.75)
    w, h = img.size
    return img.resize((max(8, round(w * s)), max(8, round(h * s))), Image.LANCZOS)


def jpeg(img: Image.Image, rng: np.random.Generator, quality: Optional[int] = None) -> Image.Image:
    """Re-compressed as JPEG at ``quality`` (drawn in 30–90), decoded again."""
    q = int(quality if quality is not None else rng.integers(30, 91))
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=q)
    buf.seek(0)
    out = Image.open(buf)
    out.load()
    out.info["gemseg_quality"] = q
    return out.convert("RGB")


def crop(img: Image.Image, rng: np.random.Generator, lost: Optional[float] = None) -> Image.Image:
    """A window keeping ``1 - lost`` of the area (``lost`` drawn in 0.05–0.30), at a random place,
    with an aspect ratio within 15 % of the original's."""
    f = lost if lost is not None else _uniform(rng, 0.05, 0.30)
    w, h = img.size
    keep = 1.0 - f
    a = math.sqrt(keep) * _uniform(rng, 0.93, 1.07)  # share of the width kept
    a = min(1.0, max(keep, a))
    b = keep / a  # share of the height kept
    cw, ch = max(8, round(w * a)), max(8, round(h * b))
    x0 = int(rng.integers(0, w - cw + 1))
    y0 = int(rng.integers(0, h - ch + 1))
    return img.crop((x0, y0, x0 + cw, y0 + ch))


def tone(img: Image.Image, rng: np.random.Generator, brightness: Optional[float] = None,
         contrast: Optional[float] = None) -> Image.Image:
    """Brightness and contrast multiplied (each drawn in 0.7–1.3)."""
    b = brightness if brightness is not None else _uniform(rng, 0.7, 1.3)
    c = contrast if contrast is not None else _uniform(rng, 0.7, 1.3)
    return ImageEnhance.Contrast(ImageEnhance.Brightness(img).enhance(b)).enhance(c)


def rotate(img: Image.Image, rng: np.random.Generator, degrees: Optional[float] = None) -> Image.Image:
    """Rotated by ``degrees`` (±2–6° drawn) and cropped to the largest upright rectangle inside."""
    d = degrees if degrees is not None else _uniform(rng, 2.0, 6.0) * (1 if rng.random() < 0.5 else -1)
    w, h = img.size
    t = math.radians(abs(d))
    # the largest axis-aligned rectangle of the same aspect inside the rotated w×h frame
    k = min(w / (w * math.cos(t) + h * math.sin(t)), h / (w * math.sin(t) + h * math.cos(t)))
    out = img.rotate(d, resample=Image.BICUBIC, expand=False)
    cw, ch = int(w * k), int(h * k)
    x0, y0 = (w - cw) // 2, (h - ch) // 2
    return out.crop((x0, y0, x0 + cw, y0 + ch))


def text(img: Image.Image, rng: np.random.Generator, caption: Optional[str] = None) -> Image.Image:
    """A caption band (a date stamp, a watermark) drawn across the lower part of the image, about
    a tenth of its height."""
    out = img.copy()
    w, h = out.size
    words = ["holiday", "2019-07-14", "© studio", "copy", "DRAFT", "family", "summer"]
    caption = caption or " ".join(words[int(i)] for i in rng.integers(0, len(words), 2))
    size = max(8, h // 10)
    try:
        font = ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    draw = ImageDraw.Draw(out)
    y = int(h * _uniform(rng, 0.7, 0.85))
    x = int(w * _uniform(rng, 0.03, 0.2))
    colour = (255, 255, 255) if rng.random() < 0.5 else (255, 220, 0)
    draw.text((x, y), caption, fill=colour, font=font, stroke_width=max(1, size // 12), stroke_fill=(0, 0, 0))
    return out


#: kind → the edit (``copy`` is the identity here; :func:`write_edit` copies the file's bytes).
EDITS: Dict[str, Callable[..., Image.Image]] = {
    "copy": lambda img, rng: img.copy(), "resize": resize, "jpeg": jpeg, "crop": crop,
    "tone": tone, "rotate": rotate, "text": text,
}


def apply_edit(img: Image.Image, kind: str, rng: np.random.Generator, **params: float) -> Image.Image:
    """``img`` (RGB) edited by ``kind`` (one of :data:`EDIT_KINDS`) with ``rng``; ``params`` fix
    the drawn values (``quality=`` for jpeg, ``lost=`` for crop, ``scale=``, ``degrees=``,
    ``brightness=``/``contrast=``)."""
    if kind not in EDITS:
        raise ValueError(f"unknown edit '{kind}'; choose from {', '.join(EDIT_KINDS)}")
    return EDITS[kind](img.convert("RGB"), rng, **params)


def write_edit(src: PathLike, dst: PathLike, kind: str, rng: np.random.Generator, **params: float) -> Path:
    """Write an edited copy of the image file ``src`` to ``dst``: ``copy`` copies the bytes; the
    ``jpeg`` edit writes a JPEG at its quality; the others write a JPEG at quality 95 (``dst``'s
    suffix decides the format when it is ``.png``). Returns ``dst``."""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    if kind == "copy":
        shutil.copyfile(src, dst)
        return dst
    with Image.open(src) as im:
        img = im.convert("RGB")
    if kind == "jpeg":
        q = int(params.get("quality") or rng.integers(30, 91))
        img.save(dst, "JPEG", quality=q)
        return dst
    out = apply_edit(img, kind, rng, **params)
    if dst.suffix.lower() == ".png":
        out.save(dst, "PNG")
    else:
        out.save(dst, "JPEG", quality=95)
    return dst


def edit_plan(n_images: int, kinds: Tuple[str, ...] = EDIT_KINDS, seed: int = 0) -> List[Tuple[int, str, int]]:
    """``(image number, kind, seed of its generator)`` for every image × kind: one edit of each kind
    per image, each with its own seed (derived from ``seed``)."""
    ss = np.random.SeedSequence(seed)
    seeds = ss.generate_state(n_images * len(kinds))
    return [(i, k, int(seeds[i * len(kinds) + j])) for i in range(n_images) for j, k in enumerate(kinds)]
