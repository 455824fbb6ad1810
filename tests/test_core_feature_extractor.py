"""retrieval.core.feature_extractor: the Backbone module (named stages, layer taps, fingerprint)."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from conftest import toy_backbone

from retrieval.core.backbone import build_backbone
from retrieval.core.errors import ConfigError
from retrieval.core.feature_extractor import INNER, Backbone, has_inner_tap


def test_backbone_fingerprint_tracks_weights():
    torch.manual_seed(0)
    a = build_backbone("resnet18", "none")
    fa = a.fingerprint()
    assert fa == a.fingerprint()
    with torch.no_grad():
        a.stages["layer4"][0].conv1.weight[0, 0, 0, 0] += 1
    assert a.fingerprint() != fa


class _Block(nn.Module):
    """An inverted-residual-like block: expand (ReLU) → projection."""

    def __init__(self) -> None:
        super().__init__()
        self.expand = nn.Sequential(nn.Conv2d(16, 32, 1), nn.ReLU())
        self.projection = nn.Conv2d(32, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(self.expand(x))


def test_layer_taps_are_the_stages_and_the_inner_maps_of_projections():
    toy = toy_backbone("toy_taps")
    assert isinstance(toy, Backbone) and toy.layer_names() == toy.tap_names() == ["conv1", "conv2"]
    assert not has_inner_tap(toy.stages["conv1"]) and has_inner_tap(_Block())
    torch.manual_seed(0)
    stages = dict(toy.stages.items())
    stages["block"] = _Block()
    bb = Backbone("toy_taps", stages, out_channels=8, stride=4, mean=(0.5,) * 3, std=(0.25,) * 3)
    assert bb.tap_names() == ["conv1", "conv2", "block", "block" + INNER]
    x = torch.rand(2, 3, 16, 20)
    with torch.no_grad():
        maps = bb.forward_layers(x, ["conv2", "block.inner", "block"])
        inner = bb.stages["block"].expand(bb.stages["conv2"](bb.stages["conv1"](x)))
        out = bb(x)
    assert list(maps) == ["conv2", "block.inner", "block"]
    torch.testing.assert_close(maps["block.inner"], inner)  # the projection's input
    torch.testing.assert_close(maps["block"], out.clamp(min=0))  # a linear output, clamped at 0
    assert bool((out < 0).any())  # so the clamp is not vacuous
    with pytest.raises(ConfigError, match=r"unknown layer 'blok' for toy_taps \(did you mean 'block'\?\).*<block>"):
        bb.forward_layers(x, ["blok"])
