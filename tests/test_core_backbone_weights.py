"""retrieval.core.backbone_weights: state-dict files, a gemseg checkpoint's backbone weights, and
ImageNet weights that fail offline with a one-line hint naming the file and where to put it."""
from __future__ import annotations

import urllib.error
from pathlib import Path

import pytest
import torch

from retrieval.core.backbone import build_backbone
from retrieval.core.backbone_weights import gemseg_backbone_state, load_state_file, offline_hint
from retrieval.core.errors import WeightsError


def test_imagenet_weights_offline_is_one_clear_line(monkeypatch):
    import torchvision.models._api as api

    def offline(*a, **k):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(api, "load_state_dict_from_url", offline)
    with pytest.raises(WeightsError) as e:
        build_backbone("resnet50", "imagenet")
    msg = str(e.value)
    assert "\n" not in msg and "resnet50-0676ba61.pth" in msg and "checkpoints" in msg


def test_offline_hint_names_the_file_and_the_hub_folder():
    hint = offline_hint("https://download.pytorch.org/models/resnet18-f37072fd.pth")
    target = Path(torch.hub.get_dir()) / "checkpoints" / "resnet18-f37072fd.pth"
    assert hint == f"download https://download.pytorch.org/models/resnet18-f37072fd.pth and put it at {target}"


def test_state_files_and_the_backbone_weights_of_a_gemseg_checkpoint(tmp_path):
    sd = {"backbone.stages.stem.weight": torch.ones(2), "pool.p": torch.tensor(3.0)}
    torch.save({"state_dict": sd}, tmp_path / "wrapped.pt")
    torch.save(sd, tmp_path / "plain.pt")
    for name in ("wrapped.pt", "plain.pt"):  # a {"state_dict": ...} wrapper is opened
        assert sorted(load_state_file(str(tmp_path / name))) == sorted(sd)
    sub = gemseg_backbone_state(str(tmp_path / "wrapped.pt"))
    assert list(sub) == ["stages.stem.weight"] and torch.equal(sub["stages.stem.weight"], torch.ones(2))
    assert gemseg_backbone_state("imagenet") is None and gemseg_backbone_state("none") is None
    torch.save({"fc.weight": torch.ones(1)}, tmp_path / "tv.pt")
    assert gemseg_backbone_state(str(tmp_path / "tv.pt")) is None  # not a gemseg checkpoint
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(WeightsError, match="does not hold a state dict"):
        load_state_file(str(tmp_path / "list.pt"))
    with pytest.raises(WeightsError) as e:
        load_state_file(str(tmp_path / "missing.pt"))
    assert "\n" not in str(e.value)
