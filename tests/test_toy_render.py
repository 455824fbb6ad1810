"""retrieval.toy.render: a view rendered with its background: the mask is where the object was pasted;
the measured visibility."""
from __future__ import annotations

import numpy as np

from retrieval.toy.backgrounds import _background
from retrieval.toy.collection import (
    _objects_for,
    _view_spec,
)
from retrieval.toy.render import _render_view, _ViewSpec
from retrieval.toy.streams import _S_OBJECT


def test_mask_is_where_the_object_was_pasted() -> None:
    """Render a view together with its background: inside the mask the composite differs from the
    background, outside (away from the blurred border) it is the background itself."""
    rng = np.random.default_rng(0)
    obj = _objects_for(1, "synthetic", 64, seed=0, stream=_S_OBJECT)[0]
    for kind in ("easy", "hard", "junk"):
        spec, _ = _view_spec(rng, kind, clutter=0.5)
        bg = _background(rng, 64, busy=0.5, photos=False)
        r = _render_view(obj, spec, 64, bg, rng, photos=False, with_background=True)
        mask = r.labels > 0
        assert mask.any()
        diff = np.abs(r.image.astype(np.float32) - r.background.astype(np.float32)).max(axis=2)
        grown = mask.copy()
        for _ in range(7):  # blur sigma ≤ 1.5 px: stay clear of the blurred border
            grown = grown | np.roll(grown, 1, 0) | np.roll(grown, -1, 0) | np.roll(grown, 1, 1) | np.roll(grown, -1, 1)
        assert diff[~grown].max() <= 1.0
        assert diff[mask].mean() > 20.0


def test_visibility_measurements() -> None:
    """A fully visible view measures visible = in_frame = 1; a crop view keeps the requested share."""
    rng = np.random.default_rng(1)
    obj = _objects_for(1, "synthetic", 96, seed=1, stream=_S_OBJECT)[0]
    bg = np.zeros((96, 96, 3), np.float32)
    tilted = _render_view(obj, _ViewSpec(area=0.3, rotation=30.0, perspective=0.1), 96, bg, rng, False)
    assert tilted.visible > 0.97 and tilted.in_frame > 0.97 and tilted.occluded == 0.0
    full = _render_view(obj, _ViewSpec(area=0.3, rotation=0.0, perspective=0.0), 96, bg, rng, False)
    assert full.visible > 0.97
    for target in (0.2, 0.6):
        r = _render_view(obj, _ViewSpec(area=0.3, rotation=0.0, perspective=0.0, in_frame=target),
                         96, bg, rng, False)
        assert abs(r.in_frame - target) < 0.05 and r.scale == full.scale
        # same scale and no occlusion: visible pixels = in-frame share of the full view's pixels
        assert abs(np.count_nonzero(r.labels) / np.count_nonzero(full.labels) - target) < 0.08
    occ = _render_view(obj, _ViewSpec(area=0.3, rotation=0.0, perspective=0.0, occlusion=0.5),
                       96, bg, rng, False)
    assert abs(occ.occluded - 0.5) < 0.05 and abs(occ.visible - 0.5) < 0.06
