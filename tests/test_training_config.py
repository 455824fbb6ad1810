"""retrieval.training.config: the ``train:`` section (typos refused by name, values coerced, the
whitening modes)."""
from __future__ import annotations

import pytest

from retrieval.core.config import from_dict
from retrieval.core.errors import ConfigError
from retrieval.training.config import TrainConfig


def test_config_reads_whitening_modes():
    assert from_dict(TrainConfig, {}, "train").whitening == "auto"
    assert from_dict(TrainConfig, {"whitening": "PCA"}, "train").whitening == "pca"
    assert from_dict(TrainConfig, {"whitening": True}, "train").whitening == "lw"  # the old switch
    assert from_dict(TrainConfig, {"whitening": False}, "train").whitening == "none"
    with pytest.raises(ConfigError, match="whitening: 'zca' is not one of auto, lw, pca, none"):
        from_dict(TrainConfig, {"whitening": "zca"}, "train")


def test_config_section_refuses_typos():
    with pytest.raises(ConfigError, match="did you mean 'epochs'"):
        from_dict(TrainConfig, {"epoch": 3}, "train")
    with pytest.raises(ConfigError, match="val_split"):
        from_dict(TrainConfig, {"val_split": "views"}, "train")
    cfg = from_dict(TrainConfig, {"lr": "5e-7", "toy": {"n_objects": 4}}, "train")
    assert cfg.lr == 5e-7 and cfg.toy.n_objects == 4
