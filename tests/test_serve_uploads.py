"""retrieval.serve.uploads: an upload decoded from its bytes as a file on disk is (EXIF rotation, any
mode → RGB), bombs refused from the header; safe display names; boxes checked against the image."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from retrieval.core.errors import ImageError
from retrieval.core.images import load_image
from retrieval.serve.errors import BadParameterError
from retrieval.serve.uploads import decode_upload, parse_box, upload_name


def _png_bytes(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", **kw)
    return buf.getvalue()


def test_an_upload_decodes_as_the_same_file_on_disk(tmp_path):
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (12, 20), dtype=np.uint8), "L")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned: shown upright
    data = _png_bytes(img, exif=exif)
    (tmp_path / "f.png").write_bytes(data)
    up = decode_upload(data, "f.png", max_pixels=10_000)
    assert up.mode == "RGB" and up.size == (12, 20)
    np.testing.assert_array_equal(np.asarray(up), np.asarray(load_image(tmp_path / "f.png")))


@pytest.mark.parametrize("data, needle", [(b"", "empty upload"), (b"GIF89a but not really", "not an image")])
def test_what_is_not_an_image_is_refused(data, needle):
    with pytest.raises(ImageError, match=needle):
        decode_upload(data, "x.jpg", max_pixels=10_000)


def test_too_many_pixels_are_refused_before_decoding():
    data = _png_bytes(Image.new("RGB", (40, 30)))
    assert decode_upload(data, "ok.png", max_pixels=1200).size == (40, 30)
    with pytest.raises(ImageError, match="40x30 = 1200 pixels exceeds the server's limit of 1199"):
        decode_upload(data, "big.png", max_pixels=1199)


def test_display_names_are_base_names_printable_and_short():
    assert upload_name("C:\\Users\\me\\holiday.jpg") == "holiday.jpg"
    assert upload_name("../../etc/passwd") == "passwd"
    assert upload_name("a\x00b\nc.png") == "abc.png"
    assert upload_name(None) == upload_name("") == upload_name("dir/") == "upload"
    assert len(upload_name("x" * 200)) == 80


def test_boxes_lie_inside_the_image_and_hold_a_pixel():
    assert parse_box(None, (64, 48)) is None and parse_box("  ", (64, 48)) is None
    assert parse_box("0,0,64,48", (64, 48)) == (0.0, 0.0, 64.0, 48.0)
    assert parse_box("1.5,2,10,20", (64, 48)) == (1.5, 2.0, 10.0, 20.0)
    for bad, needle in (("1,2,3", "four numbers"), ("1,1,nan,9", "four numbers"), ("0,0,65,10", "not inside"),
                        ("10,10,5,20", "not inside"), ("1,1,1.2,9", "holds no whole pixel")):
        with pytest.raises(BadParameterError, match=needle):
            parse_box(bad, (64, 48))
