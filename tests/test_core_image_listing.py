"""retrieval.core.image_listing: one set of listing rules, streamed (iter_image_paths) or collected
with the files left out (scan_images, list_images); the same order and the same messages."""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Tuple

import pytest

from retrieval.core import images
from retrieval.core.errors import DataError
from retrieval.core.image_listing import ImageListing, iter_entries, iter_image_paths, list_images, scan_images
from retrieval.core.images import IMAGE_EXTENSIONS


def _touch_image(p: Path) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(b"x")  # listing looks at names only
    return p


def _reference_walk(root: Path) -> Tuple[List[Path], List[Tuple[str, str]]]:
    """The listing as it was written before (os.walk following links once, both lists sorted)."""
    out, skipped, seen = [], [], set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in filenames:
            if f.startswith("."):
                continue
            if os.path.splitext(f)[1].lower() in images.IMAGE_EXTENSIONS:
                out.append(Path(dirpath) / f)
            else:
                skipped.append((str(Path(dirpath) / f), images.unsupported_reason(f)))
    return sorted(out), sorted(skipped)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """Names whose path order and string order differ (``a-b`` < ``a/`` as strings, not as paths),
    upper case, hidden entries, a symlinked folder and a symlink loop."""
    root = tmp_path / "photos"
    for rel in ["a.jpg", "a/z.png", "a/b/c.JPG", "a-b.jpg", "a-b/x.txt", "a/notes.txt", "A/q.webp", "é/ü.jpeg",
                "b/raw.CR2", "b/noext", "b/c.heic.bak", ".hidden/h.jpg", "b/.x.jpg", "zz.tif"]:
        _touch_image(root / rel)
    (root / "link").symlink_to(root / "a", target_is_directory=True)  # a folder reached twice
    (root / "a" / "b" / "loop").symlink_to(root, target_is_directory=True)  # a symlink loop
    return root


def test_folder_listing_matches_the_reference_streamed_and_collected(tree):
    ref_paths, ref_skipped = _reference_walk(tree)
    listing = scan_images(tree)
    assert isinstance(listing, ImageListing)
    assert listing.paths == ref_paths and listing.skipped == ref_skipped
    assert list_images(tree) == ref_paths == list_images(str(tree))
    assert list(iter_image_paths(tree)) == [str(p) for p in ref_paths]
    names = [p.relative_to(tree).as_posix() for p in ref_paths]
    assert names == ["A/q.webp", "a/b/c.JPG", "a/z.png", "a-b.jpg", "a.jpg", "zz.tif", "é/ü.jpeg"]
    why = dict(listing.skipped)
    assert why[str(tree / "b" / "noext")] == "no file extension (not taken for an image)"
    assert why[str(tree / "b" / "raw.CR2")].startswith("unsupported format .cr2 (a camera raw file")
    assert all(".hidden" not in p and "/.x" not in p for p, _ in listing.skipped)
    # every file once, images and left-out files together, in path order
    entries = list(iter_entries(tree))
    assert [p for p, r in entries if r is None] == [str(p) for p in ref_paths]
    assert sorted((p, r) for p, r in entries if r is not None) == ref_skipped


def test_a_list_is_streamed_line_by_line(tmp_path):
    lists = tmp_path / "lists"
    lists.mkdir()
    txt = lists / "q.txt"
    txt.write_bytes(b"\xef\xbb\xbf# comment\r\n\r\nimgs/a.jpg\r\n  ../b.png  \n  # indented\n/abs/c.jpg\n")
    want = [str(lists / "imgs/a.jpg"), str(lists / "../b.png"), "/abs/c.jpg"]
    assert list(iter_image_paths(txt)) == want
    assert list_images(txt) == [Path(p) for p in want] and scan_images(txt).skipped == []
    # streamed: the first paths come before the rest of the file is read (here: is found broken)
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"x.jpg\n" * 20000 + b"\xff\xfe broken\n")
    it = iter_image_paths(bad)
    assert next(it) == str(tmp_path / "x.jpg")
    with pytest.raises(DataError, match="not a UTF-8 text file of image paths"):
        list(it)
    with pytest.raises(DataError, match="not a UTF-8 text file"):
        list_images(bad)


