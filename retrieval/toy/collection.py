"""Generated toy data: an instance-retrieval collection and co-segmentation sets, with known truth.

Two generators share one renderer (numpy + PIL only; no torch):

* :func:`make_retrieval_collection` — N objects, each seen in several views (scale, rotation,
  perspective, crop, colour and blur changes, partial occlusion) pasted on varied backgrounds, plus
  distractor images. Ground truth in the layout of the revisited Oxford/Paris protocol: one query per
  object (its canonical, mild view 0) and, per query, ``easy`` / ``hard`` / ``junk`` lists of
  database indices. Every image comes with its object mask and its part label map.
* :func:`make_coseg_sets` — co-segmentation sets in the iCoseg layout: in each set one object made of
  ``n_parts`` parts with distinct textures, at varied positions and scales on varied backgrounds,
  with object masks and part label maps.

``source="synthetic"`` draws objects made of textured parts (stripes, checks, dots, gradients,
rings, waves, zigzags) on textured/noise/gradient backgrounds. ``source="photos"`` cuts objects out
of the photographs that scikit-image ships (Chelsea the cat's face, the coffee cup, the rocket, the
astronaut, the motorcycle, ...; hand-drawn ellipse/polygon masks) and pastes them onto real textures
(brick, grass, gravel) and crops of other photos, so the hits of a demo look like photos.

Everything is deterministic from ``seed``: each object, view and distractor draws from its own
``numpy.random.default_rng([seed, stream, i, j])``, so adding distractors never changes the views.

Layout written by :func:`make_retrieval_collection`::

    root/queries/<object>_v0.jpg           one query per object (JPEG, quality 92)
    root/images/db####_<object>_v<j>.jpg   database: the other views and the distractors
                                           (``db####_distractor###.jpg``); sorted name = db index
    root/masks/<stem>.png                  object mask, 0/255, image size (all 0 for distractors)
    root/parts/<stem>.png                  part labels, 0 = background, 1..P = part of the object
    root/ground_truth.json                 read back by :meth:`ToyCollection.load`

Ground-truth rule for a database view of the query's object (measured on the rendered view):
``junk`` if less than 30 % of the object is visible (occluded or cropped away); otherwise ``hard``
if the scale differs from the query's by more than ×1.6 (or less than ×0.65), the rotation exceeds
30°, the perspective corner jitter exceeds 0.15 of the object size, or less than 75 % of the object
is visible; otherwise ``easy``. Distractors and other objects' views are never positives.
"""
from __future__ import annotations

import colorsys
import json
import math
import shutil
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from retrieval.core.errors import DataError
from retrieval.core.io import atomic_path

PathLike = Union[str, Path]

__all__ = [
    "ToyCollection",
    "ToyObject",
    "make_retrieval_collection",
    "make_coseg_sets",
    "export_class_folders",
    "photo_object_names",
    "JPEG_QUALITY",
]

JPEG_QUALITY = 92
GT_FILE = "ground_truth.json"
COSEG_FILE = "coseg.json"
_GT_VERSION = 1

# Stream ids for the per-item random generators.
_S_OBJECT, _S_VIEW, _S_DISTRACTOR, _S_DECOY, _S_COSEG, _S_COSEG_IMG = 1, 2, 3, 4, 5, 6

# Ground-truth thresholds (see the module docstring).
JUNK_VISIBLE = 0.30
HARD_VISIBLE = 0.75
HARD_SCALE = (0.65, 1.6)
HARD_ROTATION = 30.0
HARD_PERSPECTIVE = 0.15

_PART_TEXTURES = ("stripes", "checks", "dots", "gradient", "rings", "waves", "zigzag")
_SHAPES = ("ellipse", "rect", "triangle", "blob", "star")


# ----------------------------------------------------------------------------------------------
# Small geometry and colour helpers
# ----------------------------------------------------------------------------------------------

def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0)),
                    dtype=np.float32)


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
    c, s = math.cos(angle), math.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    return unit @ rot.T * r + np.array([cx, cy])


def _ellipse_poly(cx: float, cy: float, rx: float, ry: float, angle: float = 0.0) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    return _place(np.stack([np.cos(t), (ry / rx) * np.sin(t)], 1), cx, cy, rx, angle)


def _rect_poly(cx: float, cy: float, w: float, h: float, angle: float = 0.0) -> np.ndarray:
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
    return np.array([[1.0, 0, tx], [0, 1.0, ty], [0, 0, 1.0]])


# ----------------------------------------------------------------------------------------------
# Textures
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Tex:
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


# ----------------------------------------------------------------------------------------------
# Objects
# ----------------------------------------------------------------------------------------------

@dataclass
class ToyObject:
    """An object in its canonical frame, ready to be warped into views.

    ``rgb``: (R, R, 3) uint8, premultiplied by the (binary) object mask, 0 outside;
    ``labels``: (R, R) uint8 part map, 0 = background, 1..P = part id;
    ``part_names``: P names; ``name``: the object's name.
    """

    name: str
    rgb: np.ndarray
    labels: np.ndarray
    part_names: List[str]
    _outline: Optional[np.ndarray] = field(default=None, init=False, repr=False, compare=False)

    @property
    def size(self) -> int:
        return int(self.labels.shape[0])

    @property
    def area_frac(self) -> float:
        """Fraction of the canonical square covered by the object."""
        return float((self.labels > 0).mean())

    @property
    def centroid(self) -> Tuple[float, float]:
        ys, xs = np.nonzero(self.labels)
        return float(xs.mean()) + 0.5, float(ys.mean()) + 0.5

    @property
    def outline(self) -> np.ndarray:
        """Corners of the object's boundary pixels, canonical pixel coordinates: (n, 2) float64."""
        if self._outline is None:
            m = np.pad(self.labels > 0, 1)
            inner = m[1:-1, 1:-1]
            edge = inner & ~(m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:])
            ys, xs = np.nonzero(edge)
            pts = np.stack([xs, ys], 1).astype(np.float64)
            pts = np.concatenate([pts + np.array(o) for o in ((0, 0), (1, 0), (0, 1), (1, 1))])
            self._outline = pts
        return self._outline


