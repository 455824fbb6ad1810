"""Pictures of co-segmentation results: heat-map overlays (one colour per concept, as in the DFF
paper's figures), part label overlays, mask/box previews, the k = 1…K figure and an HTML index.

All images are (H, W, 3) uint8 numpy arrays; heat maps are (k, H, W) float32 in [0, 1]. Text is
written in a TrueType font found on the machine (:mod:`retrieval.core.fonts`).
"""
from __future__ import annotations

import colorsys
import html
from pathlib import Path
from typing import Dict, Optional, Sequence, Union

import numpy as np
from PIL import Image, ImageDraw

from retrieval.core.fonts import face
from retrieval.core.io import atomic_path

PathLike = Union[str, Path]

_BASE = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (255, 225, 25), (145, 30, 180),
         (70, 240, 240), (245, 130, 48), (240, 50, 230), (210, 245, 60), (0, 128, 128)]


def palette(k: int) -> np.ndarray:
    """(k, 3) uint8 distinct colours (10 fixed ones, then evenly spaced hues)."""
    cols = list(_BASE[:k])
    for i in range(len(cols), k):
        r, g, b = colorsys.hsv_to_rgb(((i - 10) * 0.618034) % 1.0, 0.85, 0.95)
        cols.append((int(r * 255), int(g * 255), int(b * 255)))
    return np.array(cols, np.uint8).reshape(k, 3)


def heat_overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.65,
                 colours: Optional[np.ndarray] = None) -> np.ndarray:
    """Blend each pixel towards the colour of its strongest concept, by that concept's heat.

    image: (H, W, 3) uint8; heat: (k, H, W) float32 in [0, 1] → (H, W, 3) uint8."""
    k = heat.shape[0]
    cols = (palette(k) if colours is None else colours).astype(np.float32)
    idx = heat.argmax(0)
    a = (heat.max(0) * alpha)[..., None]
    out = image.astype(np.float32) * (1 - a) + cols[idx] * a
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def label_overlay(image: np.ndarray, labels: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """Tint pixels with label ℓ ≥ 1 by colour ℓ−1 of :func:`palette`; label 0 is left as is."""
    n = int(labels.max()) if labels.size else 0
    if n == 0:
        return image.copy()
    cols = palette(n).astype(np.float32)
    out = image.astype(np.float32)
    m = labels > 0
    out[m] = out[m] * (1 - alpha) + cols[labels[m] - 1] * alpha
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def mask_preview(image: np.ndarray, mask: np.ndarray, box: Optional[Sequence[int]] = None) -> np.ndarray:
    """Dim the background of ``image`` outside ``mask`` (H, W) bool and draw ``box`` in red."""
    out = image.astype(np.float32)
    out[~mask] *= 0.3
    im = Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))
    if box is not None:
        w = max(2, round(min(im.size) / 100))
        ImageDraw.Draw(im).rectangle([box[0], box[1], box[2] - 1, box[3] - 1], outline=(255, 40, 40), width=w)
    return np.asarray(im)


def add_legend(image: np.ndarray, k: int, object_factors: Sequence[int] = ()) -> np.ndarray:
    """``image`` (H, W, 3) uint8 with a white band below it: one swatch per factor in its
    :func:`palette` colour, numbered from 0 (``factor 0``, ``factor 1 (object)`` …); heat overlays
    and part overlays share these colours. → (H + band, W, 3) uint8."""
    h, w = image.shape[:2]
    fs = int(np.clip(round(w / 40), 11, 28))
    band = fs + 10
    im = Image.new("RGB", (w, h + band), (255, 255, 255))
    im.paste(Image.fromarray(image), (0, 0))
    d = ImageDraw.Draw(im)
    font = face(fs)
    obj = set(int(j) for j in object_factors)
    x, y = 6, h + 5
    cols = palette(k)
    for j in range(k):
        text = f"factor {j}" + (" (object)" if j in obj else "")
        d.rectangle([x, y, x + fs - 1, y + fs - 1], fill=tuple(int(c) for c in cols[j]), outline=(0, 0, 0))
        font.draw(d, (x + fs + 4, y - 1), text)
        x += fs + 4 + int(font.length(text)) + fs
    return np.asarray(im)


def shrink(image: np.ndarray, max_side: Optional[int], *planes: np.ndarray) -> tuple:
    """``image`` (H, W, 3) uint8 and each of ``planes`` ((H, W) or (k, H, W); bool, uint8 or
    float) resized so that the long side is at most ``max_side`` (bilinear for the image and float
    planes, nearest for bool/integer ones); unchanged when already small or ``max_side`` is None.
    Returns ``(image, *planes, scale)``."""
    h, w = image.shape[:2]
    if not max_side or max(h, w) <= max_side:
        return (image, *planes, 1.0)
    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    out = [np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))]
    for p in planes:
        stack = p[None] if p.ndim == 2 else p
        res = []
        for a in stack:
            if a.dtype.kind == "f":
                res.append(np.asarray(Image.fromarray(a.astype(np.float32), "F").resize(size, Image.Resampling.BILINEAR)))
            else:
                u8 = a.astype(np.uint8)
                res.append(np.asarray(Image.fromarray(u8).resize(size, Image.Resampling.NEAREST)).astype(a.dtype))
        res = np.stack(res)
        out.append(res[0] if p.ndim == 2 else res)
    return (*out, scale)


