"""Results people look at, as files: a contact-sheet PNG and a small self-contained HTML page.

Both stay readable with many hits (``--top 50``): each query is a block that starts with the query
(outlined in blue) and wraps its hits into rows of at most ``columns`` thumbnails, each captioned
with its rank, score and file name. The HTML inlines its thumbnails (one file to send around) and
links each one to the original image (a path relative to the page, so the page and the photos can
move together; a ``file://`` URI when no relative path exists). A hit whose file cannot be read is
a grey tile captioned with the reason.
"""
from __future__ import annotations

import base64
import html
import io
import os
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from PIL import Image, ImageDraw, ImageFont

from retrieval.core.errors import ImageError
from retrieval.core.images import load_image
from retrieval.core.io import atomic_path

PathLike = Union[str, Path]

#: Thumbnails per row of a contact sheet (after the query).
COLUMNS = 10


def thumbnail(path: PathLike, size: int = 160) -> Image.Image:
    """RGB thumbnail whose long side is ``size``; a grey tile when the file cannot be read."""
    return _thumbnail(path, size)[0]


def _thumbnail(path: PathLike, size: int) -> Tuple[Image.Image, Optional[str]]:
    """(thumbnail, None) or (grey tile, why the file could not be read)."""
    try:
        img = load_image(path)
    except ImageError as e:
        return Image.new("RGB", (size, size), (128, 128, 128)), e.reason
    img.thumbnail((size, size))
    return img, None


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one small bitmap font
        return ImageFont.load_default()


def _fit(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont, width: int) -> str:
    """``text``, shortened in the middle with ``…`` until it is at most ``width`` pixels wide."""
    if draw.textlength(text, font=font) <= width:
        return text
    keep = len(text)
    while keep > 3:
        keep -= 1
        t = text[: (keep + 1) // 2] + "…" + text[len(text) - keep // 2:]
        if draw.textlength(t, font=font) <= width:
            return t
    return text[:3] + "…"


def hits_sheet(result: Dict[str, Any], size: int = 160, columns: int = COLUMNS) -> Image.Image:
    """One query's block: the query (outlined, captioned ``query`` and its name) at the left, its
    hits to the right in rows of at most ``columns``, each captioned ``#rank score`` and its name."""
    pad, line = 6, 15
    cap = 2 * line + 4
    font, bold = _font(12), _font(13)
    hits = result["hits"]
    cols = max(1, min(columns, len(hits)))
    rows = max(1, -(-len(hits) // cols))
    cell_w, cell_h = size + pad, size + cap + pad
    sheet = Image.new("RGB", (pad + (cols + 1) * cell_w + pad, pad + rows * cell_h), "white")
    draw = ImageDraw.Draw(sheet)

    def tile(path: str, x: int, y: int, first: str) -> Tuple[int, int, int, int]:
        t, why = _thumbnail(path, size)
        x0, y0 = x + (size - t.width) // 2, y + (size - t.height) // 2
        sheet.paste(t, (x0, y0))
        draw.text((x + 1, y + size + 2), _fit(draw, first, bold, size), fill=(0, 0, 0), font=bold)
        second = Path(path).name if why is None else f"{Path(path).name}: {why}"
        draw.text((x + 1, y + size + 2 + line), _fit(draw, second, font, size),
                  fill=(0, 0, 0) if why is None else (170, 0, 0), font=font)
        return x0, y0, x0 + t.width, y0 + t.height

    x0, y0, x1, y1 = tile(result["query"], pad, pad, "query")
    draw.rectangle([x0 - 3, y0 - 3, x1 + 2, y1 + 2], outline=(0, 90, 200), width=3)
    for j, h in enumerate(hits):
        x = pad + (1 + j % cols) * cell_w + pad
        y = pad + (j // cols) * cell_h
        tile(h["path"], x, y, f"#{h['rank']}  {h['score']:.3f}")
    return sheet


def write_hits_png(path: PathLike, results: Sequence[Dict[str, Any]], size: int = 160,
                   columns: int = COLUMNS) -> Path:
    """All queries' blocks (:func:`hits_sheet`) stacked into one PNG, a grey rule between them."""
    blocks = [hits_sheet(r, size, columns) for r in results]
    w = max(b.width for b in blocks)
    out = Image.new("RGB", (w, sum(b.height for b in blocks) + 3 * (len(blocks) - 1)), (200, 200, 200))
    y = 0
    for b in blocks:
        out.paste(Image.new("RGB", (w, b.height), "white"), (0, y))
        out.paste(b, (0, y))
        y += b.height + 3
    with atomic_path(path) as tmp:
        out.save(tmp, format="PNG")
    return Path(path)


def _data_uri(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def link(target: PathLike, page: PathLike) -> str:
    """The href from the HTML page ``page`` to the file ``target``: a relative URL when one exists
    (page and photos can move together), else a ``file://`` URI."""
    target, base = Path(target).absolute(), Path(page).absolute().parent
    try:
        return urllib.request.pathname2url(os.path.relpath(target, base))
    except ValueError:  # another drive (Windows)
        return target.as_uri()


def _figure(path: str, page: Path, size: int, caption: str, cls: str = "") -> str:
    t, why = _thumbnail(path, size)
    name = html.escape(Path(path).name)
    note = f"<br><span class='bad'>{html.escape(why)}</span>" if why else ""
    return (f"<figure class='{cls}'><a href='{html.escape(link(path, page))}' title='{html.escape(path)}'>"
            f"<img src='{_data_uri(t)}' alt='{name}'></a>"
            f"<figcaption>{caption}<br>{name}{note}</figcaption></figure>")


def write_hits_html(path: PathLike, results: Sequence[Dict[str, Any]], title: str = "gemseg search",
                    size: int = 160) -> Path:
    """A self-contained HTML page (thumbnails inlined): per query a section with the query and
    its hits, wrapping onto as many rows as the window needs; every thumbnail links to its
    original image and is captioned with rank, score and file name."""
    page = Path(path)
    parts: List[str] = [
        "<!doctype html><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;margin:1em}"
        "section{border-top:1px solid #ccc;padding-top:.5em;margin-bottom:1.5em}"
        "h2{font-size:15px;margin:.2em 0 .6em;word-break:break-all}"
        ".hits{display:flex;flex-wrap:wrap;gap:10px;align-items:flex-start}"
        f"figure{{margin:0;width:{size}px;text-align:center;font-size:12px;overflow-wrap:anywhere}}"
        f"figure img{{max-width:{size}px;max-height:{size}px;display:block;margin:0 auto}}"
        "figure.q img{outline:3px solid #06c}figcaption{margin-top:3px}"
        ".bad{color:#a00}a{color:inherit}</style>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    for r in results:
        parts.append(f"<section><h2>query: {html.escape(str(r['query']))} · {len(r['hits'])} hits</h2>"
                     "<div class='hits'>")
        parts.append(_figure(str(r["query"]), page, size, "<b>query</b>", "q"))
        for h in r["hits"]:
            parts.append(_figure(h["path"], page, size, f"<b>#{h['rank']}</b> · {h['score']:.3f}"))
        parts.append("</div></section>")
    with atomic_path(page) as tmp:
        Path(tmp).write_text("\n".join(parts))
    return page
