"""retrieval.core.backbone: the backbones' front door (names, specs, defaults, building by name,
one-line errors, the maps they output, the device) and a toy backbone registered in one place, used
by tools/index.py --config, tools/search.py and co-segmentation (tools/coseg.py --config)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch
import torch.nn as nn
from conftest import random_images, run_tool, toy_backbone
from PIL import Image

from retrieval.core.backbone import (
    Backbone,
    backbone_names,
    backbone_spec,
    build_backbone,
    default_image_size,
    default_layer,
    register_backbone,
    resolve_device,
    unregister_backbone,
)
from retrieval.core.errors import ConfigError, ResourceError, WeightsError
from retrieval.model.network import ModelConfig, build_network

BUILT_INS = ("efficientnet_lite0", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "vgg16", "vgg19")
#: The per-backbone defaults before the registry (the CONCEPT_LAYERS / CONCEPT_IMAGE_SIZES tables).
OLD_LAYERS = {"efficientnet_lite0": "block14", "vgg16": "relu5_3", "vgg19": "relu5_4", "resnet18": "layer4",
              "resnet34": "layer4", "resnet50": "layer4", "resnet101": "layer4", "resnet152": "layer4"}
OLD_SIZES = {"efficientnet_lite0": 320}
#: Fingerprint of efficientnet_lite0 with its shipped ImageNet weights, and the (name, shape) layout of
#: the state dicts, as they were before the registry: indexes and concept files made before still load.
LITE0_IMAGENET_FINGERPRINT = "9929be31ef3ffc42"
STATE_LAYOUT = {"efficientnet_lite0": "a2197b0bfdd3eb0d", "resnet18": "dfad7e4b1cfcf2f8", "vgg16": "33ca35a093f3f326"}

TOY = "toy_cnn"
TOY_SIZE = 96


def _layout(bb: nn.Module) -> str:
    h = hashlib.sha1()
    for name, t in sorted(bb.state_dict().items()):
        h.update(f"{name}:{tuple(t.shape)};".encode())
    return h.hexdigest()[:16]


# ----------------------------------------------------------------------------- the registry
def test_built_in_backbones_are_registered_in_order_with_the_old_defaults():
    assert backbone_names()[: len(BUILT_INS)] == BUILT_INS
    for name in BUILT_INS:
        spec = backbone_spec(name)
        assert spec.name == name and spec.concept_layer == OLD_LAYERS[name]
        assert default_layer(name) == OLD_LAYERS[name]
        assert default_image_size(name) == spec.coseg_image_size == OLD_SIZES.get(name, 448)
    assert default_layer("not_a_backbone") == "" and default_image_size("not_a_backbone") == 448
    assert backbone_spec("vgg19").stages[-4:] == ("relu5_1", "relu5_2", "relu5_3", "relu5_4")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["efficientnet_lite0", "resnet18", "vgg16"])
def test_built_in_stages_and_state_layout_are_unchanged(name):
    torch.manual_seed(0)
    bb = build_backbone(name, "none")
    assert tuple(bb.layer_names()) == backbone_spec(name).stages
    assert _layout(bb) == STATE_LAYOUT[name]
    if name == "efficientnet_lite0":
        assert len(bb.tap_names()) == 2 * 16 + 2 and "block14.inner" in bb.tap_names()
        assert build_backbone(name).fingerprint() == LITE0_IMAGENET_FINGERPRINT


def test_unknown_backbone_is_one_line_with_did_you_mean():
    with pytest.raises(ConfigError) as e:
        build_backbone("resnet5", "none")
    assert str(e.value) == ("unknown backbone 'resnet5' (did you mean 'resnet50'?); choose from: "
                            + ", ".join(BUILT_INS))
    with pytest.raises(ConfigError) as e:
        ModelConfig(backbone="resnt18").validate()
    assert str(e.value).startswith("model.backbone: unknown backbone 'resnt18' (did you mean 'resnet18'?); ")
    assert build_backbone("ResNet18", "none").name == "resnet18"  # names are matched in lower case


# ----------------------------------------------------------------------------- a toy backbone
@pytest.fixture
def toy() -> Iterator[str]:
    """The toy backbone, registered in one place for this test only."""

    @register_backbone(TOY, stages=("conv1", "conv2"), concept_layer="conv1", coseg_image_size=TOY_SIZE)
    def toy_cnn(weights: str) -> Backbone:
        if weights == "imagenet":
            raise WeightsError("toy_cnn has no ImageNet weights; use weights: none")
        return toy_backbone(TOY)  # random init, seeded by the caller (build_network seeds it)

    yield TOY
    unregister_backbone(TOY)


def test_the_registry_is_read_at_validation_time(toy):
    ModelConfig(backbone=toy).validate()
    torch.manual_seed(3)
    a = build_backbone(toy, "none")
    torch.manual_seed(3)
    assert build_backbone(toy, "none").fingerprint() == a.fingerprint()
    x = torch.rand(2, 3, 40, 48)
    assert a(x).shape == (2, 16, 10, 12) and bool((a(x) >= 0).all())
    unregister_backbone(toy)
    with pytest.raises(ConfigError, match="model.backbone: unknown backbone 'toy_cnn'"):
        ModelConfig(backbone=toy).validate()


def _toy_config(path: Path) -> Path:
    path.write_text(f"model:\n  backbone: {TOY}\n  weights: none\n  image_size: 64\n  scales: [1.0]\n"
                    "extract:\n  batch_size: 4\n  workers: 0\ncoseg:\n  k: 2\n")
    return path


@pytest.mark.slow
def test_a_toy_backbone_indexes_searches_and_cosegments(toy, tmp_path):
    photos = tmp_path / "photos"
    paths = random_images(photos, 6, size=(48, 64), seed=5)
    cfg = _toy_config(tmp_path / "toy.yaml")

    proc = run_tool("index", "--images", photos, "--config", cfg, "--out", tmp_path / "ix", "--json")
    assert proc.returncode == 0, proc.stderr
    rep = json.loads(proc.stdout)
    assert rep["added"] == 6 and rep["fingerprint"] == build_network(ModelConfig(
        backbone=TOY, weights="none", image_size=64, scales=[1.0])).fingerprint()

    proc = run_tool("search", "--query", paths[2], "--index", tmp_path / "ix", "--top", "3", "--json")
    assert proc.returncode == 0, proc.stderr
    hits = json.loads(proc.stdout)["results"][0]["hits"]
    assert len(hits) == 3 and Path(hits[0]["path"]).resolve() == paths[2].resolve()
    assert hits[0]["score"] == pytest.approx(1.0, abs=1e-4) and hits[0]["score"] >= hits[1]["score"]

    out = tmp_path / "coseg"
    proc = run_tool("coseg", "--images", photos, "--config", cfg, "--out", out, "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["backbone"] == TOY and doc["layer"] == "conv1" and doc["image_size"] == TOY_SIZE and doc["k"] == 2
    assert doc["sets"][0]["images"] == 6 and not doc["failures"]
    masks = sorted((out / "masks").glob("*.png"))
    assert [m.stem for m in masks] == [p.stem for p in paths]
    for m, p in zip(masks, paths):
        a = np.asarray(Image.open(m))
        assert a.shape == (48, 64) and set(np.unique(a)) <= {0, 255}
    assert sum(int((np.asarray(Image.open(m)) > 0).any()) for m in masks) >= 1


@pytest.mark.slow
@pytest.mark.parametrize("name,size", [("resnet18", 64), ("vgg16", 32), ("efficientnet_lite0", 64)])
def test_backbones_output_nonnegative_maps(name, size):
    bb = build_backbone(name, "none" if name != "efficientnet_lite0" else "imagenet").eval()
    with torch.no_grad():
        y = bb(torch.randn(2, 3, size, size + 16))
    assert y.shape[:2] == (2, bb.out_channels) and y.dim() == 4
    assert (y >= 0).all()
    layers = bb.forward_layers(torch.randn(1, 3, size, size), bb.layer_names()[-2:])
    assert set(layers) == set(bb.layer_names()[-2:]) and all((v >= 0).all() for v in layers.values())


def test_resolve_device_refuses_a_missing_cuda_device(no_cuda):
    with pytest.raises(ResourceError, match=r"^no CUDA device: .*; use --device cpu$"):
        resolve_device("cuda")
    with pytest.raises(ResourceError, match="no CUDA device"):
        resolve_device("cuda:1")
    with pytest.raises(ConfigError, match="unknown device 'gpu'"):
        resolve_device("gpu")
    assert resolve_device(None).type == "cpu" and resolve_device("cpu").type == "cpu"
