"""Backgrounds: smooth noise, textures or photo crops, cluttered with textured shapes (``busy``);
and :func:`_paste_shape`, the compositing of a shape that clutter, occluders and decoys share.

Images are (H, W, 3) float32 RGB in [0, 1].
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from PIL import Image

from retrieval.toy.geometry import _SHAPES, _place, _soft_alpha, _unit_shape
from retrieval.toy.photos import _photo_patch
from retrieval.toy.textures import _PART_TEXTURES, _hsv, _random_tex, _render_tex, _Tex


def _smooth_noise(rng: np.random.Generator, size: int, cells: int, hue: float) -> np.ndarray:
    """A smooth colour field: ``cells``² random colours about ``hue``, bicubic-upsampled to
    (size, size, 3) float32 in [0, 1]."""
    cols = np.stack([_hsv(hue + rng.uniform(-0.12, 0.12), rng.uniform(0.1, 0.6), rng.uniform(0.25, 0.9))
                     for _ in range(cells * cells)]).reshape(cells, cells, 3)
    im = Image.fromarray((cols * 255).astype(np.uint8)).resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(im, np.float32) / 255.0


def _paste_shape(img: np.ndarray, poly: np.ndarray, fill: Any, alpha_scale: float = 1.0) -> np.ndarray:
    """Composite a polygon onto ``img`` (H, W, 3) float32 in place; ``fill`` is a ``_Tex`` or a
    callable ``(y0, y1, x0, x1) -> (h, w, 3)``. Returns the coverage (H, W) float32."""
    H, W = img.shape[:2]
    cov = np.zeros((H, W), np.float32)
    a, (y0, y1, x0, x1) = _soft_alpha(poly, (H, W))
    if a.size == 0:
        return cov
    a = a * alpha_scale
    if isinstance(fill, _Tex):
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        side = float(max(poly[:, 0].max() - poly[:, 0].min(), poly[:, 1].max() - poly[:, 1].min(), 4.0))
        tex = _render_tex(fill, yy - poly[:, 1].min(), xx - poly[:, 0].min(), side)
    else:
        tex = fill(y0, y1, x0, x1)
    img[y0:y1, x0:x1] = img[y0:y1, x0:x1] * (1 - a[..., None]) + tex * a[..., None]
    cov[y0:y1, x0:x1] = a
    return cov


def _background(rng: np.random.Generator, size: int, busy: float, photos: bool,
                exclude: Sequence[str] = ()) -> np.ndarray:
    """A background: (size, size, 3) float32 in [0, 1]; ``busy`` in [0, 1] sets the clutter."""
    if photos:
        img = _photo_patch(rng, (size, size), exclude)
    else:
        hue = rng.uniform(0, 1)
        kind = int(rng.integers(4))
        if kind == 0:
            img = _smooth_noise(rng, size, int(rng.integers(2, 7)), hue)
        elif kind == 1:
            yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
            img = _render_tex(_random_tex(rng, "gradient", hue, muted=True), yy, xx, float(size))
        elif kind == 2:
            yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
            tex = _random_tex(rng, str(rng.choice(_PART_TEXTURES)), hue, muted=True, period=(0.04, 0.12))
            base = _render_tex(tex, yy, xx, float(size))
            img = 0.5 * base + 0.5 * _smooth_noise(rng, size, 3, hue)
        else:  # plasma: several octaves of smooth noise
            img = sum(_smooth_noise(rng, size, c, hue) * wgt for c, wgt in ((2, 0.5), (5, 0.3), (11, 0.2)))
        img = np.clip(img + rng.normal(0, 0.015, img.shape).astype(np.float32), 0, 1)
    lo = int(round(busy * 8))
    hi = 3 + int(round(busy * 12))
    n = int(rng.integers(lo, hi + 1))
    for _ in range(n):
        r = size * rng.uniform(0.05, 0.22 - 0.08 * busy)
        poly = _place(_unit_shape(rng, str(rng.choice(_SHAPES))), rng.uniform(0, size), rng.uniform(0, size),
                      r, rng.uniform(0, 2 * np.pi))
        if photos:
            _paste_shape(img, poly, lambda y0, y1, x0, x1: _photo_patch(rng, (y1 - y0, x1 - x0), exclude))
        else:
            tex = _random_tex(rng, str(rng.choice(_PART_TEXTURES)), rng.uniform(0, 1), muted=rng.random() < 0.5,
                              period=(0.15, 0.35))
            _paste_shape(img, poly, tex)
    return img.astype(np.float32)
