"""retrieval.dedup.confirm: an edited copy is confirmed, another shot of the scene is not (the two
frames of scikit-image's stereo pair), features are cached."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from retrieval.dedup.confirm import NearVerifier, near_verifier
from retrieval.dedup.edits import apply_edit
from retrieval.dedup.planted import photo
from retrieval.dedup.thresholds import Thresholds


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    pytest.importorskip("skimage")
    d = tmp_path_factory.mktemp("frames")
    left = Image.fromarray(photo("motorcycle_left")).resize((480, 324))
    left.save(d / "left.jpg", quality=95)
    Image.fromarray(photo("motorcycle_right")).resize((480, 324)).save(d / "right.jpg", quality=95)
    apply_edit(left, "crop", np.random.default_rng(0), lost=0.15).save(d / "crop.jpg", quality=70)
    apply_edit(left, "text", np.random.default_rng(1)).save(d / "text.jpg", quality=90)
    return d


def test_copies_are_confirmed_and_another_shot_is_not(frames):
    v = near_verifier()
    t = Thresholds()
    for copy in ("crop.jpg", "text.jpg"):
        got = v(frames / "left.jpg", frames / copy)
        assert t.confirms(got.inliers, got.tentative), (copy, got.inliers, got.tentative)
        assert got.matches.shape == (got.inliers, 4)
    other = v(frames / "left.jpg", frames / "right.jpg")
    assert other.inliers > 30  # plenty of matches: a homography explains part of the scene ...
    assert not t.confirms(other.inliers, other.tentative)  # ... but not nearly all of it


def test_features_are_cached_and_bad_files_verify_nothing(frames, tmp_path):
    v = NearVerifier(cache=2)
    a = v.features(frames / "left.jpg")
    assert v.features(frames / "left.jpg") is a
    v.features(frames / "crop.jpg")
    v.features(frames / "text.jpg")
    assert v.features(frames / "left.jpg") is not a  # evicted (LRU of 2)
    (tmp_path / "bad.jpg").write_bytes(b"nope")
    assert v(tmp_path / "bad.jpg", frames / "left.jpg").inliers == 0