_CREATURE_PARTS = ("body", "head", "legs", "tail", "ears", "fin")


def _sample_creature(rng: np.random.Generator, n_parts: int, varied: bool) -> Dict[str, Any]:
    """Parameters of an object made of ``n_parts`` textured parts (unit-square coordinates)."""
    side = 1 if rng.random() < 0.5 else -1
    p: Dict[str, Any] = {"n_parts": n_parts, "side": side}
    p["body"] = dict(cx=0.5 + rng.uniform(-0.03, 0.03), cy=0.52 + rng.uniform(-0.03, 0.03),
                     rx=rng.uniform(0.25, 0.33), ry=rng.uniform(0.15, 0.21),
                     ang=math.radians(rng.uniform(-12, 12)),
                     kind=(rng.choice(["ellipse", "rect", "blob"]) if varied else "ellipse"),
                     unit=_unit_shape(rng, "blob"))
    p["head"] = dict(fx=rng.uniform(0.75, 0.95), fy=rng.uniform(0.7, 1.0), r=rng.uniform(0.1, 0.15),
                     e=rng.uniform(0.85, 1.15),
                     kind=(rng.choice(["ellipse", "rect", "blob"]) if varied else "ellipse"),
                     unit=_unit_shape(rng, "blob"))
    nl = int(rng.integers(2, 5))
    p["legs"] = dict(n=nl, length=rng.uniform(0.15, 0.22), width=rng.uniform(0.045, 0.07),
                     splay=[math.radians(a) for a in rng.uniform(-12, 12, nl)])
    p["tail"] = dict(ang=math.radians(rng.uniform(20, 60)), length=rng.uniform(0.12, 0.18),
                     width=rng.uniform(0.03, 0.05))
    p["ears"] = dict(h=rng.uniform(0.06, 0.1), w=rng.uniform(0.04, 0.07))
    p["fin"] = dict(h=rng.uniform(0.07, 0.12), w=rng.uniform(0.08, 0.14), dx=rng.uniform(-0.1, 0.1))
    p["spots"] = [dict(fx=rng.uniform(-0.5, 0.5), fy=rng.uniform(-0.4, 0.4), r=rng.uniform(0.05, 0.09))
                  for _ in range(max(0, n_parts - len(_CREATURE_PARTS)))]
    p["layout_angle"] = math.radians(rng.uniform(-25, 25)) if varied else 0.0
    kinds = list(rng.permutation(_PART_TEXTURES))
    hue0 = rng.uniform(0, 1)
    p["tex"] = [_random_tex(rng, kinds[i % len(kinds)],
                            hue0 + i / max(n_parts, 1) + rng.uniform(-0.04, 0.04))
                for i in range(n_parts)]
    return p


def _jitter_creature(p: Dict[str, Any], rng: np.random.Generator, amount: float) -> Dict[str, Any]:
    """A class-level variant: the same parts and textures with slightly changed geometry."""
    q = dict(p)
    b = dict(p["body"])
    b["rx"] *= 1 + rng.uniform(-amount, amount)
    b["ry"] *= 1 + rng.uniform(-amount, amount)
    b["ang"] += math.radians(rng.uniform(-8, 8)) * amount / 0.1
    q["body"] = b
    h = dict(p["head"])
    h["fy"] = float(np.clip(h["fy"] + rng.uniform(-2 * amount, 2 * amount), 0.6, 1.05))
    h["r"] *= 1 + rng.uniform(-amount, amount)
    q["head"] = h
    legs = dict(p["legs"])
    legs["splay"] = [a + math.radians(rng.uniform(-10, 10)) for a in legs["splay"]]
    legs["length"] *= 1 + rng.uniform(-amount, amount)
    q["legs"] = legs
    t = dict(p["tail"])
    t["ang"] += math.radians(rng.uniform(-15, 15))
    q["tail"] = t
    return q


def _creature_polys(p: Dict[str, Any]) -> Dict[str, List[np.ndarray]]:
    """Polygons (unit coordinates) of each part of a creature."""
    b, side = p["body"], p["side"]
    out: Dict[str, List[np.ndarray]] = {}
    if b["kind"] == "rect":
        out["body"] = [_rect_poly(b["cx"], b["cy"], 2 * b["rx"], 2 * b["ry"], b["ang"])]
    elif b["kind"] == "blob":
        out["body"] = [_place(b["unit"] * np.array([1.0, b["ry"] / b["rx"]]), b["cx"], b["cy"], b["rx"], b["ang"])]
    else:
        out["body"] = [_ellipse_poly(b["cx"], b["cy"], b["rx"], b["ry"], b["ang"])]
    h = p["head"]
    hx = b["cx"] + side * b["rx"] * h["fx"]
    hy = b["cy"] - b["ry"] * h["fy"]
    if h["kind"] == "rect":
        out["head"] = [_rect_poly(hx, hy, 1.8 * h["r"], 1.8 * h["r"] * h["e"], b["ang"])]
    elif h["kind"] == "blob":
        out["head"] = [_place(h["unit"], hx, hy, h["r"], 0.0)]
    else:
        out["head"] = [_ellipse_poly(hx, hy, h["r"], h["r"] * h["e"])]
    lg = p["legs"]
    legs = []
    xs = np.linspace(b["cx"] - 0.65 * b["rx"], b["cx"] + 0.65 * b["rx"], lg["n"])
    top = b["cy"] + 0.4 * b["ry"]
    for x, a in zip(xs, lg["splay"]):
        L = lg["length"] + 0.6 * b["ry"]
        cxl = x + math.sin(a) * L / 2
        cyl = top + math.cos(a) * L / 2
        legs.append(_rect_poly(cxl, cyl, lg["width"], L, -a))
    out["legs"] = legs
    t = p["tail"]
    sx, sy = b["cx"] - side * b["rx"] * 0.85, b["cy"] - b["ry"] * 0.2
    dx, dy = -side * math.cos(t["ang"]), -math.sin(t["ang"])
    ex, ey = sx + dx * t["length"], sy + dy * t["length"]
    nx, ny = -dy * t["width"], dx * t["width"]
    out["tail"] = [np.array([[sx + nx, sy + ny], [sx - nx, sy - ny], [ex, ey]])]
    e = p["ears"]
    ears = []
    for off in (-0.55, 0.35):
        ex0 = hx + off * h["r"]
        ey0 = hy - 0.75 * h["r"] * h["e"]
        ears.append(np.array([[ex0 - e["w"], ey0 + 0.02], [ex0 + e["w"], ey0 + 0.02], [ex0 + 0.3 * e["w"], ey0 - e["h"]]]))
    out["ears"] = ears
    f = p["fin"]
    fx, fy = b["cx"] + f["dx"], b["cy"] - 0.85 * b["ry"]
    out["fin"] = [np.array([[fx - f["w"], fy + 0.03], [fx + f["w"], fy + 0.03], [fx - side * 0.4 * f["w"], fy - f["h"]]])]
    for i, s in enumerate(p["spots"]):
        out[f"spot{i + 1}"] = [_ellipse_poly(b["cx"] + s["fx"] * b["rx"], b["cy"] + s["fy"] * b["ry"], s["r"], s["r"] * 0.8)]
    return out


