"""retrieval.toy.coseg_sets: co-segmentation sets in the iCoseg layout: images, masks, parts, varied
positions, determinism."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from conftest import read_array

from retrieval.toy.coseg_sets import make_coseg_sets


def test_coseg_sets(tmp_path: Path) -> None:
    root = tmp_path / "cs"
    sets = make_coseg_sets(root, n_sets=2, images_per_set=5, image_size=64, n_parts=4, seed=1)
    assert sets == ["set00", "set01"]
    doc = json.loads((root / "coseg.json").read_text())
    for s in sets:
        imgs = sorted((root / "images" / s).glob("*.jpg"))
        assert len(imgs) == 5 and doc["sets"][s]["part_names"] == ["body", "head", "legs", "tail"]
        centres, present = [], np.zeros(5, int)
        for p in imgs:
            img = read_array(p)
            mask = read_array(root / "masks" / s / f"{p.stem}.png")
            parts = read_array(root / "parts" / s / f"{p.stem}.png")
            assert img.shape == (64, 64, 3) and mask.shape == parts.shape == (64, 64)
            np.testing.assert_array_equal(parts > 0, mask > 0)
            assert 0.05 < (mask > 0).mean() < 0.6
            assert parts.max() <= 4
            present[np.unique(parts)] += 1
            ys, xs = np.nonzero(mask)
            centres.append((xs.mean(), ys.mean()))
        assert (present[1:] >= 4).all()  # every part in (almost) every image
        assert np.std(np.array(centres), axis=0).max() > 2.0  # varied positions
    # deterministic
    again = tmp_path / "again"
    make_coseg_sets(again, n_sets=2, images_per_set=5, image_size=64, n_parts=4, seed=1)
    assert (root / "images/set01/set01_03.jpg").read_bytes() == (again / "images/set01/set01_03.jpg").read_bytes()
