"""What ``gemseg dedup`` writes for people: a CSV, an HTML page of the groups and a PNG contact sheet.

The page shows one section per group (its kind, the keeper outlined in green, each copy
captioned with its similarity to the keeper and why it is there); below a ``near`` group, a
folded "the matches that confirmed ..." shows, per verified copy, keeper and copy side by side
with a line per match. Thumbnails are inlined (one file to send around) and link to the originals.
The contact sheet has a row per group (wrapped after ``columns`` images). Files are written to a
temporary path and renamed.
"""
from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import List, Optional, Sequence, Union

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from retrieval.core.errors import ImageError
from retrieval.core.images import load_image
from retrieval.core.io import atomic_path, write_csv_atomic
from retrieval.dedup.finder import DedupResult, Group, Member
from retrieval.search.hit_pages import link, thumbnail

PathLike = Union[str, Path]
CSV_HEADER = ("group", "kind", "keep", "path", "score", "reason")
COLOURS = {"exact": (0, 110, 200), "near": (200, 90, 0), "similar": (120, 120, 120)}
#: Most match lines drawn per pair.
MAX_LINES = 60
#: Height (px) of a keeper | copy match picture on the page.
MATCH_HEIGHT = 140


def csv_rows(result: DedupResult) -> List[Sequence[object]]:
    """One row per image of every group: group number (from 0), kind, whether it is the keeper
    (1/0), path, similarity to the keeper, reason."""
    return [(g_no, g.kind, int(k == 0), m.path, f"{m.score:.4f}", m.reason)
            for g_no, g in enumerate(result.groups) for k, m in enumerate(g.members)]


def write_csv(path: PathLike, result: DedupResult) -> Path:
    """The groups as CSV (:data:`CSV_HEADER`, :func:`csv_rows`)."""
    write_csv_atomic(path, CSV_HEADER, csv_rows(result))
    return Path(path)