def _render_creature(p: Dict[str, Any], R: int, name: str) -> ToyObject:
    n = p["n_parts"]
    names = list(_CREATURE_PARTS[:n]) + [f"spot{i + 1}" for i in range(max(0, n - len(_CREATURE_PARTS)))]
    polys = _creature_polys(p)
    # Keep the whole layout inside the canvas: shrink about the centre, then rotate.
    ca, sa = math.cos(p["layout_angle"]), math.sin(p["layout_angle"])
    rot = np.array([[ca, -sa], [sa, ca]])

    def to_px(poly: np.ndarray) -> np.ndarray:
        return (((poly - 0.5) * 0.86) @ rot.T + 0.5) * R

    paint = [k for k in ("legs", "tail", "body", "fin") if k in names] + \
            [k for k in names if k.startswith("spot")] + [k for k in ("ears", "head") if k in names]
    im = Image.new("L", (R, R), 0)
    d = ImageDraw.Draw(im)
    for k in paint:
        for poly in polys[k]:
            d.polygon([tuple(map(float, q)) for q in to_px(poly)], fill=names.index(k) + 1)
    labels = np.asarray(im, dtype=np.uint8).copy()
    yy, xx = np.mgrid[0:R, 0:R].astype(np.float32)
    rgb = np.zeros((R, R, 3), np.float32)
    for i in range(n):
        sel = labels == i + 1
        if sel.any():
            rgb[sel] = _render_tex(p["tex"][i], yy[sel], xx[sel], float(R))
    rgb *= (labels > 0)[..., None]
    return ToyObject(name, (rgb * 255 + 0.5).astype(np.uint8), labels, names)


# ---- real photos ------------------------------------------------------------------------------

def _require_skimage() -> Any:
    try:
        import skimage.data as skd  # noqa: F401
    except Exception:  # ImportError, or a broken install
        raise DataError("source='photos' needs scikit-image: pip install scikit-image "
                        "(or pip install 'gemseg[demo]')") from None
    return skd


@lru_cache(maxsize=32)
def _photo(name: str) -> np.ndarray:
    """A scikit-image sample photo: (H, W, 3) uint8, or (H, W, 4) for the logo, or (H, W) gray."""
    skd = _require_skimage()
    try:
        if name == "motorcycle":
            img = skd.stereo_motorcycle()[0]
        else:
            img = getattr(skd, name)()
    except Exception as e:  # a sample that needs the network (pooch) on this install
        raise DataError(f"scikit-image sample '{name}' is unavailable ({type(e).__name__}); "
                        "reinstall scikit-image: pip install --force-reinstall scikit-image") from None
    img = np.asarray(img)
    if img.dtype != np.uint8:
        img = (np.clip(img.astype(np.float64), 0, 1) * 255).astype(np.uint8) if img.max() <= 1 else img.astype(np.uint8)
    return img


