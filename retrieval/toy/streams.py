"""Seed streams of the toy generators.

Every random draw comes from ``numpy.random.default_rng([seed, stream, i, j])`` with one of these
stream ids, so each object, view, distractor, decoy and co-segmentation image has a generator of
its own (adding distractors never changes the views). Stream 0 is the database order of a
retrieval collection. The ids are listed once, here, so that no two generators share a stream.
"""
from __future__ import annotations

_S_OBJECT, _S_VIEW, _S_DISTRACTOR, _S_DECOY, _S_COSEG, _S_COSEG_IMG = 1, 2, 3, 4, 5, 6
