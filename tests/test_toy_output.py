"""retrieval.toy.output: the output folder emptied (and refused when it holds someone else's
images), each image written with its mask and part map, the image size checked."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import read_array

from retrieval.core.errors import DataError
from retrieval.toy.output import _check_size, _prepare_root, _save


def test_images_are_written_with_their_mask_and_part_map(tmp_path):
    image = np.full((32, 32, 3), 120, np.uint8)
    labels = np.zeros((32, 32), np.uint8)
    labels[4:10, 4:20] = 2
    _save(tmp_path, "images/set00/a.jpg", image, labels)
    assert abs(int(read_array(tmp_path / "images/set00/a.jpg").astype(int).mean()) - 120) <= 2
    mask = read_array(tmp_path / "masks/set00/a.png")
    np.testing.assert_array_equal(mask, (labels > 0) * 255)
    np.testing.assert_array_equal(read_array(tmp_path / "parts/set00/a.png"), labels)
    _save(tmp_path, "queries/q.jpg", image, labels)  # no set folder: masks/q.png
    assert (tmp_path / "masks" / "q.png").is_file() and (tmp_path / "parts" / "q.png").is_file()


def test_the_root_is_emptied_only_when_a_toy_generator_made_it(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "old.jpg").write_bytes(b"x")
    (tmp_path / "gt.json").write_text("{}")  # the marker: ours
    _prepare_root(tmp_path, "gt.json")
    assert not (tmp_path / "images").exists() and not (tmp_path / "gt.json").exists()
    user = tmp_path / "user"
    (user / "images").mkdir(parents=True)
    (user / "images" / "holiday.jpg").write_bytes(b"precious")
    with pytest.raises(DataError, match="not from a toy generator"):
        _prepare_root(user, "gt.json")
    assert (user / "images" / "holiday.jpg").read_bytes() == b"precious"


def test_image_size_is_an_integer_of_at_least_32():
    _check_size(32)
    _check_size(np.int64(64))
    for bad in (31, 48.0, "64"):
        with pytest.raises(DataError, match="image_size must be an integer ≥ 32"):
            _check_size(bad)