def _E(cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    return _ellipse_poly(cx, cy, rx, ry)


def _R(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)


def _P(*pts: Tuple[float, float]) -> np.ndarray:
    return np.array(pts, dtype=np.float64)


# name -> (photo, mask polygons (union), [(part name, polygons or None for "the rest")]);
# coordinates in the photo's pixels, drawn by hand on the scikit-image samples.
_PHOTO_OBJECTS: Dict[str, Tuple[str, List[np.ndarray], List[Tuple[str, Optional[List[np.ndarray]]]]]] = {
    "cat_face": ("chelsea", [_E(215, 158, 195, 160)],
                 [("eyes", [_E(245, 128, 125, 45)]), ("muzzle", [_E(262, 240, 80, 55)]), ("fur", None)]),
    "coffee_cup": ("coffee", [_E(278, 230, 203, 160), _E(290, 152, 120, 135),
                              _P((392, 112), (398, 68), (412, 64), (424, 72), (412, 118))],
                   [("coffee", [_E(288, 145, 88, 52)]),
                    ("cup", [_E(290, 152, 120, 135), _P((195, 225), (250, 225), (255, 300), (200, 305))]),
                    ("saucer", None)]),
    "rocket": ("rocket", [_E(322, 262, 95, 150), _R(262, 375, 385, 427)],
               [("rocket", [_R(305, 125, 340, 405)]), ("pad", [_R(262, 375, 385, 427)]), ("sky", None)]),
    "astronaut": ("astronaut", [_E(226, 100, 72, 88),
                                _P((28, 511), (22, 420), (40, 330), (80, 280), (115, 200), (160, 170),
                                   (300, 170), (345, 230), (360, 300), (365, 345), (300, 370), (280, 420),
                                   (270, 511))],
                  [("head", [_E(226, 100, 72, 88)]), ("collar", [_E(210, 218, 100, 70)]), ("suit", None)]),
    "motorcycle": ("motorcycle", [_E(200, 320, 82, 82), _E(598, 370, 90, 85),
                                  _P((95, 200), (140, 160), (330, 160), (350, 185), (470, 150), (490, 95),
                                     (540, 85), (580, 120), (610, 280), (640, 300), (520, 330), (420, 380),
                                     (350, 440), (320, 440), (260, 380), (150, 330), (95, 260))],
                   [("rear wheel", [_E(200, 320, 82, 82)]), ("front wheel", [_E(598, 370, 90, 85)]),
                    ("frame", None)]),
    "shuttle": ("astronaut", [_P((398, 0), (438, 0), (445, 60), (460, 160), (462, 255), (455, 282),
                                 (365, 282), (355, 240), (380, 120))],
                [("tank", [_R(395, 0, 440, 128)]), ("stand", [_R(355, 250, 465, 285)]), ("orbiter", None)]),
    "cameraman": ("camera", [_P((150, 80), (195, 62), (245, 70), (268, 100), (275, 135), (328, 138),
                                (338, 170), (336, 205), (300, 248), (200, 258), (150, 225), (138, 150))],
                  [("head", [_E(212, 128, 55, 66)]), ("camera", [_R(250, 135, 332, 200)]), ("coat", None)]),
    "gland": ("immunohistochemistry", [_E(318, 380, 68, 75)],
              [("lumen", [_E(320, 380, 30, 35)]), ("cells", None)]),
    "colorwheel": ("colorwheel", [_E(185, 185, 182, 182)],
                   [("red-yellow", None), ("green-cyan", None), ("blue-magenta", None)]),
    "logo": ("logo", [_E(250.5, 249.5, 239, 239)], [("green", None), ("orange", None), ("outline", None)]),
}

# Background sources: (photo, allowed crop box (x0, y0, x1, y1) or None = whole, tint hue or None).
_PHOTO_BACKGROUNDS: List[Tuple[str, Optional[Tuple[int, int, int, int]], Optional[float]]] = [
    ("brick", None, 0.03), ("grass", None, 0.25), ("gravel", None, 0.09),
    ("brick", None, 0.07), ("grass", None, 0.18), ("gravel", None, 0.58),
    ("camera", None, None), ("moon", None, None), ("coins", None, 0.12),
    ("hubble_deep_field", None, None), ("immunohistochemistry", (0, 0, 512, 290), None),
    ("rocket", (0, 0, 215, 427), None), ("astronaut", (0, 0, 110, 330), None),
    ("retina", None, None), ("coffee", (430, 0, 600, 230), None),
]


def _object_sources(names: Sequence[str]) -> Tuple[str, ...]:
    """The photos the named real-photo objects are cut from (left out of the backgrounds)."""
    return tuple(sorted({_PHOTO_OBJECTS[n][0] for n in names if n in _PHOTO_OBJECTS}))


def photo_object_names() -> List[str]:
    """Names of the real-photo objects, in the order ``source="photos"`` uses them."""
    return list(_PHOTO_OBJECTS)


@lru_cache(maxsize=64)
def _photo_object(name: str, R: int) -> ToyObject:
    src, mask_polys, parts = _PHOTO_OBJECTS[name]
    img = _photo(src)
    H, W = img.shape[:2]
    if name == "logo":
        rgb = img[..., :3]
        mask = _fill((H, W), mask_polys)
        r, g, b = (rgb[..., i].astype(np.int32) for i in range(3))
        lab = np.where(g > r + 20, 1, 2)
        lab = np.where((r > 215) & (g > 215) & (b > 215), 3, lab)
        labels = np.where(mask, lab, 0).astype(np.uint8)
    else:
        rgb = img[..., :3] if img.ndim == 3 else np.repeat(img[..., None], 3, 2)
        mask = _fill((H, W), mask_polys)
        labels = np.zeros((H, W), np.uint8)
        rest = [i + 1 for i, (_, polys) in enumerate(parts) if polys is None]
        if name == "colorwheel":
            yy, xx = np.mgrid[0:H, 0:W]
            ang = (np.degrees(np.arctan2(-(yy - 185.0), xx - 185.0)) + 360 - 30) % 360
            labels = np.where(mask, 1 + (ang // 120).astype(np.uint8), 0).astype(np.uint8)
        else:
            labels[mask] = rest[0]
            for i in reversed(range(len(parts))):
                polys = parts[i][1]
                if polys is not None:
                    labels[_fill((H, W), polys) & mask] = i + 1
    ys, xs = np.nonzero(labels)
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    side = int(max(x1 - x0, y1 - y0) * 1.04) + 2
    cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
    canvas = np.zeros((side, side, 3), np.uint8)
    lcan = np.zeros((side, side), np.uint8)
    ox, oy = side // 2 - (cx - x0), side // 2 - (cy - y0)
    canvas[oy:oy + (y1 - y0), ox:ox + (x1 - x0)] = rgb[y0:y1, x0:x1]
    lcan[oy:oy + (y1 - y0), ox:ox + (x1 - x0)] = labels[y0:y1, x0:x1]
    canvas[lcan == 0] = 0
    R = min(R, side)
    rgb_r = np.asarray(Image.fromarray(canvas).resize((R, R), Image.Resampling.LANCZOS))
    lab_r = np.asarray(Image.fromarray(lcan).resize((R, R), Image.Resampling.NEAREST)).copy()
    m_r = np.asarray(Image.fromarray(((lcan > 0) * 255).astype(np.uint8)).resize((R, R), Image.Resampling.BILINEAR))
    lab_r[m_r < 128] = 0
    rgb_r = rgb_r * (lab_r > 0)[..., None]
    return ToyObject(name, rgb_r.astype(np.uint8), lab_r, [p[0] for p in parts])


# ----------------------------------------------------------------------------------------------
# Backgrounds, occluders, decoys
# ----------------------------------------------------------------------------------------------

def _smooth_noise(rng: np.random.Generator, size: int, cells: int, hue: float) -> np.ndarray:
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


def _photo_patch(rng: np.random.Generator, size_hw: Tuple[int, int], exclude: Sequence[str] = ()) -> np.ndarray:
    """A crop of a real texture/photo resized to ``size_hw``: (h, w, 3) float32 in [0, 1]."""
    h, w = size_hw
    choices = [b for b in _PHOTO_BACKGROUNDS if b[0] not in exclude]
    src, box, tint = choices[int(rng.integers(len(choices)))]
    img = _photo(src)
    if box is not None:
        img = img[box[1]:box[3], box[0]:box[2]]
    Hs, Ws = img.shape[:2]
    frac = rng.uniform(0.35, 1.0)
    ch = max(8, int(min(Hs, Ws * h / max(w, 1)) * frac))
    cw = max(8, int(ch * w / max(h, 1)))
    cw = min(cw, Ws)
    y = int(rng.integers(0, Hs - ch + 1))
    x = int(rng.integers(0, Ws - cw + 1))
    crop = img[y:y + ch, x:x + cw]
    if crop.ndim == 3:
        crop = crop[..., :3]
    im = Image.fromarray(np.ascontiguousarray(crop)).resize((w, h), Image.Resampling.BILINEAR)
    if rng.random() < 0.5:
        im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    arr = np.asarray(im, np.float32) / 255.0
    if arr.ndim == 2:
        g = arr[..., None]
        if tint is None:
            tint = rng.uniform(0, 1)
            dark, light = _hsv(tint, 0.05, 0.05), _hsv(tint, 0.08, 1.0)
        else:
            hue = tint + rng.uniform(-0.03, 0.03)
            dark = _hsv(hue, rng.uniform(0.3, 0.7), rng.uniform(0.05, 0.2))
            light = _hsv(hue, rng.uniform(0.2, 0.5), rng.uniform(0.75, 1.0))
        arr = dark * (1 - g) + light * g
    return arr.astype(np.float32)


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


# ----------------------------------------------------------------------------------------------
# The view renderer
# ----------------------------------------------------------------------------------------------

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


# ----------------------------------------------------------------------------------------------
# Retrieval collection
# ----------------------------------------------------------------------------------------------

def _query_area(clutter: float) -> float:
    """Target image-area fraction of the query's object: 0.45 at clutter 0, 0.12 at clutter 1."""
    return 0.45 + (0.12 - 0.45) * clutter


def _view_spec(rng: np.random.Generator, kind: str, clutter: float) -> Tuple[_ViewSpec, float]:
    """Sample a view of the intended ``kind`` (query/easy/hard/junk); returns (spec, scale ratio)."""
    a0 = _query_area(clutter)
    if kind == "query":
        return _ViewSpec(area=a0, rotation=0.0, perspective=0.0, colour=0.0, blur=0.0), 1.0
    if kind == "easy":
        ratio = rng.uniform(0.8, 1.25)
        occ = 0.0 if rng.random() < 0.6 else rng.uniform(0.05, 0.15)
        return _ViewSpec(area=a0 * ratio ** 2, rotation=rng.uniform(-15, 15), perspective=rng.uniform(0, 0.08),
                         occlusion=occ, colour=rng.uniform(0.2, 0.6), blur=rng.uniform(0, 0.8)), ratio
    if kind == "hard":
        strong = set(rng.choice(["scale", "rotation", "perspective", "occlusion", "crop"], 2, replace=False))
        if "scale" in strong:
            ratio = rng.uniform(0.45, 0.6) if (rng.random() < 0.6 or clutter < 0.3) else rng.uniform(1.7, 2.1)
        else:
            ratio = rng.uniform(0.8, 1.25)
        rot = rng.choice([-1, 1]) * rng.uniform(40, 180) if "rotation" in strong else rng.uniform(-15, 15)
        persp = rng.uniform(0.18, 0.28) if "perspective" in strong else rng.uniform(0, 0.08)
        occ = rng.uniform(0.3, 0.45) if "occlusion" in strong else 0.0
        inf = rng.uniform(0.55, 0.7) if "crop" in strong else 1.0
        spec = _ViewSpec(area=a0 * ratio ** 2, rotation=float(rot), perspective=persp, in_frame=inf,
                         occlusion=occ, colour=rng.uniform(0.5, 1.0), blur=rng.uniform(0, 1.5),
                         shrink_to_fit=ratio <= 1.3)
        return spec, ratio
    # junk: the object barely visible, occluded or cropped away
    ratio = rng.uniform(0.7, 1.3)
    if rng.random() < 0.5:
        spec = _ViewSpec(area=a0 * ratio ** 2, rotation=rng.uniform(-30, 30), perspective=rng.uniform(0, 0.1),
                         occlusion=rng.uniform(0.8, 0.9), colour=rng.uniform(0.3, 1.0), blur=rng.uniform(0, 1.2))
    else:
        spec = _ViewSpec(area=a0 * ratio ** 2, rotation=rng.uniform(-30, 30), perspective=rng.uniform(0, 0.1),
                         in_frame=rng.uniform(0.1, 0.22), colour=rng.uniform(0.3, 1.0), blur=rng.uniform(0, 1.2))
    return spec, ratio


_VIEW_CYCLE = ("easy", "hard", "easy", "hard", "junk")


def _classify(visible: float, ratio: float, rotation: float, perspective: float) -> str:
    if visible < JUNK_VISIBLE:
        return "junk"
    rot = abs((rotation + 180.0) % 360.0 - 180.0)
    if (visible < HARD_VISIBLE or ratio < HARD_SCALE[0] or ratio > HARD_SCALE[1] or rot > HARD_ROTATION
            or perspective > HARD_PERSPECTIVE):
        return "hard"
    return "easy"


@dataclass
class ToyCollection:
    """A generated retrieval collection with revisited-style ground truth.

    ``query_paths`` (Q) and ``db_paths`` (N) are absolute path strings; ``gnd[q]`` is a dict with
    ``easy``, ``hard``, ``junk`` (lists of database indices) and ``bbx`` ([x0, y0, x1, y1], the query
    object's box in pixels, x1/y1 exclusive); ``db_labels``: (N,) int64, object id or -1 for a
    distractor; ``query_labels``: (Q,) int64; ``query_bboxes``: (Q, 4) int64; ``db_meta``: per database
    image the measured view properties (type, visible, scale ratio, rotation, ...).
    """

    root: Path
    query_paths: List[str]
    db_paths: List[str]
    gnd: List[Dict[str, Any]]
    db_labels: np.ndarray
    query_labels: np.ndarray
    object_names: List[str] = field(default_factory=list)
    query_bboxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.int64))
    db_meta: List[Dict[str, Any]] = field(default_factory=list)
    params: Dict[str, Any] = field(default_factory=dict)
    part_names: Dict[str, List[str]] = field(default_factory=dict)

    def mask_path(self, path: PathLike) -> Path:
        """The object mask (PNG, 0/255) of an image of this collection."""
        return Path(self.root) / "masks" / (Path(path).stem + ".png")

    def part_path(self, path: PathLike) -> Path:
        """The part label map (PNG, 0 = background, 1..P = part) of an image of this collection."""
        return Path(self.root) / "parts" / (Path(path).stem + ".png")

    @property
    def images_dir(self) -> Path:
        """The database folder (index it to search the collection)."""
        return Path(self.root) / "images"

    @property
    def queries_dir(self) -> Path:
        return Path(self.root) / "queries"

    @classmethod
    def load(cls, root: PathLike) -> "ToyCollection":
        """Read ``root/ground_truth.json`` written by :func:`make_retrieval_collection`."""
        root = Path(root).resolve()
        f = root / GT_FILE
        if not f.is_file():
            raise DataError(f"{root}: no toy collection here ({GT_FILE} missing); "
                            "make one with retrieval.toydata.make_retrieval_collection")
        try:
            d = json.loads(f.read_text())
            return cls(
                root=root,
                query_paths=[str(root / p) for p in d["queries"]],
                db_paths=[str(root / p) for p in d["database"]],
                gnd=[{"easy": list(g["easy"]), "hard": list(g["hard"]), "junk": list(g["junk"]),
                      "bbx": list(g["bbx"])} for g in d["gnd"]],
                db_labels=np.asarray(d["db_labels"], dtype=np.int64),
                query_labels=np.asarray(d["query_labels"], dtype=np.int64),
                object_names=list(d["objects"]),
                query_bboxes=np.asarray(d["query_bboxes"], dtype=np.int64).reshape(-1, 4),
                db_meta=list(d["db_meta"]),
                params=dict(d["params"]),
                part_names={k: list(v) for k, v in d["part_names"].items()},
            )
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"{f}: not a toy-collection ground truth ({type(e).__name__}: {e})") from None


