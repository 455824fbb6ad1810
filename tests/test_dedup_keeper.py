"""retrieval.dedup.keeper: resolution, then compression, then age; JPEG quality read back."""
from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from retrieval.dedup.keeper import choose_keeper, file_facts, jpeg_quality, ranked


def _photo(seed: int = 0, size=(96, 64)) -> Image.Image:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (8, 12, 3)).astype(np.uint8)
    return Image.fromarray(base).resize(size, Image.BICUBIC)


@pytest.mark.parametrize("quality", [25, 50, 70, 85, 95])
def test_jpeg_quality_is_read_back_from_the_tables(tmp_path, quality):
    p = tmp_path / "q.jpg"
    _photo().save(p, "JPEG", quality=quality)
    with Image.open(p) as im:
        assert abs(jpeg_quality(im.quantization) - quality) <= 1.5


def test_largest_resolution_wins_then_least_compressed_then_oldest(tmp_path):
    img = _photo()
    big, small = tmp_path / "big.jpg", tmp_path / "small.png"
    img.resize((192, 128)).save(big, "JPEG", quality=60)
    img.save(small, "PNG")
    k, why = choose_keeper([file_facts(small), file_facts(big)])
    assert k == 1 and why.startswith("largest resolution (192×128")

    q90, q60, png = tmp_path / "a90.jpg", tmp_path / "a60.jpg", tmp_path / "a.png"
    img.save(q90, "JPEG", quality=90)
    img.save(q60, "JPEG", quality=60)
    img.save(png, "PNG")
    facts = [file_facts(q60), file_facts(q90), file_facts(png)]
    assert ranked(facts) == [2, 1, 0]
    assert "lossless PNG" in choose_keeper(facts)[1]
    k, why = choose_keeper(facts[:2])
    assert k == 1 and "quality ≈90 vs ≈60" in why

    old, new = tmp_path / "old.jpg", tmp_path / "new.jpg"
    img.save(old, "JPEG", quality=80)
    img.save(new, "JPEG", quality=80)
    os.utime(old, (1_500_000_000, 1_500_000_000))
    os.utime(new, (1_600_000_000, 1_600_000_000))
    k, why = choose_keeper([file_facts(new), file_facts(old)])
    assert k == 1 and "oldest" in why


def test_added_detail_does_not_beat_the_original(tmp_path):
    """A captioned copy has more bytes per pixel at the same quality: it must not win by them."""
    img = _photo(size=(200, 150))
    orig, captioned = tmp_path / "orig.jpg", tmp_path / "captioned.jpg"
    img.save(orig, "JPEG", quality=90)
    noisy = np.asarray(img).copy()
    noisy[100:130] = np.random.default_rng(0).integers(0, 255, noisy[100:130].shape)
    Image.fromarray(noisy).save(captioned, "JPEG", quality=90)
    os.utime(orig, (1_500_000_000, 1_500_000_000))
    assert file_facts(captioned).bytes > file_facts(orig).bytes
    assert choose_keeper([file_facts(captioned), file_facts(orig)])[0] == 1


def test_exif_rotation_counts_as_upright(tmp_path):
    p = tmp_path / "r.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    _photo(size=(96, 64)).save(p, "JPEG", exif=exif)
    f = file_facts(p)
    assert (f.width, f.height) == (64, 96)
