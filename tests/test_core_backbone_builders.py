"""retrieval.core.backbone_builders: the built-in backbones, one registered builder each (the
default efficientnet_lite0 with its shipped ImageNet weights; the torchvision ResNets and VGGs)."""
from __future__ import annotations

import pytest
import torch
from PIL import Image

from retrieval.core.backbone import backbone_names, backbone_spec, build_backbone
from retrieval.core.backbone_builders import (
    LITE0_STAGES,
    RESNET_STAGES,
    RESNETS,
    VGG_CONVS,
    lite0_weights_path,
    vgg_stages,
)
from retrieval.core.images import to_tensor


def test_vgg_stages_are_one_relu_per_convolution():
    assert vgg_stages((2, 1)) == ["relu1_1", "relu1_2", "relu2_1"]
    stages16 = vgg_stages(VGG_CONVS["vgg16"])
    assert len(stages16) == 13 and stages16[-1] == "relu5_3" and stages16[6] == "relu3_3"
    assert vgg_stages(VGG_CONVS["vgg19"])[-4:] == ["relu5_1", "relu5_2", "relu5_3", "relu5_4"]
    assert vgg_stages(()) == []


def test_every_builder_is_registered_with_its_stages():
    assert backbone_names()[0] == "efficientnet_lite0"  # the default is registered first
    assert backbone_spec("efficientnet_lite0").stages == LITE0_STAGES and len(LITE0_STAGES) == 18
    for name in RESNETS:
        assert backbone_spec(name).stages == RESNET_STAGES
    for name, convs in VGG_CONVS.items():
        assert backbone_spec(name).stages == tuple(vgg_stages(convs))


@pytest.mark.slow
def test_default_model_loads_real_weights_and_classifies_a_cat():
    """The offline default backbone carries real ImageNet semantics (chelsea → a cat class)."""
    skimage_data = pytest.importorskip("skimage.data")
    from efficientnet_lite_pytorch import EfficientNet

    bb = build_backbone("efficientnet_lite0", "imagenet")
    net = EfficientNet.from_name("efficientnet-lite0", image_size=None)
    net.load_state_dict(torch.load(lite0_weights_path(), weights_only=True))
    net.eval()
    img = Image.fromarray(skimage_data.chelsea()).resize((224, 224))
    x = to_tensor(img, bb.mean, bb.std)[None]
    with torch.no_grad():
        top = net(x).argmax(1).item()
        assert torch.allclose(bb.eval()(x), net.extract_features(x), atol=1e-5)
    assert 281 <= top <= 285  # ImageNet's domestic cat classes
