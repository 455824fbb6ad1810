"""Results people look at, as files: a contact-sheet PNG and a small self-contained HTML page.

Both stay readable with many hits (``--top 50``): each query is a block that starts with the query
(outlined in blue) and wraps its hits into rows of at most ``columns`` thumbnails, each captioned
with its rank, score and file name. The HTML inlines its thumbnails (one file to send around) and
links each one to the original image (a path relative to the page, so the page and the photos can
move together; a ``file://`` URI when no relative path exists). A hit whose file cannot be read is
a grey tile captioned with the reason. A query's box is drawn on its thumbnail (orange, dark edge).
Captions are written in a TrueType font that has their characters (:mod:`retrieval.core.fonts`).
"""
from __future__ import annotations

import base64
import html
import io
import os
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from PIL import Image, ImageDraw

from retrieval.core.errors import ImageError
from retrieval.core.fonts import face
from retrieval.core.images import load_image
from retrieval.core.io import atomic_path

PathLike = Union[str, Path]
Box = Optional[Sequence[float]]

#: Thumbnails per row of a contact sheet (after the query).
COLUMNS = 10


#: colour of a query's box drawn on its thumbnail (and the dark edge around it)
BOX_COLOUR, BOX_EDGE = (255, 170, 0), (0, 0, 0)


def thumbnail(path: PathLike, size: int = 160, box: Box = None) -> Image.Image:
    """RGB thumbnail whose long side is ``size``, with ``box`` (x1, y1, x2, y2 pixels of the image)
    drawn on it; a grey tile when the file cannot be read."""
    return _thumbnail(path, size, box)[0]


def draw_box(img: Image.Image, box: Sequence[float], scale: float) -> None:
    """Draw ``box`` (pixels of the original image) on ``img``, a copy of it scaled by ``scale``:
    an orange frame with a dark edge inside and out, so it shows on light and dark photos."""
    x1, y1, x2, y2 = (float(v) * scale for v in box)
    d = ImageDraw.Draw(img)
    w = max(2, round(min(img.size) / 60))
    d.rectangle([x1 - 1, y1 - 1, x2, y2], outline=BOX_EDGE, width=w + 2)
    d.rectangle([x1, y1, x2 - 1, y2 - 1], outline=BOX_COLOUR, width=w)


def _thumbnail(path: PathLike, size: int, box: Box = None) -> Tuple[Image.Image, Optional[str]]:
    """(thumbnail with ``box`` drawn, None) or (grey tile, why the file could not be read)."""
    try:
        img = load_image(path)
    except ImageError as e:
        return Image.new("RGB", (size, size), (128, 128, 128)), e.reason
    w = img.width
    img.thumbnail((size, size))
    if box is not None:
        draw_box(img, box, img.width / w)
    return img, None


def hits_sheet(result: Dict[str, Any], size: int = 160, columns: int = COLUMNS, box: Box = None) -> Image.Image:
    """One query's block: the query (outlined, ``box`` drawn on it, captioned ``query`` and its
    name) at the left, its hits to the right in rows of at most ``columns``, each captioned
    ``#rank score`` and its name (in a font that has its characters: :mod:`retrieval.core.fonts`)."""
    pad, line = 6, 15
    cap = 2 * line + 4
    font, bold = face(12), face(13, bold=True)
    hits = result["hits"]
    cols = max(1, min(columns, len(hits)))
    rows = max(1, -(-len(hits) // cols))
    cell_w, cell_h = size + pad, size + cap + pad
    sheet = Image.new("RGB", (pad + (cols + 1) * cell_w + pad, pad + rows * cell_h), "white")
    draw = ImageDraw.Draw(sheet)

    def tile(path: str, x: int, y: int, first: str, box: Box = None) -> Tuple[int, int, int, int]:
        t, why = _thumbnail(path, size, box)
        x0, y0 = x + (size - t.width) // 2, y + (size - t.height) // 2
        sheet.paste(t, (x0, y0))
        bold.draw(draw, (x + 1, y + size + 2), bold.fit(first, size))
        second = Path(path).name if why is None else f"{Path(path).name}: {why}"
        font.draw(draw, (x + 1, y + size + 2 + line), font.fit(second, size),
                  fill=(0, 0, 0) if why is None else (170, 0, 0))
        return x0, y0, x0 + t.width, y0 + t.height

    x0, y0, x1, y1 = tile(result["query"], pad, pad, "query" if box is None else "query (box)", box)
    draw.rectangle([x0 - 3, y0 - 3, x1 + 2, y1 + 2], outline=(0, 90, 200), width=3)
    for j, h in enumerate(hits):
        x = pad + (1 + j % cols) * cell_w + pad
        y = pad + (j // cols) * cell_h
        tile(h["path"], x, y, f"#{h['rank']}  {h['score']:.3f}")
    return sheet


def _boxes(results: Sequence[Dict[str, Any]], boxes: Optional[Sequence[Box]]) -> List[Box]:
    """One box (or None) per result: ``boxes``, else the results' own (``Records.boxes``)."""
    if boxes is None:
        boxes = getattr(results, "boxes", None)
    return list(boxes) if boxes is not None else [None] * len(results)


def write_hits_png(path: PathLike, results: Sequence[Dict[str, Any]], size: int = 160,
                   columns: int = COLUMNS, boxes: Optional[Sequence[Box]] = None) -> Path:
    """All queries' blocks (:func:`hits_sheet`) stacked into one PNG, a grey rule between them;
    ``boxes``: each query's box, drawn on its tile (default: ``results.boxes`` when it has them)."""
    blocks = [hits_sheet(r, size, columns, b) for r, b in zip(results, _boxes(results, boxes))]
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


def _figure(path: str, page: Path, size: int, caption: str, cls: str = "", box: Box = None) -> str:
    t, why = _thumbnail(path, size, box)
    name = html.escape(Path(path).name)
    note = f"<br><span class='bad'>{html.escape(why)}</span>" if why else ""
    return (f"<figure class='{cls}'><a href='{html.escape(link(path, page))}' title='{html.escape(path)}'>"
            f"<img src='{_data_uri(t)}' alt='{name}'></a>"
            f"<figcaption>{caption}<br>{name}{note}</figcaption></figure>")


def write_hits_html(path: PathLike, results: Sequence[Dict[str, Any]], title: str = "gemseg search",
                    size: int = 160, boxes: Optional[Sequence[Box]] = None) -> Path:
    """A self-contained HTML page (thumbnails inlined): per query a section with the query (its
    box drawn on it: ``boxes``, default ``results.boxes``) and its hits, wrapping onto as many
    rows as the window needs; every thumbnail links to its original image and is captioned with
    rank, score and file name."""
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
    for r, box in zip(results, _boxes(results, boxes)):
        shown = "" if box is None else " · box " + ",".join(f"{float(v):g}" for v in box)
        parts.append(f"<section><h2>query: {html.escape(str(r['query']))}{shown} · {len(r['hits'])} hits</h2>"
                     "<div class='hits'>")
        parts.append(_figure(str(r["query"]), page, size, "<b>query</b>", "q", box))
        for h in r["hits"]:
            parts.append(_figure(h["path"], page, size, f"<b>#{h['rank']}</b> · {h['score']:.3f}"))
        parts.append("</div></section>")
    with atomic_path(page) as tmp:
        Path(tmp).write_text("\n".join(parts))
    return page
