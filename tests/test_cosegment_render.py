"""cosegment.render: the pictures of a run: factor colours, overlays, the legend band, shrinking
pictures (and their masks) for looking."""
from __future__ import annotations

import numpy as np

from cosegment.render import add_legend, label_overlay, palette, shrink


def test_palette_is_distinct_fixed_colours_then_hues():
    p = palette(14)
    assert p.shape == (14, 3) and p.dtype == np.uint8
    assert len({tuple(c) for c in p.tolist()}) == 14
    np.testing.assert_array_equal(palette(3), p[:3])  # a prefix: factor j has one colour whatever k
    assert tuple(p[0]) == (230, 25, 75)


def test_the_legend_is_a_band_below_with_one_swatch_per_factor():
    image = np.zeros((40, 300, 3), np.uint8)
    out = add_legend(image, 3, object_factors=[1])
    assert out.shape[1] == 300 and out.shape[0] > 40 and out.dtype == np.uint8
    np.testing.assert_array_equal(out[:40], image)  # the picture itself is untouched
    band = out[40:].reshape(-1, 3).astype(int)
    for colour in palette(3):
        assert (np.abs(band - colour).sum(1) < 10).sum() > 20, colour


def test_label_overlay_keeps_the_background_and_colours_the_parts():
    image = np.full((4, 4, 3), 100, np.uint8)
    labels = np.zeros((4, 4), np.uint8)
    labels[:2, :2] = 2  # factor 1
    out = label_overlay(image, labels)
    np.testing.assert_array_equal(out[2:, 2:], image[2:, 2:])
    assert not np.array_equal(out[:2, :2], image[:2, :2])
    d_part = np.abs(out[0, 0].astype(int) - palette(2)[1]).sum()
    assert d_part < np.abs(image[0, 0].astype(int) - palette(2)[1]).sum()  # pulled towards factor 1's colour


def test_shrink_caps_the_long_side_and_keeps_masks_binary():
    image = np.random.default_rng(0).integers(0, 255, (200, 400, 3), dtype=np.uint8)
    mask = np.zeros((200, 400), bool)
    mask[50:150, 100:300] = True
    heat = np.random.default_rng(1).random((2, 200, 400)).astype(np.float32)
    small, m, h, scale = shrink(image, 100, mask, heat)
    assert small.shape == (50, 100, 3) and m.shape == (50, 100) and h.shape == (2, 50, 100) and scale == 0.25
    assert m.dtype == bool and m.sum() == 25 * 50 and h.dtype == np.float32
    same = shrink(image, 1000, mask)
    assert same[0] is image and same[1] is mask and same[2] == 1.0
