"""cosegment.config: the ``coseg:`` config section; object factors numbered from 0."""
from __future__ import annotations

import pytest

import cosegment
from retrieval.core.errors import ConfigError


def test_coseg_config_numbers_factors_from_0(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("coseg:\n  k: 3\n  object_factors: [0, 2]\n")
    c = cosegment.load_coseg_config(cfg, seed=4, layer=None)
    assert (c.k, c.object_factors, c.seed, c.layer) == (3, [0, 2], 4, None)
    assert cosegment.load_coseg_config(cfg, object_factors=[1]).object_factors == [1]
    with pytest.raises(ConfigError, match="numbered from 0 \\(0..2\\)"):
        cosegment.load_coseg_config(cfg, object_factors=[3])
    with pytest.raises(ConfigError, match="numbered from 0"):
        cosegment.load_coseg_config(cfg, object_factors=[-1])
    with pytest.raises(ConfigError, match="kk"):
        cosegment.load_coseg_config(cfg, kk=2)
