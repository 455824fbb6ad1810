"""retrieval.toy.objects: the synthetic creatures: part maps and premultiplied colours that agree,
every part drawn, determinism from the generator."""
from __future__ import annotations

import numpy as np

from retrieval.toy.objects import _CREATURE_PARTS, ToyObject, _render_creature, _sample_creature


def test_a_creature_has_its_parts_painted_inside_its_mask():
    p = _sample_creature(np.random.default_rng(0), n_parts=4, varied=True)
    obj = _render_creature(p, 96, "creature0")
    assert isinstance(obj, ToyObject) and obj.name == "creature0" and obj.size == 96
    assert obj.part_names == list(_CREATURE_PARTS[:4])
    assert obj.rgb.shape == (96, 96, 3) and obj.rgb.dtype == np.uint8 and obj.labels.dtype == np.uint8
    assert set(np.unique(obj.labels).tolist()) == {0, 1, 2, 3, 4}  # background and every part
    assert not obj.rgb[obj.labels == 0].any()  # premultiplied: black outside the object
    assert 0.05 < obj.area_frac < 0.9
    cx, cy = obj.centroid
    ys, xs = np.nonzero(obj.labels)
    assert (cx, cy) == (xs.mean() + 0.5, ys.mean() + 0.5)
    assert obj.outline.shape[1] == 2 and obj.outline.min() >= 0 and obj.outline.max() <= 96


def test_creatures_are_deterministic_and_differ_by_seed():
    a = _render_creature(_sample_creature(np.random.default_rng(5), 3, True), 64, "a")
    b = _render_creature(_sample_creature(np.random.default_rng(5), 3, True), 64, "a")
    c = _render_creature(_sample_creature(np.random.default_rng(6), 3, True), 64, "a")
    np.testing.assert_array_equal(a.rgb, b.rgb)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.array_equal(a.labels, c.labels)
    many = _render_creature(_sample_creature(np.random.default_rng(1), 8, True), 64, "m")
    assert many.part_names[-2:] == ["spot1", "spot2"]  # past the named parts: spots
