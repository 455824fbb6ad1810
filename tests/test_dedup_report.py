"""retrieval.dedup.report: the CSV reads back, the page links every image and shows the matches,
the contact sheet has a block per group."""
from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
from PIL import Image

from retrieval.dedup.finder import DedupResult, Group, Member
from retrieval.dedup.report import CSV_HEADER, matches_image, write_csv, write_html, write_png
from retrieval.dedup.thresholds import Thresholds


def _result(tmp_path: Path) -> DedupResult:
    for k, name in enumerate(["keep.jpg", "copy.jpg", "s1.jpg", "s2.jpg"]):
        Image.fromarray(np.full((60, 80, 3), 40 * k, np.uint8)).save(tmp_path / name)
    p = lambda n: str(tmp_path / n)  # noqa: E731
    matches = np.array([[10, 10, 5, 5], [70, 50, 35, 25]], np.float32)
    return DedupResult([Group("near", [Member(p("keep.jpg"), 1.0, "kept: largest resolution (80×60 vs 40×30)"),
                                       Member(p("copy.jpg"), 0.97, "near: similarity 0.970 to the keeper, 2 matches verified",
                                              2, matches)]),
                        Group("similar", [Member(p("s1.jpg"), 1.0, "kept: oldest"),
                                          Member(p("s2.jpg"), 0.8, "similar: similarity 0.800 to the keeper, not a copy")])],
                       4, Thresholds(), verified=True)


def test_csv(tmp_path):
    r = _result(tmp_path)
    rows = list(csv.reader((tmp_path / "g.csv").open())) if write_csv(tmp_path / "g.csv", r) else []
    assert tuple(rows[0]) == CSV_HEADER
    assert [(row[0], row[1], row[2], Path(row[3]).name) for row in rows[1:]] == [
        ("0", "near", "1", "keep.jpg"), ("0", "near", "0", "copy.jpg"), ("1", "similar", "1", "s1.jpg"),
        ("1", "similar", "0", "s2.jpg")]
    assert float(rows[2][4]) == 0.97


def test_html_links_every_image_and_shows_the_matches(tmp_path):
    page = write_html(tmp_path / "out" / "dups.html", _result(tmp_path))
    text = page.read_text()
    for name in ("keep.jpg", "copy.jpg", "s1.jpg", "s2.jpg"):
        assert f"href='../{name}'" in text
    assert text.count("<section") == 2 and "2 matches confirm copy.jpg" in text
    assert "near pairs spatially verified" in text and "1 copies that could be moved aside" in text
    assert len(re.findall(r"data:image/jpeg;base64,", text)) == 5  # 4 thumbnails + 1 match image


def test_match_lines_are_drawn(tmp_path):
    r = _result(tmp_path)
    g = r.groups[0]
    img = matches_image(g.keep, g.members[1].path, g.members[1].matches, height=120)
    a = np.asarray(img)
    assert img.height == 120 and img.width == 160 + 8 + 160  # both images scaled to 120 px high
    assert ((a[..., 1] > 200) & (a[..., 0] < 50)).sum() > 50  # green lines


def test_png_has_a_block_per_group(tmp_path):
    out = write_png(tmp_path / "sheet.png", _result(tmp_path), size=64, columns=4)
    with Image.open(out) as im:
        a = np.asarray(im.convert("RGB"))
    bands = [y for y in range(a.shape[0]) if tuple(a[y, 2]) in ((200, 90, 0), (120, 120, 120))]
    assert bands and a.shape[1] == 4 * 70 + 6
    empty = write_png(tmp_path / "none.png", DedupResult([], 3, Thresholds()))
    assert Image.open(empty).size[1] == 30
