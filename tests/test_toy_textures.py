"""retrieval.toy.textures: colours and procedural textures: RGB in [0, 1], the pattern's period, the
same texture on any grid."""
from __future__ import annotations

import colorsys

import numpy as np
import pytest

from retrieval.toy.textures import _PART_TEXTURES, _hsv, _random_tex, _render_tex


def test_hsv_wraps_the_hue_and_clips_the_rest():
    np.testing.assert_allclose(_hsv(1.25, 0.5, 0.8), colorsys.hsv_to_rgb(0.25, 0.5, 0.8), rtol=1e-6)
    np.testing.assert_allclose(_hsv(0.0, 2.0, -1.0), [0, 0, 0])
    assert _hsv(0.3, 1, 1).dtype == np.float32


@pytest.mark.parametrize("kind", _PART_TEXTURES)
def test_textures_are_rgb_in_unit_range_and_vary(kind):
    tex = _random_tex(np.random.default_rng(3), kind, hue=0.6)
    yy, xx = np.mgrid[0:64, 0:64].astype(np.float32)
    img = _render_tex(tex, yy, xx, 64.0)
    assert img.shape == (64, 64, 3) and img.dtype == np.float32
    assert img.min() >= 0.0 and img.max() <= 1.0 and img.std() > 0.01
    if kind != "gradient":  # a gradient spans the region it is given; every other pattern is a function
        # of the coordinates: a sub-grid renders the same pixels
        np.testing.assert_allclose(_render_tex(tex, yy[10:20, 5:9], xx[10:20, 5:9], 64.0), img[10:20, 5:9], atol=1e-6)


def test_stripes_repeat_with_their_period():
    tex = _random_tex(np.random.default_rng(0), "stripes", hue=0.1)
    tex = type(tex)("stripes", tex.c0, tex.c1, period=0.25, angle=0.0, phase=0.0)
    x = np.arange(64, dtype=np.float32)[None, :]
    row = _render_tex(tex, np.zeros_like(x), x, 64.0)[0]
    np.testing.assert_allclose(row[:48], row[16:], atol=1e-5)  # period 0.25 × 64 px = 16 px
    assert not np.allclose(row[:8], row[8:16], atol=1e-3)
