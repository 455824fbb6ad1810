"""Real photos (``source="photos"``): objects cut out of the photographs that scikit-image ships
(hand-drawn ellipse/polygon masks and parts), and crops of real textures and photos for
backgrounds, clutter and occluders.

scikit-image is optional (``pip install 'gemseg[demo]'``): it is imported when a photo is first
needed, and a missing install is a :class:`DataError`.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from retrieval.core.errors import DataError
from retrieval.toy.geometry import _ellipse_poly, _fill
from retrieval.toy.objects import ToyObject
from retrieval.toy.textures import _hsv


def _require_skimage() -> Any:
    """``skimage.data``, or a DataError that says how to install scikit-image."""
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
    """An ellipse polygon (photo pixels)."""
    return _ellipse_poly(cx, cy, rx, ry)


def _R(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    """An axis-aligned rectangle polygon (photo pixels)."""
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)


def _P(*pts: Tuple[float, float]) -> np.ndarray:
    """A polygon from its points (photo pixels)."""
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
    """The real-photo object ``name`` cut out, centred in a square canvas and resized to at most ``R``²
    (RGB Lanczos, parts nearest, mask bilinear ≥ 0.5): a :class:`ToyObject`."""
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


def _check_source(source: str) -> bool:
    """Refuse (DataError) an unknown ``source``; ``True`` for ``"photos"`` (after checking scikit-image)."""
    if source not in ("synthetic", "photos"):
        raise DataError(f"source must be 'synthetic' or 'photos', got {source!r}")
    if source == "photos":
        _require_skimage()
        return True
    return False
