"""cosegment.annotations: ground truth on disk (iCoseg-style folders, masks, colour-coded part maps,
a flat folder of masks for a tool's --masks)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cosegment.annotations import find_annotation, load_coseg_folder, load_labels, load_mask
from retrieval.core.errors import DataError


def test_loaders(tmp_path):
    root = tmp_path / "ic"
    for s in ("a", "b"):
        (root / "images" / s).mkdir(parents=True)
        (root / "masks" / s).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(root / "images" / s / f"{s}{i}.jpg")
            m = np.zeros((6, 8), np.uint8)
            m[1:3, 2:5] = 255
            Image.fromarray(m).save(root / "masks" / s / f"{s}{i}.png")
    sets = load_coseg_folder(root)
    assert sorted(sets) == ["a", "b"] and len(sets["a"]) == 2
    it = sets["b"][1]
    assert it.stem == "b1" and it.mask == root / "masks" / "b" / "b1.png" and it.parts is None
    m = load_mask(it.mask)
    assert m.shape == (6, 8) and m.sum() == 6
    assert load_mask(it.mask, size=(16, 12)).sum() == 24
    # colour-coded part map: black = 0, distinct colours → 1..P in sorted colour order
    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[0, 0] = (255, 0, 0)
    rgb[1, 2] = (0, 0, 255)
    Image.fromarray(rgb).save(tmp_path / "p.png")
    np.testing.assert_array_equal(load_labels(tmp_path / "p.png"), [[2, 0, 0], [0, 0, 1]])
    # flat GT folder for a tool's --masks
    flat = tmp_path / "gt"
    flat.mkdir()
    Image.fromarray(np.zeros((2, 2), np.uint8)).save(flat / "a0.png")
    assert find_annotation(sets["a"][0].image, flat) == flat / "a0.png"
    assert find_annotation(sets["a"][1].image, flat) is None
    with pytest.raises(DataError, match="no images"):
        (tmp_path / "empty").mkdir()
        load_coseg_folder(tmp_path / "empty")
