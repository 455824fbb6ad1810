"""retrieval.dedup.exact: equal bytes and equal pixels are exact; a re-encoding is not."""
from __future__ import annotations

import hashlib
import shutil

import numpy as np
from PIL import Image

from retrieval.dedup.exact import exact_groups, file_digest, pixel_digest


def test_exact_groups(tmp_path):
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (40, 50, 3)).astype(np.uint8))
    other = Image.fromarray(rng.integers(0, 255, (40, 50, 3)).astype(np.uint8))
    img.save(tmp_path / "a.png")
    shutil.copyfile(tmp_path / "a.png", tmp_path / "a_copy.png")  # same bytes
    img.save(tmp_path / "a.tiff")  # same pixels, other bytes
    img.save(tmp_path / "a.jpg", quality=95)  # lossy: not exact
    other.save(tmp_path / "b.png")
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    shutil.copyfile(tmp_path / "broken.jpg", tmp_path / "broken2.jpg")
    paths = [tmp_path / n for n in ("a.png", "a_copy.png", "a.tiff", "a.jpg", "b.png", "broken.jpg", "broken2.jpg")]
    assert exact_groups(paths) == [[0, 1, 2], [5, 6]]  # byte-equal broken files are still the same file
    assert file_digest(paths[0]) == hashlib.sha256(paths[0].read_bytes()).hexdigest()
    assert pixel_digest(paths[0]) == pixel_digest(paths[2]) != pixel_digest(paths[3])
    assert pixel_digest(paths[5]) is None
