"""The toy objects: :class:`ToyObject` (an object in its canonical frame, what every view is warped
from) and the synthetic creatures, objects made of textured parts (body, head, legs, tail, ears,
fin, then spots) sampled from a generator and rasterised.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
from PIL import Image, ImageDraw

from retrieval.toy.geometry import _ellipse_poly, _place, _rect_poly, _unit_shape
from retrieval.toy.textures import _PART_TEXTURES, _random_tex, _render_tex


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
        ears.append(np.array([[ex0 - e["w"], ey0 + 0.02], [ex0 + e["w"], ey0 + 0.02],
                              [ex0 + 0.3 * e["w"], ey0 - e["h"]]]))
    out["ears"] = ears
    f = p["fin"]
    fx, fy = b["cx"] + f["dx"], b["cy"] - 0.85 * b["ry"]
    out["fin"] = [np.array([[fx - f["w"], fy + 0.03], [fx + f["w"], fy + 0.03],
                            [fx - side * 0.4 * f["w"], fy - f["h"]]])]
    for i, s in enumerate(p["spots"]):
        out[f"spot{i + 1}"] = [_ellipse_poly(b["cx"] + s["fx"] * b["rx"], b["cy"] + s["fy"] * b["ry"],
                                             s["r"], s["r"] * 0.8)]
    return out


def _render_creature(p: Dict[str, Any], R: int, name: str) -> ToyObject:
    """Rasterise the creature ``p`` (from :func:`_sample_creature`) into an ``R``² :class:`ToyObject`."""
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
