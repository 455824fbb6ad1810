"""Spatial verification of ``near`` pairs: local features matched and a geometric model fitted
(the ``verify`` module of the search package, once it lands), so that two photos of one scene are not taken for copies.

A near candidate is confirmed when its matches keep at least ``min_inliers`` inliers of a
homography. Features are computed once per image and cached for the run.
"""
from __future__ import annotations

from typing import Optional

from retrieval.dedup.finder import Verifier


def near_verifier() -> Optional[Verifier]:
    """The verifier of near pairs, or None when spatial verification is not available."""
    return None
