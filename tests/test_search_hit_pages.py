"""retrieval.search.hit_pages: hit pages (PNG sheets and HTML) that stay readable at --top 50."""
from __future__ import annotations

from conftest import fifty_hits
from PIL import Image

from retrieval.search.hit_pages import write_hits_png


def test_hit_png_wraps_rows(tmp_path):
    results = fifty_hits(tmp_path)
    im = Image.open(write_hits_png(tmp_path / "hits.png", results, size=100))
    assert im.width <= 11 * 106 + 20 and im.height >= 5 * 100  # 10 per row after the query: 5 rows
    assert im.width < im.height * 3  # not one 50-tile strip
