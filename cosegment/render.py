"""Pictures of co-segmentation results: heat-map overlays (one colour per concept, as in the DFF
paper's figures), part label overlays, mask/box previews, the k = 1…K figure and an HTML index.

All images are (H, W, 3) uint8 numpy arrays; heat maps are (k, H, W) float32 in [0, 1].
"""
from __future__ import annotations

import colorsys
import html
from pathlib import Path
from typing import Dict, Optional, Sequence, Union

import numpy as np
from PIL import Image, ImageDraw

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
        d.text((6, y + thumb // 2 - 6), lab, fill=(0, 0, 0))
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


def write_index_html(path: PathLike, rows: Sequence[Dict[str, object]], title: str = "gemseg co-segmentation",
                     summary: str = "") -> Path:
    """An HTML page with one row per image: ``rows[i]`` has ``name``, ``set`` and image paths
    (relative to the page) under ``image``, ``overlay``, ``mask``, ``preview`` and optionally
    ``parts``, plus ``box`` and ``score`` (text)."""
    path = Path(path)
    cols = ["image", "overlay", "preview", "mask", "parts"]
    present = [c for c in cols if any(r.get(c) for r in rows)]
    head = "".join(f"<th>{c}</th>" for c in present)
    body = []
    cur = None
    for r in rows:
        if r.get("set") != cur:
            cur = r.get("set")
            body.append(f'<tr><td colspan="{len(present) + 1}" class="set">set: {html.escape(str(cur))}</td></tr>')
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
td{{vertical-align:top;padding:3px}} td.set{{background:#eee;font-weight:bold}} td.info{{font-size:12px;max-width:160px}}</style>
</head><body><h2>{html.escape(title)}</h2><p>{html.escape(summary)}</p>
<table><tr><th></th>{head}</tr>{''.join(body)}</table></body></html>
"""
    with atomic_path(path) as tmp:
        tmp.write_text(doc)
    return path