def _prepare_root(root: Path, marker: str) -> None:
    """Make ``root``'s output folders empty; refuse to clear a folder this module did not make."""
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
    if not isinstance(image_size, (int, np.integer)) or image_size < 32:
        raise DataError(f"image_size must be an integer ≥ 32, got {image_size!r}")


def _objects_for(n_objects: int, source: str, image_size: int, seed: int, stream: int,
                 n_parts: Optional[int] = None) -> List[ToyObject]:
    if source == "photos":
        names = photo_object_names()
        if n_objects > len(names):
            raise DataError(f"source='photos' has {len(names)} objects; asked for {n_objects}")
        R = max(2 * image_size, 96)
        return [_photo_object(n, R) for n in names[:n_objects]]
    R = max(image_size, 64)
    objs = []
    for i in range(n_objects):
        rng = np.random.default_rng([seed, stream, i])
        P = n_parts if n_parts is not None else int(rng.integers(3, 6))
        objs.append(_render_creature(_sample_creature(rng, P, varied=True), R, f"obj{i:02d}"))
    return objs


def _check_source(source: str) -> bool:
    if source not in ("synthetic", "photos"):
        raise DataError(f"source must be 'synthetic' or 'photos', got {source!r}")
    if source == "photos":
        _require_skimage()
        return True
    return False


