"""retrieval.dedup.thresholds: the calibration rule against numpy quantiles, the file, the overrides."""
from __future__ import annotations

import json

import numpy as np
import pytest

from retrieval.core.errors import ConfigError, DataError
from retrieval.dedup.thresholds import (
    FILENAME,
    MAX_SLACK,
    NEAR_FPR,
    NEAR_RECALL,
    SIMILAR_FPR,
    SLACK_QUANTILE,
    Thresholds,
    calibrate,
    load_thresholds,
    save_thresholds,
    thresholds_file,
)


def test_calibration_follows_its_quantiles():
    rng = np.random.default_rng(0)
    pos = rng.uniform(0.85, 1.0, 2000)
    neg = rng.normal(0.3, 0.1, 20000)
    t = calibrate(pos, neg)
    near = max(np.quantile(pos, 1 - NEAR_RECALL), np.quantile(neg, 1 - NEAR_FPR))
    assert t.near == pytest.approx(near, abs=1e-4)
    assert t.similar == pytest.approx(np.quantile(neg, 1 - SIMILAR_FPR), abs=1e-4)
    assert t.slack == pytest.approx(min(MAX_SLACK, near - np.quantile(pos, SLACK_QUANTILE)), abs=1e-4)
    assert (pos >= t.near).mean() >= NEAR_RECALL - 0.005 and (neg >= t.near).mean() <= NEAR_FPR
    assert "2000 edit pairs" in t.source


def test_precision_wins_when_the_distributions_overlap():
    rng = np.random.default_rng(1)
    pos = rng.uniform(0.6, 1.0, 500)
    neg = rng.uniform(0.0, 0.9, 5000)
    t = calibrate(pos, neg)
    assert (neg >= t.near).mean() <= NEAR_FPR + 1e-9 and t.near > np.quantile(pos, 1 - NEAR_RECALL)
    assert t.similar <= t.near


def test_too_few_pairs_is_one_clear_error():
    with pytest.raises(DataError, match="at least 10"):
        calibrate(np.ones(3), np.zeros(50))


def test_the_file_keeps_one_entry_per_model(tmp_path):
    f = tmp_path / FILENAME
    assert load_thresholds(f, "aaaa") is None
    save_thresholds(f, "aaaa", Thresholds(0.9, 0.7, 0.05, 12, "calibrated"))
    save_thresholds(f, "bbbb", Thresholds(0.8, 0.6, 0.02, 10, "other"))
    assert load_thresholds(f, "aaaa") == Thresholds(0.9, 0.7, 0.05, 12, "calibrated")
    assert load_thresholds(f, "bbbb").near == 0.8 and load_thresholds(f, "cccc") is None
    assert set(json.loads(f.read_text())) == {"aaaa", "bbbb"}
    assert not list(tmp_path.glob(".*tmp"))
    f.write_text("{not json")
    with pytest.raises(DataError, match="damaged"):
        load_thresholds(f, "aaaa")


def test_overrides_and_bad_values():
    t = Thresholds(0.9, 0.7).with_overrides(near=0.95, similar=None)
    assert (t.near, t.similar) == (0.95, 0.7) and "near=0.95" in t.source
    assert Thresholds(0.9, 0.7).with_overrides(similar=0.92).near == 0.92  # near follows: similar ≤ near
    assert Thresholds(0.9, 0.7, slack=0.05).cap("near") == pytest.approx(0.85)
    assert Thresholds(0.9, 0.7, slack=0.05).cap("similar") == pytest.approx(0.65)
    with pytest.raises(ConfigError, match="similar ≤ near"):
        Thresholds(0.5, 0.7)
    with pytest.raises(ConfigError, match="slack"):
        Thresholds(slack=2.0)


def test_where_the_file_is(tmp_path):
    assert thresholds_file(tmp_path / "t.json", tmp_path / "ix") == tmp_path / "t.json"
    assert thresholds_file(None, tmp_path / "ix", "m.pt") == tmp_path / "ix" / FILENAME
    assert thresholds_file(None, None, "runs/best.pt") == type(tmp_path)("runs/best.pt.dedup.json")
    assert thresholds_file(None, None, "model.yaml") is None and thresholds_file() is None
