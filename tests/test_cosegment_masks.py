"""cosegment.masks: Otsu's threshold, object masks from heat maps, boxes and part label maps."""
from __future__ import annotations

import numpy as np
import pytest

from cosegment.masks import boxes_from_masks, object_masks, otsu_threshold, part_labels
from retrieval.core.errors import DataError


def test_otsu_threshold_matches_exhaustive_search():
    rng = np.random.default_rng(0)
    v = np.clip(np.concatenate([rng.normal(0.2, 0.05, 3000), rng.normal(0.7, 0.08, 1000)]), 0, 1)
    t = otsu_threshold(v)
    # brute force over the same candidate thresholds: maximise between-class variance
    cands = np.linspace(0, 1, 257)[1:-1]
    def between(c):
        a, b = v[v <= c], v[v > c]
        return len(a) * len(b) * (a.mean() - b.mean()) ** 2 if len(a) and len(b) else -1
    best = cands[int(np.argmax([between(c) for c in cands]))]
    assert abs(t - best) <= 1 / 256 + 1e-9
    assert 0.3 < t < 0.6


def test_masks_boxes_and_parts():
    heat = [np.zeros((2, 10, 10), np.float32)]
    heat[0][1, 2:5, 3:8] = 0.9
    heat[0][0, 2:5, 3:5] = 0.95
    masks, t = object_masks(heat, 1, 0.5)
    assert t == 0.5 and masks[0].sum() == 15
    assert boxes_from_masks(masks) == [(3, 2, 8, 5)]
    lab = part_labels(heat, masks)[0]
    assert lab.dtype == np.uint8 and set(np.unique(lab)) == {0, 1, 2}
    assert (lab[2:5, 3:5] == 1).all() and (lab[2:5, 5:8] == 2).all() and lab.sum() == 6 + 9 * 2
    with pytest.raises(DataError):
        object_masks(heat, 1, "median")
