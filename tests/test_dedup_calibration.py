"""retrieval.dedup.calibration: pair scores against a loop; a model's thresholds measured on
generated edits of built-in photos."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from retrieval.core.errors import DataError
from retrieval.dedup.calibration import NEAR_KINDS, calibrate_model, edit_pair_scores


def test_pair_scores_against_a_loop():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((9, 5)).astype(np.float32)
    fam = np.array([0, 0, 0, 1, 1, 2, 2, 2, 3])
    pos, neg = edit_pair_scores(X, fam)
    want_pos = [X[a] @ X[b] for a, b in itertools.combinations(range(9), 2) if fam[a] == fam[b]]
    want_neg = [X[a] @ X[b] for a, b in itertools.combinations(range(9), 2) if fam[a] != fam[b]]
    np.testing.assert_allclose(sorted(pos), sorted(want_pos), rtol=1e-5)
    np.testing.assert_allclose(sorted(neg), sorted(want_neg), rtol=1e-5)


@pytest.mark.slow
def test_a_model_is_calibrated_on_edits_of_built_in_photos(small_net):
    pytest.importorskip("skimage")
    t = calibrate_model(small_net, ["astronaut", "coffee", "rocket", "camera"], long_side=96)
    assert "edits of 4 built-in photos" in t.source and f"{4 * len(NEAR_KINDS) * 4 // 2}" not in t.source
    assert -1 <= t.similar <= t.near <= 1 and 0 <= t.slack <= 0.1


def test_too_few_photos():
    with pytest.raises(DataError, match="at least 4"):
        calibrate_model(None, ["astronaut"])  # refused before any model is used
