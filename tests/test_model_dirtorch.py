"""retrieval.model.dirtorch: a checkpoint built in dirtorch's layout (DataParallel ``module.``
names, ``adpool.p``, ``fc``, a pickled scikit-learn PCA) gives the descriptors of a reference
forward written here from dirtorch's code (ResNet_RMAC.forward, pool(…, "gem"), whiten_features),
within 1e-4, at one scale and at three; other architectures and missing weights are one line."""
from __future__ import annotations

import math
import sys
import types

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from retrieval.core.errors import WeightsError
from retrieval.loading import load_model
from retrieval.model.dirtorch import DirtorchNet, dirtorch_network
from retrieval.search.extract import describe_batch

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def fake_pca_class(monkeypatch):
    parts = "sklearn.decomposition.pca".split(".")  # the module name of scikit-learn 0.2x, as in 2019
    for i in range(1, len(parts) + 1):
        monkeypatch.setitem(sys.modules, ".".join(parts[:i]), types.ModuleType(".".join(parts[:i])))
    cls = type("PCA", (), {"__module__": "sklearn.decomposition.pca"})
    sys.modules["sklearn.decomposition.pca"].PCA = cls
    return cls


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    m = torchvision.models.resnet50(weights=None).eval()
    g = torch.Generator().manual_seed(1)
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.copy_(torch.randn(mod.num_features, generator=g) * 0.1)
            mod.running_var.copy_(torch.rand(mod.num_features, generator=g) + 0.5)
    fc = nn.Linear(2048, 2048)
    with torch.no_grad():
        fc.weight.copy_(torch.randn(2048, 2048, generator=g) / math.sqrt(2048))
        fc.bias.copy_(torch.randn(2048, generator=g) * 0.01)
    return m, fc


def checkpoint(tmp_path, monkeypatch, resnet, norm_features: bool, p: float = 2.9):
    m, fc = resnet
    PCA = fake_pca_class(monkeypatch)
    r = np.random.RandomState(2)
    pca = PCA()
    pca.mean_ = r.randn(2048) * 0.01
    pca.components_ = np.linalg.qr(r.randn(2048, 2048))[0].T
    pca.explained_variance_ = np.sort(r.rand(2048) + 0.1)[::-1]
    pca.whiten = True
    sd = {f"module.{k}": v.clone() for k, v in m.state_dict().items() if not k.startswith("fc.")}
    sd["module.adpool.p"] = torch.ones(1) * p
    sd["module.fc.weight"], sd["module.fc.bias"] = fc.weight.detach().clone(), fc.bias.detach().clone()
    obj = {"model_options": {"arch": "resnet50_rmac", "out_dim": 2048, "pooling": "gem", "gemp": 3,
                             "norm_features": norm_features, "without_fc": False},
           "state_dict": sd, "preprocess": {"mean": MEAN, "std": STD, "input_size": 224},
           "pca": {"Landmarks_clean": pca}, "epoch": 12}
    path = tmp_path / "Resnet50-AP-GeM.pt"
    torch.save(obj, path, _use_new_zipfile_serialization=False)
    monkeypatch.undo()
    return path, pca


def reference(resnet, pca, norm_features, p, x, scales, whitenp=0.25):
    m, fc = resnet

    def net(inp):  # ResNet_RMAC.forward
        f = m.layer4(m.layer3(m.layer2(m.layer1(m.maxpool(m.relu(m.bn1(m.conv1(inp))))))))
        f = F.adaptive_avg_pool2d(f.clamp(min=1e-6).pow(p), 1).pow(1.0 / p)
        if norm_features:
            f = F.normalize(f, p=2, dim=1)
        f = fc(f.squeeze(-1).squeeze(-1))
        return F.normalize(f, p=2, dim=-1)

    def sympow(t, q, eps=1e-6):
        s = torch.sign(t)
        return (t * s).clamp(min=eps).pow(q) * s

    with torch.no_grad():
        descs = [net(x if s == 1 else F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False))
                 for s in scales]
        if len(descs) == 1:
            v = descs[0]
        else:
            v = sympow(torch.mean(sympow(torch.stack(descs), 3), dim=0), 1 / 3)
        v = F.normalize(v, p=2, dim=1).numpy().astype(np.float64)
    X = np.dot(v - pca.mean_, pca.components_.T) / np.power(pca.explained_variance_, whitenp)
    return (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.slow
@pytest.mark.parametrize("norm_features", [False, True])
def test_descriptors_match_dirtorch(tmp_path, monkeypatch, resnet, norm_features):
    path, pca = checkpoint(tmp_path, monkeypatch, resnet, norm_features)
    net = load_model(path)
    assert isinstance(net, DirtorchNet) and net.dim == 2048 and net.config.whitening == "pca"
    assert net.config.image_size == 1024 and list(net.config.scales) == [1.0]
    x = (torch.rand(2, 3, 46, 58, generator=torch.Generator().manual_seed(5)) - 0.45) / 0.226
    for scales in ([1.0], [1.0, 1 / math.sqrt(2), 0.5]):
        want = reference(resnet, pca, norm_features, 2.9, x, scales)
        np.testing.assert_allclose(describe_batch(net, x, scales).numpy(), want, atol=1e-4)
        assert np.abs(want[0] - want[1]).max() > 1e-3


@pytest.mark.slow
def test_unknown_architecture_and_missing_weights_are_one_line(tmp_path, monkeypatch, resnet):
    path, _ = checkpoint(tmp_path, monkeypatch, resnet, False)
    from retrieval.core.foreign_weights import foreign_loading

    with foreign_loading():
        obj = torch.load(path, weights_only=True)
    bad = dict(obj, model_options=dict(obj["model_options"], arch="resnext101_32x8d_rmac"))
    with pytest.raises(WeightsError, match="architecture 'resnext101_32x8d_rmac'"):
        dirtorch_network(bad, "x.pt")
    sd = dict(obj["state_dict"])
    del sd["module.layer3.0.conv2.weight"]
    with pytest.raises(WeightsError, match="misses weights, e.g. layer3.0.conv2.weight"):
        dirtorch_network(dict(obj, state_dict=sd), "x.pt")
    sd = dict(obj["state_dict"])
    del sd["module.fc.bias"]
    with pytest.raises(WeightsError, match="fc.bias"):
        dirtorch_network(dict(obj, state_dict=sd), "x.pt")
