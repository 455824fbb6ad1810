"""retrieval.training.validation: validation mAP with every image a query against the others (its
class the positives), a diverged network scored 0, pairs sampled with only the images they use."""
from __future__ import annotations

import math

import numpy as np
import pytest

from retrieval.training.pairs import PairSet
from retrieval.training.validation import mean_ap, sample_pairs


def _pairs(labels):
    return PairSet.from_labels([f"{i}.jpg" for i in range(len(labels))], np.asarray(labels))


def test_mean_ap_hand_worked():
    # two classes of two: 0 and 1 close, 2 and 3 close; image 1 is nearer 2 than its own class
    X = np.array([[1.0, 0.0], [0.8, 0.6], [0.6, 0.8], [0.0, 1.0]], np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    # rankings (self ignored): 0 → 1 first (AP 1); 1 → 2, 0; 2 → 1, 3 (its positive second: AP
    # (0/1 + 1/2) / 2 = 1/4 with the Oxford protocol's trapezoid); 3 → 2 first (AP 1)
    assert mean_ap(X, _pairs([0, 0, 1, 1])) == pytest.approx((1 + 0.25 + 0.25 + 1) / 4)
    assert mean_ap(X, _pairs([0, 1, 1, 0])) != pytest.approx(0.625)  # other labels, another score
    X[2, 0] = np.nan
    assert mean_ap(X, _pairs([0, 0, 1, 1])) == 0.0  # never chosen
    assert math.isnan(mean_ap(X[:2], _pairs([0, 1])))  # no query has a positive


def test_sampled_pairs_keep_only_the_images_they_use():
    pairs = _pairs([0, 0, 0, 1, 1, 2, 2, 3])  # image 7 is a singleton: in no pair
    few = sample_pairs(pairs, 2, seed=1)
    assert few.n_pairs == 2 and few.n_images <= 4
    used = set(few.qidx.tolist()) | set(few.pidx.tolist())
    assert used == set(range(few.n_images))
    assert all(few.labels[q] == few.labels[p] for q, p in zip(few.qidx, few.pidx))
    assert sample_pairs(pairs, 1000).n_images == 7  # all pairs: the singleton is dropped
