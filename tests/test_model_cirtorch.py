"""retrieval.model.cirtorch: checkpoints built in exactly cirtorch's layout (torch's legacy file
format, numpy Lw pickled under numpy 1's module names) give the descriptors of a reference forward
written here from cirtorch's equations (not from gemseg's modules), within 1e-4, at one scale and
at three: ResNet-50 and VGG-16, with and without a whiten layer, with and without Lw. Models
cirtorch has but gemseg does not load, and files missing keys, are one line."""
from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from retrieval.core.errors import WeightsError
from retrieval.loading import load_model
from retrieval.model.cirtorch import CIRTORCH_IMAGE_SIZE, CIRTORCH_SCALES, CirtorchNet, cirtorch_network
from retrieval.search.extract import describe_batch

MS = [1.0, 1 / math.sqrt(2), 0.5]
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


# ----------------------------------------------------------------------------- cirtorch's layout
def features_of(arch: str, seed: int) -> nn.Sequential:
    """cirtorch's ``features``: the torchvision children up to the pooling (seeded random weights,
    random batch-norm statistics so that they matter)."""
    torch.manual_seed(seed)
    m = getattr(torchvision.models, arch)(weights=None)
    feats = nn.Sequential(*(list(m.children())[:-2] if arch.startswith("resnet") else list(m.features.children())[:-1]))
    g = torch.Generator().manual_seed(seed + 1)
    for mod in feats.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.copy_(torch.randn(mod.num_features, generator=g) * 0.1)
            mod.running_var.copy_(torch.rand(mod.num_features, generator=g) + 0.5)
    return feats.eval()


def cirtorch_state(arch: str, feats: nn.Sequential, whiten: Optional[nn.Linear], p: float,
                   lw: Optional[Dict[str, Dict[str, np.ndarray]]]) -> dict:
    sd = {f"features.{k}": v.clone() for k, v in feats.state_dict().items()}
    sd["pool.p"] = torch.ones(1) * p
    if whiten is not None:
        sd["whiten.weight"] = whiten.weight.detach().clone()
        sd["whiten.bias"] = whiten.bias.detach().clone()
    meta = {"architecture": arch, "local_whitening": False, "pooling": "gem", "regional": False,
            "whitening": whiten is not None, "mean": MEAN, "std": STD, "outputdim": 2048 if "resnet" in arch else 512}
    if lw is not None:
        meta["Lw"] = {"retrieval-SfM-120k": lw}
    return {"epoch": 0, "meta": meta, "state_dict": sd}


def save_like_cirtorch(obj: dict, path: Path) -> None:
    """torch's legacy (pre-1.6) file format, as the released files are, with numpy's classes under
    their numpy 1 names (``numpy.core.multiarray``), as numpy 1 pickled them."""
    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=False)
    path.write_bytes(buf.getvalue().replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))


def random_lw(C: int, seed: int) -> Dict[str, Dict[str, np.ndarray]]:
    """cirtorch's whitenlearn output: m (C, 1), P (C, C) numpy (float32 for ss, float64 for ms)."""
    r = np.random.RandomState(seed)
    ss = {"m": (r.randn(C, 1) * 0.02).astype(np.float32), "P": (r.randn(C, C) / math.sqrt(C)).astype(np.float32)}
    ms = {"m": r.randn(C, 1) * 0.02, "P": r.randn(C, C) / math.sqrt(C)}
    return {"ss": ss, "ms": ms}


# ----------------------------------------------------------------------------- the reference forward
def l2n(x: torch.Tensor) -> torch.Tensor:
    return x / (torch.norm(x, p=2, dim=1, keepdim=True) + 1e-6)


def reference(feats: nn.Sequential, whiten: Optional[nn.Linear], p: float, lw, x: torch.Tensor,
              scales: Sequence[float]) -> np.ndarray:
    """cirtorch's ImageRetrievalNet.forward, extract_ss / extract_ms and whitenapply, one image at a time."""
    def net(inp):
        o = feats(inp)
        o = F.avg_pool2d(o.clamp(min=1e-6).pow(p), (o.size(-2), o.size(-1))).pow(1.0 / p)
        o = l2n(o).squeeze(-1).squeeze(-1)
        if whiten is not None:
            o = l2n(whiten(o))
        return o.permute(1, 0)  # D × 1

    msp = p if len(scales) > 1 and whiten is None else 1.0
    out: List[np.ndarray] = []
    with torch.no_grad():
        for i in range(x.shape[0]):
            inp = x[i:i + 1]
            if len(scales) == 1 and scales[0] == 1:
                v = net(inp).squeeze()
            else:
                v = 0
                for s in scales:
                    inp_t = inp.clone() if s == 1 else F.interpolate(inp, scale_factor=s, mode="bilinear",
                                                                     align_corners=False)
                    v += net(inp_t).pow(msp).squeeze()
                v /= len(scales)
                v = v.pow(1.0 / msp)
                v /= v.norm()
            X = v.numpy()[:, None].astype(np.float64)
            if lw is not None:
                L = lw["ms"] if len(scales) > 1 else lw["ss"]
                X = np.dot(L["P"], X - L["m"])
                X = X / (np.linalg.norm(X, ord=2, axis=0, keepdims=True) + 1e-6)
            out.append(X[:, 0])
    return np.stack(out).astype(np.float32)


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def backbones():
    return {"resnet50": features_of("resnet50", 0), "vgg16": features_of("vgg16", 10)}


