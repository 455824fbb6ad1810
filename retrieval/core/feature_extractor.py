"""The :class:`Backbone` module: named stages that map an image batch to a non-negative feature map,
with layer taps and a fingerprint. Which backbones exist is :mod:`retrieval.core.backbone`'s
registry; how each is built is :mod:`retrieval.core.backbone_builders`.
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Dict, List, Sequence

import torch
import torch.nn as nn

from retrieval.core.errors import ConfigError, did_you_mean

#: Suffix of an inner tap: ``<stage>.inner`` is the input of that stage's ``projection``.
INNER = ".inner"


def has_inner_tap(stage: nn.Module) -> bool:
    """Whether ``stage`` offers an inner tap: it has a ``projection`` sub-module (the linear 1×1
    projection of an inverted-residual block) whose input is the ``<stage>.inner`` map."""
    return isinstance(getattr(stage, "projection", None), nn.Module)


class Backbone(nn.Module):
    """A feature extractor: ``forward(x)`` maps (N, 3, H, W) float32 to (N, C, h, w) float32 ≥ 0.

    Attributes:
        name: backbone name (a name of the registry, :func:`retrieval.core.backbone.backbone_names`).
        out_channels: C of the final map.
        stride: total downsampling factor (H / h, up to rounding).
        mean, std: the per-channel normalisation the weights expect (RGB in [0, 1]).

    Layer taps (:meth:`tap_names`, :meth:`forward_layers`): every stage by name, and for every
    stage with a ``projection`` (``efficientnet_lite0``'s MBConv blocks) its inner activation,
    ``<stage>.inner`` (the expanded, depthwise-convolved, ReLU6'd map that the block's linear
    projection reads; ≥ 0).
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
        return names + [f"{n}{INNER}" for n in names if has_inner_tap(self.stages[n])]

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


def hash_state(h: "hashlib._Hash", module: nn.Module) -> None:
    """Feed every weight and buffer of ``module`` (names and float32 bytes, sorted) into hash ``h``."""
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
