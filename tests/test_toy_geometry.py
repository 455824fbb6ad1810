"""retrieval.toy.geometry: unit shapes, placing them, rasterising them (hard and anti-aliased), and
homographies, against hand-worked values."""
from __future__ import annotations

import math

import numpy as np
import pytest

from retrieval.toy.geometry import (
    _SHAPES,
    _apply_h,
    _ellipse_poly,
    _fill,
    _homography,
    _place,
    _rect_poly,
    _soft_alpha,
    _translate,
    _unit_shape,
)


@pytest.mark.parametrize("kind", _SHAPES)
def test_unit_shapes_have_radius_about_one(kind):
    poly = _unit_shape(np.random.default_rng(0), kind)
    r = np.linalg.norm(poly, axis=1)
    assert poly.ndim == 2 and poly.shape[1] == 2 and len(poly) >= 3
    assert 0.3 <= r.min() and r.max() <= 1.5


def test_place_scales_rotates_and_moves():
    unit = np.array([[1.0, 0.0], [0.0, 1.0]])
    np.testing.assert_allclose(_place(unit, 10, 20, 2.0, math.pi / 2), [[10, 22], [8, 20]], atol=1e-12)
    np.testing.assert_allclose(_rect_poly(5, 5, 4, 2), [[3, 4], [7, 4], [7, 6], [3, 6]])
    e = _ellipse_poly(0, 0, 4, 2)
    assert e.shape == (64, 2) and np.allclose(e[:, 0].max(), 4) and np.allclose(e[:, 1].max(), 2, atol=1e-2)


def test_fill_and_soft_alpha_cover_the_polygon():
    square = _rect_poly(8, 8, 8, 8)  # [4, 12) × [4, 12)
    m = _fill((16, 16), [square])
    assert m.dtype == bool and m.sum() in (64, 81) and m[8, 8] and not m[1, 1]
    alpha, (y0, y1, x0, x1) = _soft_alpha(square, (16, 16))
    assert alpha.shape == (y1 - y0, x1 - x0) and alpha.dtype == np.float32
    assert alpha.max() == 1.0 and alpha.min() == 0.0
    assert 64 <= alpha.sum() <= m.sum()  # between the true area and the hard fill's (which includes the edges)
    assert _soft_alpha(square + 100, (16, 16))[1] == (0, 0, 0, 0)  # off the image: an empty box


def test_homography_maps_the_four_points_and_translates():
    src = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], dtype=np.float64)
    dst = np.array([[2, 3], [5, 3], [6, 7], [1, 6]], dtype=np.float64)
    H = _homography(src, dst)
    np.testing.assert_allclose(_apply_h(H, src), dst, atol=1e-9)
    np.testing.assert_allclose(_apply_h(_translate(3, -2), np.array([[1.0, 1.0]])), [[4, -1]])