def _uri(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def matches_image(keeper: str, copy: str, matches: np.ndarray, height: int = 200) -> Optional[Image.Image]:
    """Keeper and copy side by side at ``height`` px, a line per match (at most :data:`MAX_LINES`,
    evenly chosen) of ``matches`` ((m, 4) float32 [xa, ya, xb, yb], original pixels, a in the
    keeper). None when either file cannot be read."""
    try:
        a, b = load_image(keeper), load_image(copy)
    except ImageError:
        return None
    sa, sb = height / a.height, height / b.height
    wa, wb = max(1, round(a.width * sa)), max(1, round(b.width * sb))
    out = Image.new("RGB", (wa + wb + 8, height), "white")
    out.paste(a.resize((wa, height)), (0, 0))
    out.paste(b.resize((wb, height)), (wa + 8, 0))
    draw = ImageDraw.Draw(out)
    m = np.asarray(matches, np.float32).reshape(-1, 4)
    if len(m) > MAX_LINES:
        m = m[np.linspace(0, len(m) - 1, MAX_LINES).round().astype(int)]
    for xa, ya, xb, yb in m.tolist():
        draw.line([(xa * sa, ya * sa), (wa + 8 + xb * sb, yb * sb)], fill=(0, 220, 0), width=1)
    return out


def _figure(m: Member, page: Path, size: int, keeper: bool) -> str:
    t = thumbnail(m.path, size)
    name = html.escape(Path(m.path).name)
    caption = "<b>keep</b>" if keeper else f"{m.score:.3f}"
    return (f"<figure class='{'keep' if keeper else ''}'><a href='{html.escape(link(m.path, page))}' "
            f"title='{html.escape(m.path)}'><img src='{_uri(t)}' alt='{name}'></a>"
            f"<figcaption>{caption} · {name}<br><small>{html.escape(m.reason)}</small></figcaption></figure>")


def _section(g_no: int, g: Group, page: Path, size: int) -> str:
    parts = [f"<section class='{g.kind}'><h2>group {g_no} · <span class='kind'>{g.kind}</span> · "
             f"{len(g.members)} images · keep {html.escape(Path(g.keep).name)}</h2><div class='imgs'>"]
    parts += [_figure(m, page, size, k == 0) for k, m in enumerate(g.members)]
    parts.append("</div>")
    shown = []
    for m in g.members[1:]:
        if m.matches is not None and len(m.matches):
            img = matches_image(g.keep, m.path, m.matches, height=MATCH_HEIGHT)
            if img is not None:
                shown.append(f"<figure class='matches'><img src='{_uri(img)}' alt='matches'><figcaption>"
                             f"{m.inliers} matches confirm {html.escape(Path(m.path).name)}</figcaption></figure>")
    if shown:
        parts.append(f"<details><summary>the matches that confirmed {len(shown)} near "
                     f"cop{'y' if len(shown) == 1 else 'ies'}</summary><div class='imgs'>{''.join(shown)}</div></details>")
    parts.append("</section>")
    return "".join(parts)


def write_html(path: PathLike, result: DedupResult, title: str = "gemseg dedup", size: int = 160) -> Path:
    """A self-contained HTML page of ``result``'s groups (see the module's docstring)."""
    page = Path(path)
    c = result.counts()
    t = result.thresholds
    head = [
        "<!doctype html><meta charset='utf-8'>", f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;margin:1em}section{border-top:1px solid #ccc;padding:.4em 0 1em}"
        "h2{font-size:15px;margin:.2em 0 .5em}.imgs{display:flex;flex-wrap:wrap;gap:10px;align-items:flex-start}"
        f"figure{{margin:0;width:{size}px;text-align:center;font-size:12px;overflow-wrap:anywhere}}"
        f"figure img{{max-width:{size}px;max-height:{size}px;display:block;margin:0 auto}}"
        "figure.keep img{outline:4px solid #1a1}figure.matches{width:auto}details{margin-top:.5em}"
        "figure.matches img{max-width:none;max-height:none}"
        ".exact .kind{color:#06c}.near .kind{color:#c50}.similar .kind{color:#777}a{color:inherit}</style>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p id='counts'>{c['images']} images · {c['groups']['exact']} exact, {c['groups']['near']} near, "
        f"{c['groups']['similar']} similar groups · {c['duplicates']} copies that could be moved aside · "
        f"thresholds near {t.near:g}, similar {t.similar:g} ({html.escape(t.source)})"
        f"{' · near pairs spatially verified' if result.verified else ''}</p>",
    ]
    if not result.groups:
        head.append("<p>No duplicates found.</p>")
    body = [_section(k, g, page, size) for k, g in enumerate(result.groups)]
    with atomic_path(page) as tmp:
        Path(tmp).write_text("\n".join(head + body))
    return page


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def write_png(path: PathLike, result: DedupResult, size: int = 128, columns: int = 8) -> Path:
    """A contact sheet: one block per group (a band in the kind's colour, then its images, the
    keeper outlined in green, each captioned with its similarity), wrapped after ``columns``."""
    font = _font(11)
    pad, cap = 6, 14
    cell_w, cell_h = size + pad, size + cap + pad
    blocks: List[Image.Image] = []
    for g_no, g in enumerate(result.groups or []):
        rows = (len(g.members) + columns - 1) // columns
        b = Image.new("RGB", (columns * cell_w + pad, 18 + rows * cell_h), "white")
        d = ImageDraw.Draw(b)
        d.rectangle([0, 0, b.width, 15], fill=COLOURS.get(g.kind, (0, 0, 0)))
        d.text((4, 2), f"group {g_no} · {g.kind} · {len(g.members)} images", fill="white", font=font)
        for k, m in enumerate(g.members):
            x, y = pad + (k % columns) * cell_w, 18 + (k // columns) * cell_h
            t = thumbnail(m.path, size)
            b.paste(t, (x + (size - t.width) // 2, y + (size - t.height) // 2))
            if k == 0:
                d.rectangle([x - 2, y - 2, x + size + 1, y + size + 1], outline=(20, 170, 20), width=3)
            d.text((x, y + size + 1), "keep" if k == 0 else f"{m.score:.3f}", fill="black", font=font)
        blocks.append(b)
    if not blocks:
        blocks = [Image.new("RGB", (columns * cell_w, 30), "white")]
        ImageDraw.Draw(blocks[0]).text((6, 8), "no duplicates found", fill="black", font=font)
    w = max(b.width for b in blocks)
    out = Image.new("RGB", (w, sum(b.height for b in blocks) + 4 * (len(blocks) - 1)), (210, 210, 210))
    y = 0
    for b in blocks:
        out.paste(b, (0, y))
        y += b.height + 4
    with atomic_path(path) as tmp:
        out.save(tmp, format="PNG")
    return Path(path)