def _thumb(a: np.ndarray, size: int) -> Image.Image:
    im = Image.fromarray(a)
    im.thumbnail((size, size), Image.Resampling.BILINEAR)
    canvas = Image.new("RGB", (size, size), (255, 255, 255))
    canvas.paste(im, ((size - im.width) // 2, (size - im.height) // 2))
    return canvas


def heatmap_figure(images: Sequence[np.ndarray], heats: Dict[int, Sequence[np.ndarray]],
                   thumb: int = 128, pad: int = 4) -> Image.Image:
    """A grid like the paper's figure: first row the images, then one row per k in ``heats``
    (``heats[k][i]``: (k, H_i, W_i) heat of image i) with :func:`heat_overlay`."""
    rows = [list(images)] + [[heat_overlay(img, h) for img, h in zip(images, heats[k])] for k in sorted(heats)]
    labels = [""] + [f"k={k}" for k in sorted(heats)]
    n = len(images)
    lw = 44
    W = lw + n * (thumb + pad) + pad
    Hh = len(rows) * (thumb + pad) + pad
    fig = Image.new("RGB", (W, Hh), (255, 255, 255))
    d = ImageDraw.Draw(fig)
    for r, (row, lab) in enumerate(zip(rows, labels)):
        y = pad + r * (thumb + pad)
        face(12).draw(d, (6, y + thumb // 2 - 7), lab)
        for c, a in enumerate(row):
            fig.paste(_thumb(a, thumb), (lw + pad + c * (thumb + pad), y))
    return fig


def save_png(path: PathLike, a: Union[np.ndarray, Image.Image]) -> Path:
    """Write an image atomically (format from the suffix)."""
    path = Path(path)
    im = a if isinstance(a, Image.Image) else Image.fromarray(a)
    with atomic_path(path) as tmp:
        fmt = "JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG"
        im.save(tmp, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return path


def legend_html(k: int, object_factors: Sequence[int] = ()) -> str:
    """Swatches of the :func:`palette` colours, ``factor 0 … k-1``, the object factors marked."""
    obj = set(int(j) for j in object_factors)
    return " ".join(
        f"<span class='sw'><b style='background:rgb{tuple(int(c) for c in col)}'></b>factor {j}"
        f"{' (object)' if j in obj else ''}</span>" for j, col in enumerate(palette(k)))


def write_index_html(path: PathLike, rows: Sequence[Dict[str, object]], title: str = "gemseg co-segmentation",
                     summary: str = "", legends: Optional[Dict[str, str]] = None) -> Path:
    """An HTML page with one row per image: ``rows[i]`` has ``name``, ``set`` and image paths
    (relative to the page) under ``image``, ``overlay``, ``mask``, ``preview`` and optionally
    ``parts``, plus ``box`` and ``score`` (text). ``legends``: per set, the HTML of its colour
    legend (:func:`legend_html`), shown in the set's header row."""
    legends = legends or {}
    path = Path(path)
    cols = ["image", "overlay", "preview", "mask", "parts"]
    present = [c for c in cols if any(r.get(c) for r in rows)]
    head = "".join(f"<th>{c}</th>" for c in present)
    body = []
    cur = None
    for r in rows:
        if r.get("set") != cur:
            cur = r.get("set")
            body.append(f'<tr><td colspan="{len(present) + 1}" class="set">set: {html.escape(str(cur))}'
                        f'<br>{legends.get(str(cur), "")}</td></tr>')
        cells = "".join(
            f'<td><img src="{html.escape(str(r[c]))}" loading="lazy"></td>' if r.get(c) else "<td></td>"
            for c in present)
        info = html.escape(str(r.get("name", "")))
        if r.get("box") is not None:
            info += f"<br>box {html.escape(str(r['box']))}"
        if r.get("score"):
            info += f"<br>{html.escape(str(r['score']))}"
        body.append(f"<tr><td class='info'>{info}</td>{cells}</tr>")
    doc = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:1em}} img{{max-width:220px;max-height:220px}}
td{{vertical-align:top;padding:3px}} td.set{{background:#eee;font-weight:bold}} td.info{{font-size:12px;max-width:160px}}
.sw{{font-weight:normal;margin-right:1em;white-space:nowrap}} .sw b{{display:inline-block;width:1em;height:1em;
vertical-align:middle;margin-right:.3em;border:1px solid #000}}</style>
</head><body><h2>{html.escape(title)}</h2><p>{html.escape(summary)}</p>
<table><tr><th></th>{head}</tr>{''.join(body)}</table></body></html>
"""
    with atomic_path(path) as tmp:
        tmp.write_text(doc)
    return path
