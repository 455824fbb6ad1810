"""retrieval.core.images: decoding any image a user has, the never-raising dataset (listing
sources: tests/test_core_image_listing.py)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from retrieval.core import images as data
from retrieval.core.errors import ImageError
from retrieval.core.image_listing import scan_images
from retrieval.core.images import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageDataset,
    crop_box,
    load_image,
    resize_long_side,
    to_rgb,
    to_tensor,
)

W, H = 40, 24


def quadrants(w: int = W, h: int = H) -> np.ndarray:
    """(h, w, 3) uint8: four flat coloured quadrants, so any rotation or flip is visible."""
    a = np.zeros((h, w, 3), np.uint8)
    a[: h // 2, : w // 2] = (220, 30, 30)
    a[: h // 2, w // 2 :] = (30, 200, 40)
    a[h // 2 :, : w // 2] = (40, 40, 210)
    a[h // 2 :, w // 2 :] = (230, 220, 60)
    return a


def arr(img: Image.Image) -> np.ndarray:
    assert img.mode == "RGB"
    return np.asarray(img, dtype=np.int32)


def exif_with_orientation(o: int) -> Image.Exif:
    e = Image.Exif()
    e[0x0112] = o
    return e


# ------------------------------------------------------------------------------------------------
# load_image: formats and modes
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("orientation,k", [(6, 1), (8, -1), (3, 2)])
def test_exif_orientation_png_exact(tmp_path: Path, orientation: int, k: int) -> None:
    up = quadrants()
    # Stored pixels are the upright image turned the other way; the tag says how to turn it back.
    stored = np.ascontiguousarray(np.rot90(up, k=k))
    p = tmp_path / f"rot{orientation}.png"
    Image.fromarray(stored).save(p, exif=exif_with_orientation(orientation))
    got = arr(load_image(p))
    assert got.shape == up.shape
    np.testing.assert_array_equal(got, up)


@pytest.mark.parametrize("orientation,k", [(6, 1), (8, -1)])
def test_exif_orientation_jpeg_matches_upright(tmp_path: Path, orientation: int, k: int) -> None:
    up = quadrants()
    Image.fromarray(up).save(tmp_path / "up.jpg", quality=100, subsampling=0)
    stored = np.ascontiguousarray(np.rot90(up, k=k))
    Image.fromarray(stored).save(
        tmp_path / "rot.jpg", quality=100, subsampling=0, exif=exif_with_orientation(orientation)
    )
    a, b = arr(load_image(tmp_path / "up.jpg")), arr(load_image(tmp_path / "rot.jpg"))
    assert a.shape == b.shape == (H, W, 3)
    assert np.abs(a - b).mean() < 2.0 and np.abs(a - up).mean() < 2.0
    # the wrong turn (a 180-degree error) would be far off
    assert np.abs(b - np.rot90(up, 2)).mean() > 50


def test_rgb_formats_lossless(tmp_path: Path) -> None:
    up = quadrants()
    for name, kw in [("a.png", {}), ("a.bmp", {}), ("a.tif", {}), ("a.tiff", {"compression": "tiff_lzw"}),
                     ("a.webp", {"lossless": True})]:
        Image.fromarray(up).save(tmp_path / name, **kw)
        np.testing.assert_array_equal(arr(load_image(tmp_path / name)), up, err_msg=name)


def test_lossy_webp_and_jpeg(tmp_path: Path) -> None:
    up = quadrants()
    Image.fromarray(up).save(tmp_path / "a.webp", quality=95)
    Image.fromarray(up).save(tmp_path / "a.JPEG", quality=95)
    for name in ("a.webp", "a.JPEG"):
        got = arr(load_image(tmp_path / name))
        assert got.shape == up.shape and np.abs(got - up).mean() < 6, name


def test_cmyk_jpeg(tmp_path: Path) -> None:
    up = quadrants()
    cmyk = Image.fromarray(up).convert("CMYK")
    cmyk.save(tmp_path / "cmyk.jpg", quality=100)
    assert Image.open(tmp_path / "cmyk.jpg").mode == "CMYK"
    got = arr(load_image(tmp_path / "cmyk.jpg"))
    assert got.shape == up.shape
    assert np.abs(got - up).mean() < 4  # colours survive, not inverted


def test_16bit_png_scaled_not_clipped(tmp_path: Path) -> None:
    vals = np.array([0, 255, 256, 1000, 32768, 50000, 65535], np.uint16)
    a = np.tile(vals, (4, 1))
    p = tmp_path / "g16.png"
    Image.fromarray(a).save(p)
    assert Image.open(p).mode.startswith("I;16")
    got = arr(load_image(p))
    expect = np.rint(a.astype(np.float64) / 65535 * 255).astype(np.int32)
    for c in range(3):
        np.testing.assert_array_equal(got[..., c], expect)
    row = got[0, :, 0]
    assert row[-1] == 255 and row[4] == 128 and row[1] == 1  # 65535, 32768, 255
    assert np.all(np.diff(row) >= 0) and len(set(row[3:].tolist())) == 4  # not saturated


def test_16bit_tiff_and_32bit_int(tmp_path: Path) -> None:
    a16 = np.array([[0, 65535, 32768, 6553]], np.uint16)
    Image.fromarray(a16).save(tmp_path / "g16.tif")
    np.testing.assert_array_equal(arr(load_image(tmp_path / "g16.tif"))[0, :, 0], [0, 255, 128, 25])
    top = 2**31 - 1
    a32 = np.array([[0, top, top // 2 + 1, -5]], np.int32)
    Image.fromarray(a32).save(tmp_path / "g32.tif")
    assert Image.open(tmp_path / "g32.tif").mode == "I"
    np.testing.assert_array_equal(arr(load_image(tmp_path / "g32.tif"))[0, :, 0], [0, 255, 128, 0])
    # an "I" image with no declared depth whose values fit 16 bits is taken as 16-bit
    im = Image.fromarray(np.array([[0, 65535, 32768, 300]], np.int32))
    np.testing.assert_array_equal(arr(to_rgb(im))[0, :, 1], [0, 255, 128, 1])


def test_float_tiff(tmp_path: Path) -> None:
    unit = np.array([[0.0, 0.5, 1.0, 0.25]], np.float32)
    Image.fromarray(unit).save(tmp_path / "f.tif")
    assert Image.open(tmp_path / "f.tif").mode == "F"
    np.testing.assert_array_equal(arr(load_image(tmp_path / "f.tif"))[0, :, 2], [0, 128, 255, 64])
    big = np.array([[0.0, 2.0, 4.0, -1.0]], np.float32)  # max > 1: scaled by the max
    Image.fromarray(big).save(tmp_path / "f4.tiff")
    np.testing.assert_array_equal(arr(load_image(tmp_path / "f4.tiff"))[0, :, 0], [0, 128, 255, 0])


def test_rgba_transparent_on_white(tmp_path: Path) -> None:
    a = np.zeros((2, 3, 4), np.uint8)
    a[0, 0] = (255, 0, 0, 255)   # opaque red
    a[0, 1] = (255, 0, 0, 0)     # fully transparent red -> white
    a[0, 2] = (0, 0, 255, 128)   # half-transparent blue
    a[1, :] = (0, 0, 0, 0)       # transparent black -> white
    Image.fromarray(a, "RGBA").save(tmp_path / "rgba.png")
    got = arr(load_image(tmp_path / "rgba.png"))
    assert got[0, 0].tolist() == [255, 0, 0]
    assert got[0, 1].tolist() == [255, 255, 255]
    assert (got[1] == 255).all()
    expect = 255 * (1 - 128 / 255) + np.array([0, 0, 255]) * 128 / 255
    assert np.abs(got[0, 2] - expect).max() <= 1


def test_la_l_and_1bit(tmp_path: Path) -> None:
    la = np.zeros((2, 2, 2), np.uint8)
    la[0, 0] = (10, 255)
    la[0, 1] = (10, 0)
    la[1, :] = (200, 255)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    got = arr(load_image(tmp_path / "la.png"))
    assert got[0, 0].tolist() == [10, 10, 10] and got[0, 1].tolist() == [255, 255, 255]
    assert got[1, 1].tolist() == [200, 200, 200]

    g = np.arange(W * H, dtype=np.uint8).reshape(H, W)
    Image.fromarray(g, "L").save(tmp_path / "l.png")
    got = arr(load_image(tmp_path / "l.png"))
    for c in range(3):
        np.testing.assert_array_equal(got[..., c], g)

    b = Image.fromarray((np.indices((H, W)).sum(0) % 2 * 255).astype(np.uint8)).convert("1")
    b.save(tmp_path / "bits.bmp")
    assert Image.open(tmp_path / "bits.bmp").mode == "1"
    got = arr(load_image(tmp_path / "bits.bmp"))
    assert set(np.unique(got).tolist()) == {0, 255} and got[0, 1, 0] == 255 and got[0, 0, 0] == 0


def test_palette_with_and_without_transparency(tmp_path: Path) -> None:
    pal = [255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (256 * 3 - 9)
    idx = np.array([[0, 1, 2], [2, 1, 0]], np.uint8)
    im = Image.fromarray(idx, "P")
    im.putpalette(pal)
    im.save(tmp_path / "p.png")
    im.save(tmp_path / "pt.png", transparency=1)  # green is the transparent entry
    plain, transp = arr(load_image(tmp_path / "p.png")), arr(load_image(tmp_path / "pt.png"))
    assert plain[0, 1].tolist() == [0, 255, 0]
    assert transp[0, 1].tolist() == [255, 255, 255] and transp[1, 1].tolist() == [255, 255, 255]
    assert transp[0, 0].tolist() == [255, 0, 0] and transp[0, 2].tolist() == [0, 0, 255]
    # PA straight through to_rgb
    pa = Image.new("PA", (2, 1))
    pa.putpalette(pal)
    pa.putpixel((0, 0), (2, 255))
    pa.putpixel((1, 0), (2, 0))
    assert arr(to_rgb(pa)).tolist() == [[[0, 0, 255], [255, 255, 255]]]


# ------------------------------------------------------------------------------------------------
# load_image: bad input
# ------------------------------------------------------------------------------------------------
def _bad(path: Path, reason_part: str) -> ImageError:
    with pytest.raises(ImageError) as ei:
        load_image(path)
    e = ei.value
    assert str(path) in str(e) and e.path == str(path)
    assert reason_part in e.reason, e.reason
    assert "\n" not in str(e)
    return e


def test_bad_files(tmp_path: Path) -> None:
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    good = tmp_path / "good.jpg"
    Image.fromarray(noise).save(good, quality=95)
    raw = good.read_bytes()
    trunc = tmp_path / "trunc.jpg"
    trunc.write_bytes(raw[: len(raw) // 2])
    _bad(trunc, "truncated or corrupt image")

    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    _bad(empty, "empty file")

    text = tmp_path / "notes.jpg"
    text.write_text("this is not a picture\n")
    _bad(text, "not an image (cannot identify format)")

    _bad(tmp_path / "nope.png", "file not found")

    folder = tmp_path / "folder.jpg"
    folder.mkdir()
    _bad(folder, "folder")

    trunc_png = tmp_path / "trunc.png"
    buf = tmp_path / "full.png"
    Image.fromarray(noise).save(buf)
    trunc_png.write_bytes(buf.read_bytes()[:-200])
    _bad(trunc_png, "truncated or corrupt image")


def test_decompression_bomb_guard(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "big.png"
    Image.fromarray(quadrants()).save(p)
    monkeypatch.setattr(data, "MAX_IMAGE_PIXELS", W * H - 1)
    e = _bad(p, "too large")
    assert "decompression bomb" in e.reason
    monkeypatch.setattr(data, "MAX_IMAGE_PIXELS", W * H)
    assert load_image(p).size == (W, H)


def test_fast_jpeg_decode(tmp_path: Path) -> None:
    yy, xx = np.mgrid[0:256, 0:512]
    smooth = np.stack([xx / 2, yy, (xx + yy) / 3], -1).astype(np.uint8)
    p = tmp_path / "big.jpg"
    Image.fromarray(smooth).save(p, quality=95)
    full = load_image(p)
    draft = load_image(p, max_side=100)
    assert full.size == (512, 256)
    assert 100 <= max(draft.size) < 512 and draft.mode == "RGB"
    a = arr(resize_long_side(full, 100))
    b = arr(resize_long_side(draft, 100))
    assert a.shape == b.shape == (50, 100, 3) and np.abs(a - b).mean() < 3


# ------------------------------------------------------------------------------------------------
# resize / tensor
# ------------------------------------------------------------------------------------------------
def test_resize_long_side() -> None:
    im = Image.fromarray(quadrants())
    assert resize_long_side(im, None) is im and resize_long_side(im, 0) is im
    assert resize_long_side(im, -3) is im
    assert resize_long_side(im, 20).size == (20, 12)
    assert resize_long_side(im, 80).size == (80, 48)
    assert resize_long_side(im.transpose(Image.Transpose.ROTATE_90), 20).size == (12, 20)
    assert resize_long_side(Image.new("RGB", (300, 1)), 30).size == (30, 1)
    # antialiased: 1-pixel stripes shrunk 4x average to grey (point sampling would keep 0/255)
    stripes = np.zeros((8, 64, 3), np.uint8)
    stripes[:, ::2] = 255
    small = arr(resize_long_side(Image.fromarray(stripes), 16))
    assert np.abs(small - 127.5).max() < 20


def test_to_tensor_against_numpy() -> None:
    a = quadrants()
    t = to_tensor(Image.fromarray(a))
    assert t.shape == (3, H, W) and t.dtype == torch.float32 and t.is_contiguous()
    ref = (a.astype(np.float64) / 255 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    np.testing.assert_allclose(t.numpy(), ref.transpose(2, 0, 1), atol=1e-5)
    t2 = to_tensor(Image.fromarray(a), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    np.testing.assert_allclose(t2.numpy(), (a / 127.5 - 1).transpose(2, 0, 1), atol=1e-5)


# ------------------------------------------------------------------------------------------------
# ImageDataset
# ------------------------------------------------------------------------------------------------
Item = Tuple[int, Optional[torch.Tensor], Optional[str]]


def _collate(batch: List[Item]):
    good = [(i, x) for i, x, r in batch if x is not None]
    bad = [(i, r) for i, x, r in batch if x is None]
    return good, bad


def test_image_dataset(tmp_path: Path) -> None:
    up = quadrants()
    land = tmp_path / "land.png"
    Image.fromarray(up).save(land)
    port = tmp_path / "port.jpg"
    Image.fromarray(np.ascontiguousarray(np.rot90(up))).save(port, quality=95)
    bad = tmp_path / "bad.jpg"
    bad.write_text("nope")
    paths = [land, bad, port, tmp_path / "gone.png"]

    ds = ImageDataset(paths, image_size=20)
    assert len(ds) == 4 and ds.paths == paths
    i, x, r = ds[0]
    assert i == 0 and r is None and x.shape == (3, 12, 20) and x.dtype == torch.float32
    ref = to_tensor(resize_long_side(load_image(land), 20))
    torch.testing.assert_close(x, ref)
    i, x, r = ds[1]
    assert i == 1 and x is None and "not an image" in r
    assert ds[2][1].shape == (3, 20, 12)
    assert ds[3][1] is None and ds[3][2] == "file not found"

    half = ImageDataset(paths, image_size=20, scale=0.5)
    assert half[0][1].shape == (3, 6, 10)
    odd = ImageDataset(paths, image_size=33, scale=1 / np.sqrt(2))  # round(23.33) = 23
    assert max(odd[0][1].shape[1:]) == 23
    native = ImageDataset(paths, image_size=None)
    assert native[0][1].shape == (3, H, W)
    custom = ImageDataset(paths, image_size=20, mean=(0, 0, 0), std=(1, 1, 1))
    assert float(custom[0][1].min()) >= 0.0 and float(custom[0][1].max()) <= 1.0

    loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=0, collate_fn=_collate)
    goods, bads = [], []
    for g, b in loader:
        goods += g
        bads += b
    assert [i for i, _ in goods] == [0, 2] and [i for i, _ in bads] == [1, 3]
    assert [tuple(x.shape) for _, x in goods] == [(3, 12, 20), (3, 20, 12)]
    assert all(isinstance(r, str) and r for _, r in bads)


def test_dataset_never_raises_on_unexpected_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "a.png"
    Image.fromarray(quadrants()).save(p)

    def boom(*a, **k):
        raise RuntimeError("decoder exploded")

    monkeypatch.setattr(data, "to_tensor", boom)
    i, x, r = ImageDataset([p], image_size=16)[0]
    assert x is None and "RuntimeError" in r and "decoder exploded" in r


def test_crop_box_rounds_and_clips():
    img = Image.new("RGB", (40, 30))
    assert crop_box(img, (1.4, 2.6, 20.5, 10.2)).size == (20 - 1, 10 - 3)  # round(20.5) = 20
    assert crop_box(img, (-5, -5, 100, 100)).size == (40, 30)
    assert crop_box(img, (10, 10, 10, 20)).size == (40, 30)  # empty box: whole image
    assert crop_box(img, None) is img


def test_heic_photos_are_read_with_the_heif_extra(tmp_path):
    pytest.importorskip("pillow_heif")
    img = Image.fromarray(np.tile(np.arange(64, dtype=np.uint8)[None, :, None] * 4, (48, 1, 3)))
    img.save(tmp_path / "IMG_1.HEIC", format="HEIF", quality=95)
    listing = scan_images(tmp_path)
    assert [p.name for p in listing.paths] == ["IMG_1.HEIC"] and not listing.skipped
    back = np.asarray(load_image(tmp_path / "IMG_1.HEIC"), np.float32)
    assert back.shape == (48, 64, 3) and np.abs(back - np.asarray(img, np.float32)).mean() < 4