def make_retrieval_collection(root: PathLike, n_objects: int = 8, views: int = 6, distractors: int = 8,
                              image_size: int = 128, seed: int = 0, clutter: float = 0.0,
                              source: str = "synthetic") -> ToyCollection:
    """Generate a retrieval collection under ``root`` and return it (see the module docstring).

    ``n_objects`` objects × ``views`` views (view 0 is the object's query, the other ``views - 1``
    go to the database), plus ``distractors`` database images with no object of the collection.
    ``clutter`` in [0, 1]: 0 = the query's object covers about 45 % of the image on a plain-ish
    background; 1 = about 12 % on a busy background full of textured shapes. ``source`` is
    ``"synthetic"`` or ``"photos"`` (scikit-image samples; at most 10 objects, in the order of
    :func:`photo_object_names`). Images are ``image_size``² JPEGs. Existing generator output under
    ``root`` is replaced; a folder with other images in ``images/`` is refused (DataError).
    """
    photos = _check_source(source)
    _check_size(image_size)
    if n_objects < 1 or views < 2 or distractors < 0:
        raise DataError(f"need n_objects ≥ 1, views ≥ 2, distractors ≥ 0 "
                        f"(got {n_objects}, {views}, {distractors})")
    if not 0.0 <= float(clutter) <= 1.0:
        raise DataError(f"clutter must be in [0, 1], got {clutter}")
    clutter = float(clutter)
    root = Path(root).resolve()
    S = int(image_size)
    objs = _objects_for(n_objects, source, S, seed, _S_OBJECT)

    # database order: a seeded shuffle of (object views, distractors); file names carry the index
    items: List[Tuple[int, int]] = [(o, v) for o in range(n_objects) for v in range(1, views)]
    items += [(-1, d) for d in range(distractors)]
    order = np.random.default_rng([seed, 0]).permutation(len(items))
    items = [items[i] for i in order]

    # backgrounds never come from a photo that an object of the collection was cut from
    exclude = _object_sources([o.name for o in objs]) if photos else ()
    _prepare_root(root, GT_FILE)
    queries: List[str] = []
    bboxes: List[List[int]] = []
    qscale: List[float] = []
    for o, obj in enumerate(objs):
        rng = np.random.default_rng([seed, _S_VIEW, o, 0])
        spec, _ = _view_spec(rng, "query", clutter)
        bg = _background(rng, S, busy=clutter * 0.8, photos=photos, exclude=exclude)
        r = _render_view(obj, spec, S, bg, rng, photos, exclude=exclude)
        qscale.append(r.scale)
        rel = f"queries/{obj.name}_v0.jpg"
        _save(root, rel, r.image, r.labels)
        ys, xs = np.nonzero(r.labels)
        bboxes.append([int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1])
        queries.append(rel)

    unused = photo_object_names()[n_objects:] if photos else []
    database: List[str] = []
    labels: List[int] = []
    meta: List[Dict[str, Any]] = []
    nd = len(str(max(len(items) - 1, 999)))
    for k, (o, v) in enumerate(items):
        if o >= 0:
            obj = objs[o]
            rng = np.random.default_rng([seed, _S_VIEW, o, v])
            intended = _VIEW_CYCLE[(v - 1) % len(_VIEW_CYCLE)]
            spec, ratio = _view_spec(rng, intended, clutter)
            bg = _background(rng, S, busy=clutter, photos=photos, exclude=exclude)
            r = _render_view(obj, spec, S, bg, rng, photos, exclude=exclude)
            ratio = r.scale / qscale[o]
            kind = _classify(r.visible, ratio, spec.rotation, spec.perspective)
            name = f"db{k:0{nd}d}_{obj.name}_v{v}"
            m = dict(name=name, label=o, type=kind, intended=intended, visible=round(r.visible, 4),
                     in_frame=round(r.in_frame, 4), occluded=round(r.occluded, 4),
                     scale_ratio=round(ratio, 4),
                     rotation=round(float(spec.rotation), 2), perspective=round(float(spec.perspective), 4),
                     blur=round(float(spec.blur), 3),
                     mask_area=round(float(np.count_nonzero(r.labels)) / (S * S), 4))
            image, lab = r.image, r.labels
        else:
            rng = np.random.default_rng([seed, _S_DISTRACTOR, v])
            image = _distractor(rng, S, clutter, photos, unused, seed, v, exclude)
            lab = np.zeros((S, S), np.uint8)
            name = f"db{k:0{nd}d}_distractor{v:03d}"
            m = dict(name=name, label=-1, type="distractor", mask_area=0.0)
        rel = f"images/{name}.jpg"
        _save(root, rel, image, lab)
        database.append(rel)
        labels.append(o)
        meta.append(m)

    gnd = []
    for o in range(n_objects):
        g: Dict[str, Any] = {"easy": [], "hard": [], "junk": [], "bbx": bboxes[o]}
        for i, m in enumerate(meta):
            if m["label"] == o:
                g[m["type"]].append(i)
        gnd.append(g)
    doc = {
        "version": _GT_VERSION,
        "params": dict(n_objects=n_objects, views=views, distractors=distractors, image_size=S, seed=seed,
                       clutter=clutter, source=source),
        "objects": [o.name for o in objs],
        "part_names": {o.name: o.part_names for o in objs},
        "queries": queries,
        "database": database,
        "query_labels": list(range(n_objects)),
        "db_labels": labels,
        "query_bboxes": bboxes,
        "gnd": gnd,
        "db_meta": meta,
        "rules": dict(junk_visible_below=JUNK_VISIBLE, hard_visible_below=HARD_VISIBLE,
                      hard_scale_outside=list(HARD_SCALE), hard_rotation_above=HARD_ROTATION,
                      hard_perspective_above=HARD_PERSPECTIVE),
    }
    with atomic_path(root / GT_FILE) as tmp:
        tmp.write_text(json.dumps(doc, indent=1))
    return ToyCollection.load(root)


