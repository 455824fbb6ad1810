"""Colours and procedural textures: the patterns painted on object parts, backgrounds, clutter and
occluders.

A texture (:class:`_Tex`) is sampled once from a generator (:func:`_random_tex`) and rendered on
any pixel grid (:func:`_render_tex`: (..., 3) float32 RGB in [0, 1]).
"""
from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass
from typing import Tuple

import numpy as np

#: The patterns of object parts (and of clutter and occluders).
_PART_TEXTURES = ("stripes", "checks", "dots", "gradient", "rings", "waves", "zigzag")


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    """An HSV colour (hue wraps, saturation and value clipped to [0, 1]) as RGB: (3,) float32."""
    return np.array(colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0)),
                    dtype=np.float32)


@dataclass(frozen=True)
class _Tex:
    """A procedural texture: pattern ``kind`` blending colours ``c0`` → ``c1`` (RGB in [0, 1])."""

    kind: str
    c0: Tuple[float, float, float]
    c1: Tuple[float, float, float]
    period: float  # fraction of the reference side
    angle: float  # radians
    phase: float
    cx: float = 0.5
    cy: float = 0.5


def _random_tex(rng: np.random.Generator, kind: str, hue: float, muted: bool = False,
                period: Tuple[float, float] = (0.09, 0.17)) -> _Tex:
    """A texture of pattern ``kind`` about ``hue``: vivid (or ``muted``) colours, ``period`` drawn from the
    given range (fraction of the reference side), random angle, phase and centre."""
    if muted:
        c0 = _hsv(hue, rng.uniform(0.1, 0.55), rng.uniform(0.3, 0.85))
        c1 = _hsv(hue + rng.uniform(-0.15, 0.15), rng.uniform(0.1, 0.55), rng.uniform(0.3, 0.85))
    else:
        c0 = _hsv(hue, rng.uniform(0.6, 1.0), rng.uniform(0.65, 1.0))
        if rng.random() < 0.5:
            c1 = _hsv(hue + rng.uniform(-0.08, 0.08), rng.uniform(0.4, 1.0), rng.uniform(0.05, 0.3))
        else:
            c1 = _hsv(hue + 0.5, rng.uniform(0.0, 0.35), rng.uniform(0.85, 1.0))
    return _Tex(kind, tuple(c0), tuple(c1), float(rng.uniform(*period)), float(rng.uniform(0, np.pi)),
                float(rng.uniform(0, 1)), float(rng.uniform(0.2, 0.8)), float(rng.uniform(0.2, 0.8)))


def _render_tex(tex: _Tex, y: np.ndarray, x: np.ndarray, side: float) -> np.ndarray:
    """Texture at pixel coordinates ``y, x`` (broadcastable arrays): (..., 3) float32 in [0, 1]."""
    p = max(tex.period * side, 3.0)
    ca, sa = math.cos(tex.angle), math.sin(tex.angle)
    u = (x * ca + y * sa) / p + tex.phase
    v = (-x * sa + y * ca) / p + tex.phase
    k = tex.kind
    if k == "gradient":
        proj = np.broadcast_to(x * ca + y * sa, np.broadcast(x, y).shape)
        lo = float(proj.min()) if proj.size else 0.0
        t = (proj - lo) / max(float(proj.max()) - lo if proj.size else 1.0, 1e-6)  # across the region
    else:
        if k == "stripes":
            s = np.sin(2 * np.pi * u)
        elif k == "checks":
            s = 2.0 * np.sin(2 * np.pi * u) * np.sin(2 * np.pi * v)
        elif k == "dots":
            fu = u - np.floor(u) - 0.5
            fv = v - np.floor(v) - 0.5
            s = (0.3 - np.sqrt(fu * fu + fv * fv)) * 5.0
        elif k == "rings":
            d = np.sqrt((x - tex.cx * side) ** 2 + (y - tex.cy * side) ** 2) / p
            s = np.sin(2 * np.pi * (d + tex.phase))
        elif k == "waves":
            s = np.sin(2 * np.pi * (u + 0.3 * np.sin(np.pi * v)))
        elif k == "zigzag":
            tri = np.abs(v * 0.5 - np.floor(v * 0.5) - 0.5)
            s = np.sin(2 * np.pi * (u + 1.2 * tri))
        else:  # "flat" and anything unknown
            s = np.zeros(np.broadcast(u, v).shape)
        t = np.clip(0.5 + 2.0 * s, 0.0, 1.0)
    t = np.asarray(t, dtype=np.float32)[..., None]
    c0 = np.asarray(tex.c0, np.float32)
    c1 = np.asarray(tex.c1, np.float32)
    return c0 * (1.0 - t) + c1 * t
