"""The view renderer: a :class:`ToyObject` warped into one view (scale, rotation, perspective,
mirror, crop out of the frame, partial occlusion, colour change, blur, sensor noise) on a given
background, with the visible part map and the measured visibility the ground truth is read from.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageFilter

from retrieval.toy.backgrounds import _paste_shape
from retrieval.toy.geometry import _apply_h, _fill, _homography, _place, _translate, _unit_shape
from retrieval.toy.objects import ToyObject
from retrieval.toy.photos import _photo_patch
from retrieval.toy.textures import _PART_TEXTURES, _random_tex


@dataclass
class _ViewSpec:
    """Geometry and photometry of one view (sampled before rendering)."""

    area: float  # target fraction of the image covered by the whole (unoccluded) object
    rotation: float  # degrees
    perspective: float  # corner jitter, fraction of the object's size
    in_frame: float = 1.0  # target fraction of the object inside the image
    occlusion: float = 0.0  # target fraction of the in-frame object hidden by an occluder
    colour: float = 0.0  # strength of the colour change, 0..1
    blur: float = 0.0  # Gaussian blur radius, pixels
    flip: bool = False
    shrink_to_fit: bool = True  # reduce the scale until the object fits in the image


@dataclass
class _Rendered:
    """One rendered view and what was measured on it."""

    image: np.ndarray  # (S, S, 3) uint8
    labels: np.ndarray  # (S, S) uint8, visible parts
    visible: float  # visible object pixels / full projected object pixels
    in_frame: float
    occluded: float
    scale: float  # image pixels per canonical pixel (similarity part)
    background: Optional[np.ndarray] = None  # (S, S, 3) uint8: the same view without the object


def _warp(arr: np.ndarray, H: np.ndarray, out_hw: Tuple[int, int], nearest: bool) -> np.ndarray:
    """Warp ``arr`` (canonical frame) by homography ``H`` (canonical → output pixels)."""
    Minv = np.linalg.inv(H)
    Minv = Minv / Minv[2, 2]
    im = Image.fromarray(arr).transform((out_hw[1], out_hw[0]), Image.Transform.PERSPECTIVE,
                                        tuple(Minv.ravel()[:8]),
                                        Image.Resampling.NEAREST if nearest else Image.Resampling.BILINEAR)
    return np.asarray(im)


def _prescaled(obj: ToyObject, scale: float) -> Tuple[np.ndarray, np.ndarray, float]:
    """The object's rgb/labels shrunk (antialiased) when a view downsamples it a lot; returns the
    factor ``f`` (new canonical pixels per old)."""
    if scale >= 0.7:
        return obj.rgb, obj.labels, 1.0
    R = obj.size
    Rn = max(8, int(round(R * min(1.0, scale * 1.4))))
    f = Rn / R
    rgb = np.asarray(Image.fromarray(obj.rgb).resize((Rn, Rn), Image.Resampling.BOX))
    lab = np.asarray(Image.fromarray(obj.labels).resize((Rn, Rn), Image.Resampling.NEAREST))
    return rgb, lab, f


def _local_homography(obj: ToyObject, scale: float, rotation: float, perspective: float, flip: bool,
                      jitter: np.ndarray) -> np.ndarray:
    """Canonical pixels → image pixels relative to the object's centroid (placed at the origin)."""
    R = float(obj.size)
    cx, cy = obj.centroid
    corners = np.array([[0, 0], [R, 0], [R, R], [0, R]], dtype=np.float64)
    p = corners - np.array([cx, cy])
    if flip:
        p[:, 0] = -p[:, 0]
    th = math.radians(rotation)
    rot = np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
    dst = p @ rot.T * scale + jitter * perspective * scale * R
    return _homography(corners, dst)