def _distractor(rng: np.random.Generator, S: int, clutter: float, photos: bool, unused: Sequence[str],
                seed: int, d: int, exclude: Sequence[str] = ()) -> np.ndarray:
    """A database image without any object of the collection: (S, S, 3) uint8."""
    img = _background(rng, S, busy=clutter, photos=photos, exclude=exclude)
    n_decoys = int(rng.integers(0, 3))
    for j in range(n_decoys):
        if photos and unused and rng.random() < 0.5:
            decoy = _photo_object(unused[int(rng.integers(len(unused)))], max(2 * S, 96))
        elif photos:
            decoy = None
        else:
            drng = np.random.default_rng([seed, _S_DECOY, d, j])
            decoy = _render_creature(_sample_creature(drng, int(drng.integers(2, 6)), varied=True),
                                     max(S, 64), "decoy")
        if decoy is None:
            poly = _place(_unit_shape(rng, str(rng.choice(["ellipse", "blob", "rect"]))), rng.uniform(0.2, 0.8) * S,
                          rng.uniform(0.2, 0.8) * S, S * rng.uniform(0.15, 0.3), rng.uniform(0, 2 * np.pi))
            patch = _photo_patch(rng, (S, S), exclude)
            _paste_shape(img, poly, lambda y0, y1, x0, x1: patch[y0:y1, x0:x1])
            continue
        spec = _ViewSpec(area=_query_area(clutter) * rng.uniform(0.4, 1.0), rotation=rng.uniform(-40, 40),
                         perspective=rng.uniform(0, 0.15))
        img = _render_view(decoy, spec, S, img, rng, photos, exclude=exclude).image.astype(np.float32) / 255.0
    photo = (1.0 + rng.uniform(-0.1, 0.1), 1.0 + rng.uniform(-0.1, 0.1), 1.0, 0.0)
    return _finish(img, photo, float(rng.uniform(0, 0.8)), rng.normal(0, 0.008, img.shape).astype(np.float32))