def make_whiten(C: int, seed: int) -> nn.Linear:
    torch.manual_seed(seed)
    w = nn.Linear(C, C, bias=True)
    with torch.no_grad():
        w.weight.copy_(torch.randn(C, C) / math.sqrt(C))
        w.bias.copy_(torch.randn(C) * 0.01)
    return w


#: every pair of (architecture, whitening layer, Lw) values occurs in one case (a pairwise design:
#: 4 cases instead of the 8 of the full product, each a 100 MB checkpoint written and loaded)
CASES = [("resnet50", False, False), ("resnet50", True, True), ("vgg16", True, False), ("vgg16", False, True)]


@pytest.mark.slow
@pytest.mark.parametrize("arch,with_whiten,with_lw", CASES)
def test_descriptors_match_cirtorch(tmp_path, backbones, arch, with_whiten, with_lw):
    feats = backbones[arch]
    C = 2048 if arch == "resnet50" else 512
    whiten = make_whiten(C, 3) if with_whiten else None
    lw = random_lw(C, 4) if with_lw else None
    p = 2.7 if arch == "resnet50" else 3.4
    path = tmp_path / f"{arch}.pth"
    save_like_cirtorch(cirtorch_state(arch, feats, whiten, p, lw), path)

    net = load_model(path)
    assert isinstance(net, CirtorchNet) and net.dim == C
    assert net.config.image_size == CIRTORCH_IMAGE_SIZE and list(net.config.scales) == list(CIRTORCH_SCALES)
    assert net.config.whitening == ("lw" if with_lw else "none")
    assert net.msp == (1.0 if with_whiten else pytest.approx(p))
    g = torch.Generator().manual_seed(7)
    x = (torch.rand(2, 3, 46, 58, generator=g) - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]
    for scales in ([1.0], MS):
        got = describe_batch(net, x, scales).numpy()
        want = reference(feats, whiten, p, lw, x, scales)
        np.testing.assert_allclose(got, want, atol=1e-4)
        assert np.abs(want[0] - want[1]).max() > 1e-3


@pytest.mark.slow
def test_single_scale_forward_and_lw_slot(tmp_path, backbones):
    feats = backbones["resnet50"]
    lw = random_lw(2048, 5)
    path = tmp_path / "r50.pth"
    save_like_cirtorch(cirtorch_state("resnet50", feats, None, 3.0, lw), path)
    net = load_model(path)
    x = torch.randn(1, 3, 64, 64)
    np.testing.assert_allclose(net.whiten_P.numpy(), lw["ms"]["P"].astype(np.float32))  # 3 scales by default
    net.use_lw_for(1)
    with torch.no_grad():
        np.testing.assert_allclose(net(x).numpy(), reference(feats, None, 3.0, lw, x, [1.0]), atol=1e-4)


@pytest.mark.slow
def test_zip_format_and_numpy2_names_load_too(tmp_path, backbones):
    path = tmp_path / "new.pth"
    torch.save(cirtorch_state("vgg16", backbones["vgg16"], None, 3.0, random_lw(512, 1)), path)
    assert isinstance(load_model(path), CirtorchNet)


def broken(state: dict, where: str, key: str, value=None, drop: bool = False) -> dict:
    d = {"meta": dict(state["meta"]), "state_dict": dict(state["state_dict"])}
    if drop:
        del d[where][key]
    else:
        d[where][key] = value
    return d


@pytest.mark.slow
@pytest.mark.parametrize("change,message", [
    (("meta", "regional", True), "regional pooling"),
    (("meta", "local_whitening", True), "local whitening"),
    (("meta", "pooling", "gemmp"), "pooling 'gemmp'"),
    (("meta", "architecture", "alexnet"), "architecture 'alexnet'"),
    (("meta", "whitening", True), "whiten.weight"),
    (("meta", "mean", None, True), "meta['mean']"),
    (("state_dict", "pool.p", None, True), "pool.p"),
    (("state_dict", "features.7.2.conv3.weight", None, True), "misses weights"),
])
def test_unsupported_or_incomplete_checkpoints_are_one_line(tmp_path, backbones, change, message):
    state = cirtorch_state("resnet50", backbones["resnet50"], None, 3.0, None)
    where, key, value, *drop = change
    with pytest.raises(WeightsError, match=message.replace("[", r"\[").replace("]", r"\]")) as e:
        cirtorch_network(broken(state, where, key, value, bool(drop)), source="x.pth")
    assert "\n" not in str(e.value)


def test_another_layout_is_one_line(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(WeightsError, match="not a gemseg, cirtorch or dirtorch model checkpoint"):
        load_model(path)
