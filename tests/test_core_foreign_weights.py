"""retrieval.core.foreign_weights: cirtorch / dirtorch files read under weights_only=True with
exactly their numpy arrays and PCA objects allowed (other classes still refused), their layouts
told apart, and their backbone weights reaching gemseg's backbone builders (the start of
tools/train_gem.py: ``model.weights: <their file>``)."""
from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch
import torch.nn as nn
import torchvision

from retrieval.core.backbone import build_backbone
from retrieval.core.errors import WeightsError
from retrieval.core.foreign_weights import (
    PCAState,
    cirtorch_torchvision_state,
    dirtorch_torchvision_state,
    foreign_layout,
    foreign_loading,
)
from retrieval.core.io import torch_load
from retrieval.model.network import ModelConfig, build_network


def fake_sklearn(monkeypatch, module: str = "sklearn.decomposition._pca"):
    """A stand-in ``sklearn.decomposition._pca.PCA`` to pickle with (scikit-learn is not needed)."""
    parts = module.split(".")
    for i in range(1, len(parts) + 1):
        monkeypatch.setitem(sys.modules, ".".join(parts[:i]), types.ModuleType(".".join(parts[:i])))
    cls = type("PCA", (), {"__module__": module})
    setattr(sys.modules[module], "PCA", cls)
    return cls


def test_numpy_arrays_scalars_and_pca_objects_load(tmp_path, monkeypatch):
    PCA = fake_sklearn(monkeypatch)
    pca = PCA()
    pca.mean_, pca.components_ = np.arange(4.0), np.eye(4, dtype=np.float32)
    pca.explained_variance_, pca.whiten, pca.noise_variance_ = np.ones(4), True, np.float64(0.5)
    torch.save({"pca": {"Landmarks_clean": pca}, "m": np.zeros((3, 1), np.float32)}, tmp_path / "f.pt")
    monkeypatch.undo()  # scikit-learn gone again
    with pytest.raises(WeightsError):
        torch_load(tmp_path / "f.pt", "checkpoint", WeightsError)  # not without the allowance
    with foreign_loading():
        obj = torch_load(tmp_path / "f.pt", "checkpoint", WeightsError)
    got = obj["pca"]["Landmarks_clean"]
    assert isinstance(got, PCAState) and got.whiten is True and got.noise_variance_ == 0.5
    np.testing.assert_array_equal(got.components_, np.eye(4))
    assert obj["m"].shape == (3, 1) and obj["m"].dtype == np.float32


class Payload:
    """Any other class (loading it could run its code)."""


def test_other_classes_stay_refused(tmp_path):
    torch.save({"c": Payload()}, tmp_path / "f.pt")
    with foreign_loading(), pytest.raises(WeightsError, match="cannot read"):
        torch_load(tmp_path / "f.pt", "checkpoint", WeightsError)


def test_layouts_are_told_apart():
    assert foreign_layout({"meta": {"architecture": "resnet50"}, "state_dict": {}}) == "cirtorch"
    assert foreign_layout({"model_options": {"arch": "resnet101_rmac"}, "state_dict": {}}) == "dirtorch"
    assert foreign_layout({"format": "gemseg-model", "state_dict": {}}) is None
    assert foreign_layout({"meta": {}, "state_dict": {}}) is None and foreign_layout([1]) is None


def test_cirtorch_names_map_to_torchvision():
    torch.manual_seed(0)
    tv = torchvision.models.resnet50(weights=None)
    feats = nn.Sequential(*list(tv.children())[:-2])
    sd = {f"features.{k}": v for k, v in feats.state_dict().items()}
    sd.update({"pool.p": torch.ones(1) * 3, "whiten.weight": torch.zeros(2, 2)})
    mapped = cirtorch_torchvision_state(sd, "resnet50")
    want = {k: v for k, v in tv.state_dict().items() if not k.startswith("fc.")}
    assert mapped.keys() == want.keys() and all(torch.equal(mapped[k], want[k]) for k in want)
    with pytest.raises(WeightsError, match="not supported"):
        cirtorch_torchvision_state(sd, "densenet121")
    d = dirtorch_torchvision_state({"module.conv1.weight": torch.ones(1), "module.adpool.p": torch.ones(1),
                                    "module.fc.weight": torch.ones(1)})
    assert list(d) == ["conv1.weight"]


@pytest.mark.slow
def test_a_cirtorch_file_starts_training_with_its_backbone(tmp_path):
    torch.manual_seed(1)
    tv = torchvision.models.resnet18(weights=None).eval()
    feats = nn.Sequential(*list(tv.children())[:-2]).eval()
    sd = {f"features.{k}": v for k, v in feats.state_dict().items()}
    sd["pool.p"] = torch.ones(1) * 3
    lw = {"retrieval-SfM-120k": {"ss": {"m": np.zeros((512, 1), np.float32), "P": np.eye(512, dtype=np.float32)}}}
    meta = {"architecture": "resnet18", "pooling": "gem", "whitening": False, "regional": False,
            "local_whitening": False, "mean": [0.4, 0.4, 0.4], "std": [0.2, 0.2, 0.2], "Lw": lw}
    torch.save({"meta": meta, "state_dict": sd}, tmp_path / "c.pth")
    x = torch.randn(1, 3, 64, 64)
    bb = build_backbone("resnet18", str(tmp_path / "c.pth"))
    net = build_network(ModelConfig(backbone="resnet18", weights=str(tmp_path / "c.pth"), image_size=64))
    with torch.no_grad():
        want = feats(x)
        torch.testing.assert_close(bb.eval()(x), want)
        torch.testing.assert_close(net.backbone.eval()(x), want)