def export_class_folders(collection: ToyCollection, out_dir: PathLike, include_junk: bool = True) -> Dict[str, List[str]]:
    """Copy every view of each object (its query and its database views) to ``out_dir/<object>/``.

    The folder-of-classes layout for training from class folders or for evaluating with "every
    image a query, positives = same class". Distractors are left out. Files are copied (never
    linked). ``include_junk=False`` leaves out the views where the object is barely visible.
    Returns ``{object name: [written paths]}``.
    """
    out = Path(out_dir)
    written: Dict[str, List[str]] = {n: [] for n in collection.object_names}
    for q, p in zip(collection.query_labels, collection.query_paths):
        written[collection.object_names[int(q)]].append(p)
    for lab, p, m in zip(collection.db_labels, collection.db_paths, collection.db_meta):
        if lab >= 0 and (include_junk or m.get("type") != "junk"):
            written[collection.object_names[int(lab)]].append(p)
    result: Dict[str, List[str]] = {}
    for name, srcs in written.items():
        d = out / name
        d.mkdir(parents=True, exist_ok=True)
        result[name] = []
        for s in srcs:
            dst = d / Path(s).name
            shutil.copyfile(s, dst)
            result[name].append(str(dst))
    return result


# ----------------------------------------------------------------------------------------------
# Co-segmentation sets
# ----------------------------------------------------------------------------------------------

def make_coseg_sets(root: PathLike, n_sets: int = 3, images_per_set: int = 6, image_size: int = 96,
                    n_parts: int = 3, seed: int = 0, source: str = "synthetic") -> List[str]:
    """Generate co-segmentation sets in the iCoseg layout under ``root``; returns the set names.

    ``root/images/<set>/<set>_<i>.jpg``, ``root/masks/<set>/<set>_<i>.png`` (0/255 object mask) and
    ``root/parts/<set>/<set>_<i>.png`` (0 = background, 1..P = part), plus ``root/coseg.json``
    (sets, their part names and images). Synthetic sets (named ``set00``, ``set01``, ...): one
    object class per set made of ``n_parts`` parts (body, head, legs, tail, ears, fin, then spots),
    each with its own texture and colour, re-drawn per image with small changes of shape, placed at
    varied positions and scales (15–45 % of the image), mildly rotated, sometimes mirrored, on
    varied backgrounds. ``source="photos"``: each set is one real-photo object (``cat_face``,
    ``coffee_cup``, ...; its own hand-drawn parts, ``n_parts`` does not apply) on real textures.
    """
    photos = _check_source(source)
    _check_size(image_size)
    if n_sets < 1 or images_per_set < 1 or n_parts < 1:
        raise DataError(f"need n_sets, images_per_set, n_parts ≥ 1 (got {n_sets}, {images_per_set}, {n_parts})")
    S = int(image_size)
    root = Path(root).resolve()
    if photos:
        names = photo_object_names()
        if n_sets > len(names):
            raise DataError(f"source='photos' has {len(names)} objects; asked for {n_sets} sets")
        set_names = names[:n_sets]
    else:
        set_names = [f"set{i:02d}" for i in range(n_sets)]
    _prepare_root(root, COSEG_FILE)
    exclude = _object_sources(set_names) if photos else ()
    doc: Dict[str, Any] = {"version": _GT_VERSION, "source": source, "image_size": S, "seed": seed,
                           "n_parts": n_parts, "sets": {}}
    for si, sname in enumerate(set_names):
        srng = np.random.default_rng([seed, _S_COSEG, si])
        params = None if photos else _sample_creature(srng, n_parts, varied=False)
        images = []
        part_names: List[str] = []
        for i in range(images_per_set):
            rng = np.random.default_rng([seed, _S_COSEG_IMG, si, i])
            if photos:
                obj = _photo_object(sname, max(2 * S, 96))
            else:
                obj = _render_creature(_jitter_creature(params, rng, 0.08), max(S, 64), sname)
            part_names = obj.part_names
            spec = _ViewSpec(area=rng.uniform(0.15, 0.45), rotation=rng.uniform(-20, 20),
                             perspective=rng.uniform(0, 0.08), colour=rng.uniform(0, 0.4),
                             blur=rng.uniform(0, 0.6), flip=bool(rng.random() < 0.5))
            bg = _background(rng, S, busy=rng.uniform(0.0, 0.4), photos=photos, exclude=exclude)
            r = _render_view(obj, spec, S, bg, rng, photos, exclude=exclude)
            rel = f"images/{sname}/{sname}_{i:02d}.jpg"
            _save(root, rel, r.image, r.labels)
            images.append(rel)
        doc["sets"][sname] = {"part_names": part_names, "images": images}
    with atomic_path(root / COSEG_FILE) as tmp:
        tmp.write_text(json.dumps(doc, indent=1))
    return list(set_names)
