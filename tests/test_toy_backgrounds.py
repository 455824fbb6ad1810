"""retrieval.toy.backgrounds: backgrounds with clutter (busier with ``busy``), deterministic from the
generator; shapes pasted with their alpha."""
from __future__ import annotations

import numpy as np

from retrieval.toy.backgrounds import _background, _paste_shape
from retrieval.toy.geometry import _rect_poly


def _edges(img):
    g = img.mean(2)
    return float(np.abs(np.diff(g, axis=0)).mean() + np.abs(np.diff(g, axis=1)).mean())


def test_backgrounds_are_rgb_in_unit_range_deterministic_and_busier_with_clutter():
    a = _background(np.random.default_rng(2), 64, busy=0.5, photos=False)
    b = _background(np.random.default_rng(2), 64, busy=0.5, photos=False)
    assert a.shape == (64, 64, 3) and a.dtype == np.float32 and a.min() >= 0 and a.max() <= 1
    np.testing.assert_array_equal(a, b)
    calm = np.mean([_edges(_background(np.random.default_rng(s), 64, busy=0.0, photos=False)) for s in range(8)])
    busy = np.mean([_edges(_background(np.random.default_rng(s), 64, busy=1.0, photos=False)) for s in range(8)])
    assert busy > calm


def test_a_pasted_shape_covers_its_polygon_only():
    img = np.zeros((16, 16, 3), np.float32)
    colour = np.array([1.0, 0.5, 0.0], np.float32)
    cov = _paste_shape(img, _rect_poly(8, 8, 6, 6),
                       lambda y0, y1, x0, x1: np.broadcast_to(colour, (y1 - y0, x1 - x0, 3)))
    assert cov.shape == (16, 16) and cov.dtype == np.float32 and cov[8, 8] == 1.0 and cov[0, 0] == 0.0
    np.testing.assert_allclose(img[8, 8], colour)  # composited in place, by the coverage
    np.testing.assert_allclose(img, cov[..., None] * colour, atol=1e-6)
    assert not _paste_shape(img, _rect_poly(100, 100, 4, 4), lambda *box: colour).any()  # off the image
