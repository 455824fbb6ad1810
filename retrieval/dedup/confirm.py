"""Spatial verification of ``near`` pairs, so that two photos of one scene are not taken for copies.

RootSIFT features (:func:`retrieval.search.local_features.sift_features`, at most 1000 at a long
side of 640 px) are matched and a homography fitted by MAGSAC
(:func:`retrieval.search.verify.verify_pair`) with a tight inlier threshold, :data:`THRESHOLD_PX`
(2 px at 640): every match of a copy of one photo obeys one homography to a pixel or two, so its
inliers are nearly all its tentative matches, while another shot of the scene (parallax, motion)
keeps far fewer of them; :meth:`retrieval.dedup.thresholds.Thresholds.confirms` draws the line.
Features are computed once per image and kept for the run (an LRU of :data:`CACHE` images).
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Union

from retrieval.core.errors import ImageError
from retrieval.core.images import load_image
from retrieval.dedup.finder import Verifier
from retrieval.search.local_features import LocalFeatures, sift_features
from retrieval.search.verify import Verification, verify_pair

PathLike = Union[str, Path]
THRESHOLD_PX = 2.0
MAX_FEATURES = 1000
CACHE = 2048


class NearVerifier:
    """``verifier(path_a, path_b) -> Verification`` with a feature cache; an unreadable image
    verifies nothing (0 inliers)."""

    def __init__(self, max_features: int = MAX_FEATURES, threshold_px: float = THRESHOLD_PX,
                 cache: int = CACHE) -> None:
        self.max_features = int(max_features)
        self.threshold_px = float(threshold_px)
        self.cache = int(cache)
        self._features: "OrderedDict[str, LocalFeatures]" = OrderedDict()

    def features(self, path: PathLike) -> LocalFeatures:
        key = str(path)
        if key in self._features:
            self._features.move_to_end(key)
            return self._features[key]
        try:
            f = sift_features(load_image(path), max_features=self.max_features)
        except ImageError:
            f = LocalFeatures.empty((1, 1))
        self._features[key] = f
        while len(self._features) > self.cache:
            self._features.popitem(last=False)
        return f

    def __call__(self, a: PathLike, b: PathLike) -> Verification:
        return verify_pair(self.features(a), self.features(b), model="homography", threshold_px=self.threshold_px)


def near_verifier() -> Verifier:
    """The verifier of near pairs (:class:`NearVerifier` with its defaults)."""
    return NearVerifier()
