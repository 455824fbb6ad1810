"""retrieval.toy.streams: one seed stream per kind of draw, no two the same, so that each object,
view and image has a generator of its own."""
from __future__ import annotations

import numpy as np

from retrieval.toy import streams


def test_stream_ids_are_distinct_and_not_the_database_order_s():
    ids = [v for k, v in vars(streams).items() if k.startswith("_S_")]
    assert len(ids) == 6 and len(set(ids)) == len(ids) and 0 not in ids  # stream 0: the database order
    a = np.random.default_rng([3, streams._S_OBJECT, 0, 0]).random(4)
    b = np.random.default_rng([3, streams._S_VIEW, 0, 0]).random(4)
    assert not np.allclose(a, b)
