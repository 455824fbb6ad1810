"""retrieval.settings: a YAML config file read into its sections, typos refused by name with the
closest valid key or section."""
from __future__ import annotations

import pytest

from retrieval.core.errors import ConfigError
from retrieval.settings import load_settings, settings_from_dict


def test_config_typo_names_the_key_and_the_closest_one(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("model:\n  backbone: resnet18\n  imgae_size: 64\n")
    with pytest.raises(ConfigError) as e:
        load_settings(p)
    assert "imgae_size" in str(e.value) and "image_size" in str(e.value)
    p.write_text("modle:\n  backbone: resnet18\n")
    with pytest.raises(ConfigError, match="did you mean 'model'"):
        load_settings(p)
    p.write_text("model:\n  backbone: resnet181\n")
    with pytest.raises(ConfigError, match="resnet18"):
        load_settings(p)
    p.write_text("model:\n  image_size: big\n")
    with pytest.raises(ConfigError, match="integer"):
        load_settings(p)


def test_cluster_section_is_refused_with_a_pointer():
    """No ``cluster:`` section is read: one there would be silently ignored, so it is refused and
    the error points at ``unsupervised:``, where the clustering settings are."""
    with pytest.raises(ConfigError, match=r"unknown section 'cluster' \(did you mean 'unsupervised'\? .*ks, kc"):
        settings_from_dict({"cluster": {"ks": 5}}, "c.yaml")
    s = settings_from_dict({"unsupervised": {"ks": 5}}, "c.yaml")
    assert s.raw["unsupervised"] == {"ks": 5}