def _photometric(img: np.ndarray, params: Tuple[float, float, float, float]) -> np.ndarray:
    """Brightness, contrast, saturation and hue rotation: (H, W, 3) float32 → same."""
    b, c, s, hue = params
    gray = img @ np.array([0.299, 0.587, 0.114], np.float32)
    out = gray[..., None] + s * (img - gray[..., None])
    if hue != 0.0:
        th = 2 * np.pi * hue
        cosA, sinA = math.cos(th), math.sin(th)
        k = 1.0 / 3.0
        sq = math.sqrt(k)
        m = np.array([
            [cosA + (1 - cosA) * k, k * (1 - cosA) - sq * sinA, k * (1 - cosA) + sq * sinA],
            [k * (1 - cosA) + sq * sinA, cosA + k * (1 - cosA), k * (1 - cosA) - sq * sinA],
            [k * (1 - cosA) - sq * sinA, k * (1 - cosA) + sq * sinA, cosA + k * (1 - cosA)],
        ], np.float32)
        out = out @ m.T
    out = (out - 0.5) * c + 0.5  # a fixed pivot: the same change for any content
    return np.clip(out * b, 0.0, 1.0).astype(np.float32)


def _finish(img: np.ndarray, photo: Tuple[float, float, float, float], blur: float, noise: np.ndarray) -> np.ndarray:
    """Colour change (``photo``), ``noise`` (S, S, 3) float32 and blur applied to ``img`` (S, S, 3)
    float32: (S, S, 3) uint8."""
    out = _photometric(img, photo)
    u8 = (np.clip(out + noise, 0, 1) * 255 + 0.5).astype(np.uint8)
    if blur > 0.05:
        u8 = np.asarray(Image.fromarray(u8).filter(ImageFilter.GaussianBlur(blur)))
    return u8


def _occluder_poly(rng: np.random.Generator, mask: np.ndarray, target: float) -> Optional[np.ndarray]:
    """A shape covering about ``target`` of the ``mask`` (H, W) bool pixels (bisection on its size)."""
    ys, xs = np.nonzero(mask)
    total = len(xs)
    if total == 0 or target <= 0:
        return None
    d = rng.normal(size=2)
    d /= np.linalg.norm(d) + 1e-12
    proj = xs * d[0] + ys * d[1]
    k = int(np.argmax(proj))
    cx, cy = xs.mean(), ys.mean()
    t = rng.uniform(0.3, 0.9) if target < 0.5 else rng.uniform(0.0, 0.4)
    c = (cx + t * (xs[k] - cx), cy + t * (ys[k] - cy))
    unit = _unit_shape(rng, str(rng.choice(["blob", "rect", "ellipse"])))
    ang = rng.uniform(0, 2 * np.pi)
    H, W = mask.shape
    lo, hi = 0.0, 2.0 * max(H, W)
    for _ in range(16):
        r = 0.5 * (lo + hi)
        cov = _fill((H, W), [_place(unit, c[0], c[1], r, ang)])
        frac = np.count_nonzero(cov & mask) / total
        if frac < target:
            lo = r
        else:
            hi = r
    return _place(unit, c[0], c[1], hi, ang)


