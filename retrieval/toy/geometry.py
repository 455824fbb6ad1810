"""Plane geometry of the toy generators: unit shapes, placing them, rasterising them (hard or
anti-aliased), and 3×3 homographies.

Points and polygons are ``(n, 2)`` float64 arrays of ``(x, y)`` pixel coordinates; masks are
``(H, W)`` bool.
"""
from __future__ import annotations

import math
from typing import Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw

#: The shapes :func:`_unit_shape` draws (clutter, occluders, decoys).
_SHAPES = ("ellipse", "rect", "triangle", "blob", "star")


def _unit_shape(rng: np.random.Generator, kind: str) -> np.ndarray:
    """A closed polygon around the origin with radius about 1: (n, 2) float64."""
    if kind == "ellipse":
        t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        ry = rng.uniform(0.5, 1.0)
        return np.stack([np.cos(t), ry * np.sin(t)], 1)
    if kind == "rect":
        ry = rng.uniform(0.4, 1.0)
        return np.array([[-1, -ry], [1, -ry], [1, ry], [-1, ry]], dtype=np.float64)
    if kind == "triangle":
        a = np.sort(rng.uniform(0, 2 * np.pi, 3) + np.array([0, 2.1, 4.2])) % (2 * np.pi)
        a = np.sort(a)
        return np.stack([np.cos(a), np.sin(a)], 1)
    if kind == "star":
        n = int(rng.integers(4, 8))
        t = np.linspace(0, 2 * np.pi, 2 * n, endpoint=False)
        r = np.where(np.arange(2 * n) % 2 == 0, 1.0, rng.uniform(0.4, 0.65))
        return np.stack([r * np.cos(t), r * np.sin(t)], 1)
    # blob: a smooth random radial polygon (star-shaped about the origin)
    t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    r = np.ones_like(t)
    for k in (2, 3, 4):
        r += rng.uniform(0.0, 0.16) * np.cos(k * t + rng.uniform(0, 2 * np.pi))
    return np.stack([r * np.cos(t), r * np.sin(t)], 1)


def _place(unit: np.ndarray, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    """``unit`` (n, 2) scaled by ``r``, rotated by ``angle`` (radians) and moved to ``(cx, cy)``: (n, 2) float64."""
    c, s = math.cos(angle), math.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    return unit @ rot.T * r + np.array([cx, cy])


def _ellipse_poly(cx: float, cy: float, rx: float, ry: float, angle: float = 0.0) -> np.ndarray:
    """An ellipse (64 points) with radii ``rx``, ``ry`` and rotation ``angle`` (radians): (64, 2) float64."""
    t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    return _place(np.stack([np.cos(t), (ry / rx) * np.sin(t)], 1), cx, cy, rx, angle)


def _rect_poly(cx: float, cy: float, w: float, h: float, angle: float = 0.0) -> np.ndarray:
    """A ``w`` × ``h`` rectangle centred on ``(cx, cy)``, rotated by ``angle`` (radians): (4, 2) float64."""
    unit = np.array([[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]]) * np.array([w, h])
    return _place(unit, cx, cy, 1.0, angle)


def _fill(shape_hw: Tuple[int, int], polys: Sequence[np.ndarray]) -> np.ndarray:
    """Rasterise the union of polygons: (H, W) bool."""
    h, w = shape_hw
    im = Image.new("L", (w, h), 0)
    d = ImageDraw.Draw(im)
    for p in polys:
        d.polygon([tuple(map(float, q)) for q in p], fill=255)
    return np.asarray(im) > 127


def _soft_alpha(poly: np.ndarray, shape_hw: Tuple[int, int]) -> Tuple[np.ndarray, Tuple[int, int, int, int]]:
    """Anti-aliased coverage of ``poly`` (2× supersampled) inside its clipped bounding box.

    Returns ``(alpha (h, w) float32 in [0, 1], (y0, y1, x0, x1))``; an empty box when off-image.
    """
    H, W = shape_hw
    x0 = max(int(math.floor(poly[:, 0].min())) - 1, 0)
    y0 = max(int(math.floor(poly[:, 1].min())) - 1, 0)
    x1 = min(int(math.ceil(poly[:, 0].max())) + 2, W)
    y1 = min(int(math.ceil(poly[:, 1].max())) + 2, H)
    if x1 <= x0 or y1 <= y0:
        return np.zeros((0, 0), np.float32), (0, 0, 0, 0)
    im = Image.new("L", (2 * (x1 - x0), 2 * (y1 - y0)), 0)
    pts = (poly - np.array([x0, y0])) * 2.0
    ImageDraw.Draw(im).polygon([tuple(map(float, q)) for q in pts], fill=255)
    im = im.resize((x1 - x0, y1 - y0), Image.Resampling.BOX)
    return np.asarray(im, dtype=np.float32) / 255.0, (y0, y1, x0, x1)


def _homography(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """3×3 homography mapping the 4 points ``src`` (4, 2) onto ``dst`` (4, 2)."""
    a = np.zeros((8, 8))
    b = np.zeros(8)
    for i, ((x, y), (u, v)) in enumerate(zip(src, dst)):
        a[2 * i] = [x, y, 1, 0, 0, 0, -u * x, -u * y]
        a[2 * i + 1] = [0, 0, 0, x, y, 1, -v * x, -v * y]
        b[2 * i], b[2 * i + 1] = u, v
    return np.append(np.linalg.solve(a, b), 1.0).reshape(3, 3)


def _apply_h(H: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Apply a homography to points (n, 2) → (n, 2)."""
    q = pts @ H[:, :2].T + H[:, 2]
    return q[:, :2] / q[:, 2:3]


def _translate(tx: float, ty: float) -> np.ndarray:
    """The 3×3 homography of a translation by ``(tx, ty)``."""
    return np.array([[1.0, 0, tx], [0, 1.0, ty], [0, 0, 1.0]])
