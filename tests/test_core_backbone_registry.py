"""retrieval.core.backbone_registry: registering a backbone is checked, and the registry is a
name → spec table in registration order."""
from __future__ import annotations

import pytest
from conftest import toy_backbone

from retrieval.core.backbone import backbone_names, backbone_spec, build_backbone
from retrieval.core.backbone_registry import (
    FALLBACK_CONCEPT_SIZE,
    BackboneSpec,
    register_backbone,
    registered_backbones,
    unregister_backbone,
)
from retrieval.core.errors import ConfigError
from retrieval.core.feature_extractor import Backbone


def test_registration_is_checked():
    with pytest.raises(ValueError, match="already registered"):
        register_backbone("resnet18", stages=("a",))
    with pytest.raises(ValueError, match="not one of its stages"):
        register_backbone("toy_bad", stages=("a", "b"), concept_layer="c")
    with pytest.raises(ValueError, match="lower case"):
        register_backbone("Toy", stages=("a",))
    with pytest.raises(ValueError, match="distinct"):
        register_backbone("toy_bad", stages=("a", "a"))
    assert "toy_bad" not in backbone_names()

    @register_backbone("toy_liar", stages=("conv1", "conv9"))
    def toy_liar(weights: str) -> Backbone:
        return toy_backbone("toy_liar")

    try:
        assert backbone_spec("toy_liar").concept_layer == "conv9"  # default: the last stage
        with pytest.raises(ConfigError, match="not the registered conv1, conv9"):
            build_backbone("toy_liar", "none")
    finally:
        assert unregister_backbone("toy_liar") is not None
    assert "toy_liar" not in backbone_names() and unregister_backbone("toy_liar") is None


def test_the_registry_is_a_read_only_table_in_registration_order():
    table = registered_backbones()
    assert tuple(table) == backbone_names() and all(isinstance(s, BackboneSpec) for s in table.values())
    with pytest.raises(TypeError):
        table["x"] = table["resnet18"]  # type: ignore[index]

    @register_backbone("toy_late", stages=("conv1", "conv2"), concept_layer="conv1.inner")
    def toy_late(weights: str) -> Backbone:
        return toy_backbone("toy_late")

    try:
        assert list(registered_backbones())[-1] == "toy_late"  # appended, the view follows
        spec = registered_backbones()["toy_late"]
        assert (spec.stages, spec.concept_layer, spec.coseg_image_size) == (("conv1", "conv2"), "conv1.inner",
                                                                            FALLBACK_CONCEPT_SIZE)
        assert spec.builder is toy_late
        with pytest.raises(ValueError, match="below 32"):
            register_backbone("toy_small", stages=("a",), coseg_image_size=16)
    finally:
        unregister_backbone("toy_late")
    assert "toy_late" not in registered_backbones()