def test_the_same_one_line_messages_streamed_and_collected(tmp_path, monkeypatch):
    monkeypatch.setattr(images, "IMAGE_EXTENSIONS",  # as without the heif extra
                        tuple(e for e in images.IMAGE_EXTENSIONS if e not in images.HEIF_EXTENSIONS))
    empty = tmp_path / "empty"
    _touch_image(empty / "IMG_1.HEIC")
    _touch_image(empty / "sub" / "IMG_2.heic")
    _touch_image(empty / "readme.md")
    blank = tmp_path / "blank.txt"
    blank.write_text("# nothing\n\n")
    other = _touch_image(tmp_path / "table.csv")
    exts = ", ".join(images.IMAGE_EXTENSIONS)
    cases = {
        empty: (f"{empty}: no images found in this folder or below (looked for {exts}); left out: 2 .heic, 1 .md "
                "(install the heif extra: pip install 'gemseg[heif]')"),
        blank: f"{blank}: the list names no image paths",
        other: f"{other}: not a folder, a .txt list of image paths or an image file ({exts})",
        tmp_path / "missing": f"{tmp_path / 'missing'}: not found",
    }
    for src, msg in cases.items():
        for listing in (list_images, scan_images, lambda s: list(iter_image_paths(s))):
            with pytest.raises(DataError) as e:
                listing(src)
            assert str(e.value) == msg
    one = _touch_image(tmp_path / "one.PNG")
    assert list_images(one) == [one] and list(iter_image_paths(one)) == [str(one)]
    assert [p.name for p in list_images(tmp_path)] == ["one.PNG"]  # the .heic files below are left out


# ------------------------------------------------------------------------------------------------
# list_images (moved from tests/test_data.py)
# ------------------------------------------------------------------------------------------------
def test_list_images_folder(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    expect = sorted(
        _touch_image(root / rel)
        for rel in ["a.jpg", "b/c.JPG", "b/d/e.Jpeg", "b/f.png", "g.WEBP", "h.tif", "i.TIFF", "j.bmp"]
    )
    for rel in ["notes.txt", "b/data.csv", "b/d/raw.cr2", ".hidden/k.jpg", "b/.l.jpg", "m.jpg.bak"]:
        _touch_image(root / rel)
    got = list_images(root)
    assert got == expect
    assert all(isinstance(p, Path) for p in got)
    assert list_images(str(root)) == expect
    assert {e for e in IMAGE_EXTENSIONS} >= {".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp"}


def test_list_images_txt(tmp_path: Path) -> None:
    lists = tmp_path / "lists"
    lists.mkdir()
    abs_img = _touch_image(tmp_path / "elsewhere" / "z.jpg")
    txt = lists / "query.txt"
    txt.write_bytes(
        b"# my queries\r\n\r\nimgs/a.jpg\r\n  ../other/b.png  \r\n   # indented comment\n"
        + str(abs_img).encode()
        + b"\n\n"
    )
    assert list_images(txt) == [lists / "imgs" / "a.jpg", lists / "../other/b.png", abs_img]
    blank = tmp_path / "blank.txt"
    blank.write_text("# nothing\n\n")
    with pytest.raises(DataError, match="no image paths"):
        list_images(blank)


def test_list_images_errors_and_single_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty_folder"
    (empty / "sub").mkdir(parents=True)
    (empty / "readme.md").write_text("hi")
    with pytest.raises(DataError) as ei:
        list_images(empty)
    msg = str(ei.value)
    assert str(empty) in msg and ".jpg" in msg and ".png" in msg and "\n" not in msg
    with pytest.raises(DataError, match="not found") as ei:
        list_images(tmp_path / "missing")
    assert str(tmp_path / "missing") in str(ei.value)
    one = _touch_image(tmp_path / "one.PNG")
    assert list_images(one) == [one]
    other = tmp_path / "table.csv"
    other.write_text("a,b\n")
    with pytest.raises(DataError, match="not a folder"):
        list_images(other)


def test_streamed_listing_has_list_images_order(tmp_path):
    for name in ["b/x.jpg", "a.jpg", "a/z.png", "a/b/c.JPG", "a-b.jpg", ".hidden/h.jpg", "c.txt"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    assert list(iter_image_paths(tmp_path)) == [str(p) for p in list_images(tmp_path)]
    lst = tmp_path / "list.txt"
    lst.write_text("# comment\nb/x.jpg\n\n/abs/y.jpg\n")
    assert list(iter_image_paths(lst)) == [str(tmp_path / "b/x.jpg"), "/abs/y.jpg"]
