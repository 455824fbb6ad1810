"""Results people look at, as files: a contact-sheet PNG and a small self-contained HTML page."""
from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any, Dict, List, Sequence, Union

from PIL import Image, ImageDraw

from retrieval.core.errors import ImageError
from retrieval.core.images import load_image
from retrieval.core.io import atomic_path

PathLike = Union[str, Path]


def thumbnail(path: PathLike, size: int = 160) -> Image.Image:
    """RGB thumbnail whose long side is ``size``; a grey tile when the file cannot be read."""
    try:
        img = load_image(path)
    except ImageError:
        return Image.new("RGB", (size, size), (128, 128, 128))
    img.thumbnail((size, size))
    return img


def _data_uri(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def hits_sheet(result: Dict[str, Any], size: int = 160) -> Image.Image:
    """One row: the query, then its hits, each captioned with rank and score."""
    tiles = [(thumbnail(result["query"], size), "query")]
    tiles += [(thumbnail(h["path"], size), f"#{h['rank']}  {h['score']:.3f}") for h in result["hits"]]
    pad, cap = 6, 16
    sheet = Image.new("RGB", (len(tiles) * (size + pad) + pad, size + cap + 2 * pad), "white")
    draw = ImageDraw.Draw(sheet)
    for j, (t, text) in enumerate(tiles):
        x = pad + j * (size + pad)
        sheet.paste(t, (x + (size - t.width) // 2, pad + (size - t.height) // 2))
        draw.text((x + 2, pad + size + 2), text, fill=(0, 0, 0))
        if j == 0:
            draw.rectangle([x - 2, pad - 2, x + size + 1, pad + size + 1], outline=(0, 90, 200), width=2)
    return sheet


def write_hits_png(path: PathLike, results: Sequence[Dict[str, Any]], size: int = 160) -> Path:
    """All queries' rows stacked into one PNG."""
    rows = [hits_sheet(r, size) for r in results]
    w = max(r.width for r in rows)
    out = Image.new("RGB", (w, sum(r.height for r in rows)), "white")
    y = 0
    for r in rows:
        out.paste(r, (0, y))
        y += r.height
    with atomic_path(path) as tmp:
        out.save(tmp, format="PNG")
    return Path(path)


def write_hits_html(path: PathLike, results: Sequence[Dict[str, Any]], title: str = "gemseg search",
                    size: int = 160) -> Path:
    """A self-contained HTML page (thumbnails inlined) of each query and its hits with scores."""
    parts: List[str] = [
        "<!doctype html><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;margin:1em}.row{display:flex;gap:8px;margin:12px 0;"
        "align-items:flex-start}figure{margin:0;text-align:center;font-size:12px;max-width:"
        f"{size}px;word-break:break-all}}figure.q img{{outline:3px solid #06c}}</style>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    for r in results:
        parts.append("<div class='row'>")
        parts.append(f"<figure class='q'><img src='{_data_uri(thumbnail(r['query'], size))}'>"
                     f"<figcaption><b>query</b><br>{html.escape(Path(r['query']).name)}</figcaption></figure>")
        for h in r["hits"]:
            parts.append(f"<figure><img src='{_data_uri(thumbnail(h['path'], size))}' title='{html.escape(h['path'])}'>"
                         f"<figcaption>#{h['rank']} · {h['score']:.3f}<br>{html.escape(Path(h['path']).name)}"
                         "</figcaption></figure>")
        parts.append("</div>")
    with atomic_path(path) as tmp:
        Path(tmp).write_text("\n".join(parts))
    return Path(path)
