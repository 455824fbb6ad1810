"""retrieval.toy.photo_views: 16 real-photo classes, views that depend only on their number (and seed)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from retrieval.toy.photo_views import PHOTOS, photo_views

pytest.importorskip("skimage.data")


@pytest.mark.slow
def test_a_view_is_the_same_whatever_range_asks_for_it_and_the_seed_changes_it(tmp_path):
    a = photo_views(tmp_path / "a", range(2), size=48)
    b = photo_views(tmp_path / "b", [1], size=48)
    c = photo_views(tmp_path / "c", [1], size=48, seed=7)
    classes = sorted(p.name for p in a.iterdir())
    assert classes == sorted(f"{n}_{h}" for n in PHOTOS for h in range(2))
    one = np.asarray(Image.open(a / classes[0] / "v1.jpg"))
    assert max(one.shape[:2]) == 48
    np.testing.assert_array_equal(one, np.asarray(Image.open(b / classes[0] / "v1.jpg")))
    other = np.asarray(Image.open(c / classes[0] / "v1.jpg"))
    assert one.shape != other.shape or not np.array_equal(one, other)
    zero = np.asarray(Image.open(a / classes[0] / "v0.jpg"))
    assert zero.shape != one.shape or not np.array_equal(zero, one)  # two views of a class differ
