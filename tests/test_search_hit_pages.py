"""retrieval.search.hit_pages: hit pages (PNG sheets and HTML) that stay readable at --top 50, write
any file name, and show the query's box."""
from __future__ import annotations

import base64
import io
import re

import numpy as np
from conftest import fifty_hits
from PIL import Image

from retrieval.core.fonts import fallback_font_files
from retrieval.search.hit_pages import BOX_COLOUR, hits_sheet, write_hits_html, write_hits_png
from retrieval.search.query import Records


def test_hit_png_wraps_rows(tmp_path):
    results = fifty_hits(tmp_path)
    im = Image.open(write_hits_png(tmp_path / "hits.png", results, size=100))
    assert im.width <= 11 * 106 + 20 and im.height >= 5 * 100  # 10 per row after the query: 5 rows
    assert im.width < im.height * 3  # not one 50-tile strip


def _photo(path, seed=0, size=(60, 80)):
    rng = np.random.default_rng(seed)
    Image.fromarray((rng.random((*size, 3)) * 60 + 90).astype(np.uint8)).save(path)
    return path


def test_captions_write_accented_and_japanese_names(tmp_path):
    """Before issue 27 both sheets were the same: é, û (and 森, 道) drawn as Pillow's missing-glyph box."""
    pairs = [("Plage d'été.jpg", "Plage d'ûtû.jpg")]
    if fallback_font_files():
        pairs.append(("森の道.jpg", "道の森.jpg"))
    for a, b in pairs:
        sheets = []
        for name in (a, b):
            p = _photo(tmp_path / name)
            sheets.append(np.asarray(hits_sheet({"query": str(p), "hits": [{"rank": 1, "score": 0.5, "path": str(p)}]},
                                                size=100)))
        assert sheets[0].shape == sheets[1].shape and not np.array_equal(sheets[0], sheets[1]), a


def _orange(a: np.ndarray) -> np.ndarray:
    return (np.abs(a.astype(int) - np.array(BOX_COLOUR)).sum(-1) < 40)


def test_the_query_box_is_drawn_on_its_tile_in_the_png_and_the_html(tmp_path):
    """Before issue 27 the hit pages showed the query without its box."""
    q = _photo(tmp_path / "q.jpg", size=(100, 200))  # 200 x 100: the thumbnail (100 px) halves it
    res = [{"query": str(q), "hits": [{"rank": 1, "score": 0.9, "path": str(q)}]}]
    box = (40, 20, 120, 80)
    plain = np.asarray(hits_sheet(res[0], size=100))
    boxed = np.asarray(hits_sheet(res[0], size=100, box=box))
    assert not _orange(plain).any()
    ys, xs = np.nonzero(_orange(boxed))
    assert xs.max() < 6 + 100 + 6  # only on the query's tile, not the hit's (the same file)
    x0, y0 = 6, 6 + (100 - 50) // 2  # where the thumbnail is pasted
    assert abs((xs.min() - x0) - 20) <= 1 and abs((xs.max() - x0) - 59) <= 1  # x 40…120 → 20…60 in the tile
    assert abs((ys.min() - y0) - 10) <= 1 and abs((ys.max() - y0) - 39) <= 1
    records = Records(res, boxes=[box])  # what run_search returns: boxes ride along
    png = np.asarray(Image.open(write_hits_png(tmp_path / "h.png", records, size=100)).convert("RGB"))
    assert _orange(png).sum() == _orange(boxed).sum()
    page = write_hits_html(tmp_path / "h.html", records, size=100).read_text()
    uris = re.findall(r"src='data:image/jpeg;base64,([^']+)'", page)
    first, second = (np.asarray(Image.open(io.BytesIO(base64.b64decode(u))).convert("RGB")) for u in uris)
    diff = np.abs(first.astype(int) - second.astype(int)).sum(-1) > 60  # the same file, but for the box
    ys, xs = np.nonzero(diff)
    assert diff.sum() > 50 and xs.min() >= 20 - 3 and xs.max() <= 60 + 3 and ys.min() >= 10 - 3 and ys.max() <= 40 + 3
    assert "box 40,20,120,80" in page
