"""retrieval.toy.photos: objects cut out of the scikit-image sample photos (and the one-line error
without scikit-image)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import read_array

from retrieval.core.errors import DataError
from retrieval.toy.collection import (
    make_retrieval_collection,
)
from retrieval.toy.coseg_sets import make_coseg_sets
from retrieval.toy.photos import photo_object_names

HAS_SKIMAGE = importlib.util.find_spec("skimage") is not None


def test_photos_need_scikit_image(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "skimage", None)
    monkeypatch.setitem(sys.modules, "skimage.data", None)
    with pytest.raises(DataError, match="pip install"):
        make_retrieval_collection(tmp_path / "p", source="photos")
    with pytest.raises(DataError, match="pip install"):
        make_coseg_sets(tmp_path / "p", source="photos")


@pytest.mark.skipif(not HAS_SKIMAGE, reason="scikit-image not installed")
def test_photo_sources(tmp_path: Path) -> None:
    c = make_retrieval_collection(tmp_path / "ph", n_objects=3, views=3, distractors=2, image_size=64, source="photos")
    assert c.object_names == photo_object_names()[:3] == ["cat_face", "coffee_cup", "rocket"]
    assert all(g["easy"] or g["hard"] for g in c.gnd)
    # the query's object pixels are the photo's: the cat is brownish-orange, the cup saucer red
    for name, check in (("cat_face", lambda m: m[0] > m[2]), ("coffee_cup", lambda m: m[0] > 1.5 * m[2])):
        q = c.query_paths[c.object_names.index(name)]
        img = read_array(q).astype(np.float32)
        mask = read_array(c.mask_path(q)) > 0
        assert mask.mean() > 0.15
        assert check(img[mask].mean(0))
    sets = make_coseg_sets(tmp_path / "pc", n_sets=2, images_per_set=2, image_size=64, source="photos")
    assert sets == ["cat_face", "coffee_cup"]
    for s in sets:
        for p in (tmp_path / "pc" / "images" / s).glob("*.jpg"):
            parts = read_array(tmp_path / "pc" / "parts" / s / f"{p.stem}.png")
            assert set(np.unique(parts).tolist()) == {0, 1, 2, 3}
    with pytest.raises(DataError, match="objects"):
        make_retrieval_collection(tmp_path / "big", n_objects=50, source="photos")