def _render_view(obj: ToyObject, spec: _ViewSpec, size: int, bg: np.ndarray, rng: np.random.Generator,
                 photos: bool, with_background: bool = False,
                 place: Optional[Tuple[float, float]] = None, exclude: Sequence[str] = ()) -> _Rendered:
    """Render ``obj`` into a view of ``size``² pixels on the background ``bg`` (size, size, 3) float32."""
    S = size
    scale = math.sqrt(spec.area * S * S / max(obj.area_frac * obj.size ** 2, 1.0))
    jitter = rng.uniform(-1, 1, (4, 2))
    outline = obj.outline
    for _ in range(30):
        Hl = _local_homography(obj, scale, spec.rotation, spec.perspective, spec.flip, jitter)
        q = _apply_h(Hl, outline)
        ext = q.max(0) - q.min(0)
        if spec.in_frame < 1.0 or not spec.shrink_to_fit or (ext[0] < S - 3 and ext[1] < S - 3):
            break
        scale *= 0.92
    rgb_s, lab_s, f = _prescaled(obj, scale)
    Hs = Hl @ np.diag([1 / f, 1 / f, 1.0])
    # the whole object, unclipped, in a canvas around its extent (centroid at the origin)
    x0, y0 = int(math.floor(q[:, 0].min())) - 3, int(math.floor(q[:, 1].min())) - 3
    w, h = int(math.ceil(q[:, 0].max())) - x0 + 4, int(math.ceil(q[:, 1].max())) - y0 + 4
    full = _warp(lab_s, _translate(-x0, -y0) @ Hs, (h, w), nearest=True) > 0
    ys, xs = np.nonzero(full)
    full_area = float(max(len(xs), 1))
    if len(xs):
        ax0, ax1, ay0, ay1 = xs.min() + x0, xs.max() + x0, ys.min() + y0, ys.max() + y0
    else:
        ax0 = ax1 = ay0 = ay1 = 0
    if spec.in_frame >= 1.0:
        if place is not None:
            dx, dy = place
        else:
            lox, hix = -S / 2 - ax0, S / 2 - 1 - ax1
            loy, hiy = -S / 2 - ay0, S / 2 - 1 - ay1
            dx = rng.uniform(lox, hix) if hix >= lox else 0.5 * (lox + hix)
            dy = rng.uniform(loy, hiy) if hiy >= loy else 0.5 * (loy + hiy)
    else:
        # slide the object out of the frame along a random direction until ``in_frame`` remains
        ii = np.zeros((h + 1, w + 1), np.int64)
        ii[1:, 1:] = np.cumsum(np.cumsum(full, 0), 1)

        def inside(dx: float, dy: float) -> float:
            c0 = int(round(min(max(-S / 2 - dx - x0, 0), w)))
            c1 = int(round(min(max(S / 2 - dx - x0, 0), w)))
            r0 = int(round(min(max(-S / 2 - dy - y0, 0), h)))
            r1 = int(round(min(max(S / 2 - dy - y0, 0), h)))
            return (ii[r1, c1] - ii[r0, c1] - ii[r1, c0] + ii[r0, c0]) / full_area

        a = rng.uniform(0, 2 * np.pi)
        d = (math.cos(a), math.sin(a))
        lo, hi = 0.0, float(S + w + h)
        for _ in range(24):
            mid = 0.5 * (lo + hi)
            if inside(mid * d[0], mid * d[1]) > spec.in_frame:
                lo = mid
            else:
                hi = mid
        dx, dy = lo * d[0], lo * d[1]
    H = _translate(S / 2 + dx, S / 2 + dy) @ Hs
    prem = _warp(rgb_s, H, (S, S), nearest=False).astype(np.float32) / 255.0
    alpha = _warp(((lab_s > 0) * 255).astype(np.uint8), H, (S, S), nearest=False).astype(np.float32) / 255.0
    labels = _warp(lab_s, H, (S, S), nearest=True).copy()
    img = prem + bg * (1.0 - alpha[..., None])
    back = bg.copy() if with_background else None
    in_frame_px = int(np.count_nonzero(labels))
    occluded = 0.0
    if spec.occlusion > 0 and in_frame_px > 0:
        poly = _occluder_poly(rng, labels > 0, spec.occlusion)
        if poly is not None:
            if photos:
                patch = _photo_patch(rng, (S, S), exclude)
                fill: Any = lambda y0, y1, x0, x1: patch[y0:y1, x0:x1]
            else:
                fill = _random_tex(rng, str(rng.choice(_PART_TEXTURES)), rng.uniform(0, 1),
                                   muted=rng.random() < 0.5, period=(0.12, 0.3))
            cov = _paste_shape(img, poly, fill)
            if back is not None:
                _paste_shape(back, poly, fill)
            hidden = cov >= 0.5
            occluded = float(np.count_nonzero(hidden & (labels > 0))) / in_frame_px
            labels[hidden] = 0
    strength = spec.colour
    photo = (1.0 + rng.uniform(-0.2, 0.2) * strength, 1.0 + rng.uniform(-0.25, 0.25) * strength,
             1.0 + rng.uniform(-0.3, 0.3) * strength, rng.uniform(-0.04, 0.04) * strength)
    noise = rng.normal(0, 0.008, img.shape).astype(np.float32)
    out = _finish(img, photo, spec.blur, noise)
    back_u8 = _finish(back, photo, spec.blur, noise) if back is not None else None
    vis_px = int(np.count_nonzero(labels))
    return _Rendered(out, labels, min(vis_px / full_area, 1.0), min(in_frame_px / full_area, 1.0),
                     occluded, scale, back_u8)
