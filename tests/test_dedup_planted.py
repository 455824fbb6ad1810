"""retrieval.dedup.planted: the files are there and the truth follows from how they were made."""
from __future__ import annotations

import pytest

from retrieval.core.errors import DataError
from retrieval.dedup.edits import EDIT_KINDS
from retrieval.dedup.planted import edit_metrics, photo, prf, write_planted


def test_planted_truth(tmp_path):
    pytest.importorskip("skimage")
    p = write_planted(tmp_path, n_originals=2, n_distinct=1, kinds=("copy", "jpeg", "crop"), crops=(0.3,),
                      long_side=160)
    assert all((tmp_path / f).is_file() for f in p.files)
    assert len(p.files) == 2 + 1 + 2 * 3 + 2
    assert p.kind("orig_00_astronaut.jpg", "edit_00_copy.jpg") == "exact"
    assert p.kind("orig_00_astronaut.jpg", "edit_00_jpeg.jpg") == "near"
    assert p.kind("edit_00_jpeg.jpg", "edit_00_crop30.jpg") == "similar"  # a crop beyond 20 %
    assert p.kind("orig_00_astronaut.jpg", "orig_01_chelsea.jpg") is None
    assert p.kind("distinct_02_coffee.jpg", "orig_00_astronaut.jpg") is None
    assert p.edit_kind("orig_01_chelsea.jpg", "edit_01_crop.jpg") == "crop"
    assert 0.05 <= p.lost["edit_00_crop.jpg"] <= 0.3
    assert len(p.truth_pairs("exact")) == 2


def test_a_scene_twin_is_similar_not_a_copy(tmp_path):
    pytest.importorskip("skimage")
    p = write_planted(tmp_path, names=["motorcycle_left", "astronaut"], kinds=("jpeg",), long_side=120)
    assert p.kind("orig_00_motorcycle_left.jpg", "twin_00_motorcycle_right.jpg") == "similar"
    assert p.kind("edit_00_jpeg.jpg", "twin_00_motorcycle_right.jpg") == "similar"
    assert p.kind("orig_01_astronaut.jpg", "twin_00_motorcycle_right.jpg") is None
    assert photo("camera").shape[2] == 3 and set(EDIT_KINDS) >= {"copy", "crop"}


def test_bad_requests(tmp_path):
    with pytest.raises(DataError, match="unknown photo"):
        write_planted(tmp_path, names=["lena"])
    with pytest.raises(DataError, match="at most"):
        write_planted(tmp_path, n_originals=20, n_distinct=20)


def test_metrics_per_edit_kind(tmp_path):
    pytest.importorskip("skimage")
    p = write_planted(tmp_path, n_originals=2, n_distinct=1, kinds=("jpeg",), crops=(0.1, 0.3), long_side=96)
    o0, o1 = "orig_00_astronaut.jpg", "orig_01_chelsea.jpg"
    predicted = {tuple(sorted(x)) for x in [(o0, "edit_00_jpeg.jpg"), (o1, "edit_00_jpeg.jpg"),
                                            (o0, "edit_00_crop30.jpg")]}
    m = edit_metrics(p, predicted)
    assert m["jpeg"] == prf(1, 2, 2) == (0.5, 0.5, 0.5)
    assert m["crop>20%"] == prf(1, 1, 2)
    assert m["crop≤20%"] == (1.0, 0.0, 0.0)  # nothing predicted: precision 1 by convention, recall 0
    assert set(m) == {"jpeg", "crop≤20%", "crop>20%"}
