"""The descriptor network: backbone → pooling → L2 → whitening → L2 (checkpoints: :mod:`retrieval.model.checkpoint`).

A :class:`DescriptorNet` carries its :class:`ModelConfig`; :meth:`DescriptorNet.fingerprint` hashes
the config (what changes descriptors) and every weight and buffer, so an index, a concept file or a
descriptor knows exactly which model made it. Checkpoints are plain dicts of tensors and primitives,
written atomically and read with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, List, Optional, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from retrieval.core.backbone import Backbone, backbone_spec, build_backbone, hash_state
from retrieval.core.config import to_dict
from retrieval.core.errors import ConfigError, WeightsError
from retrieval.model.concepts import ConceptMask
from retrieval.model.pooling import POOLINGS, build_pooling

MULTISCALE = (1.0, 0.7071, 0.5)  # 1, 1/√2, 1/2 (rounded so YAML round-trips exactly)


@dataclass
class ModelConfig:
    """What defines a descriptor model. Defaults: the offline default model (EfficientNet-Lite0 + GeM).

    Attributes:
        backbone: a registered backbone (:func:`retrieval.core.backbone.backbone_names`).
        weights: ``imagenet`` | ``none`` | path to a checkpoint.
        pooling: ``gem`` | ``mac`` | ``spoc`` | ``rmac``.
        p: initial GeM exponent; learn_p: whether training updates it.
        image_size: long side of the image at scale 1, in pixels.
        scales: extraction scales, combined by a generalised mean with GeM's p, then L2.
        whitening: what the whitening slot holds (``none`` | ``pca`` | ``lw``); the matrices
            themselves travel in the checkpoint.
        dim: output dimension after whitening (``None`` = all).
        concepts: a concept file (``tools/coseg.py --save-concepts``) learned with this backbone:
            pooling is then concept-masked GeM (:mod:`retrieval.model.concepts`); ``None`` = plain pooling.
        object_factor: the concept file's object factor to use, numbered from 0 (``None`` = the one
            stored in it).
    """

    backbone: str = "efficientnet_lite0"
    weights: str = "imagenet"
    pooling: str = "gem"
    p: float = 3.0
    learn_p: bool = True
    image_size: int = 320
    scales: List[float] = field(default_factory=lambda: list(MULTISCALE))
    whitening: str = "none"
    dim: Optional[int] = None
    concepts: Optional[str] = None
    object_factor: Optional[int] = None

    def validate(self) -> None:
        try:
            backbone_spec(self.backbone)  # the registry now: a backbone registered later validates
        except ConfigError as e:
            raise ConfigError(f"model.backbone: {e}") from None
        if self.pooling not in POOLINGS:
            raise ConfigError(f"model.pooling: '{self.pooling}' is not one of {', '.join(POOLINGS)}")
        if self.image_size < 16:
            raise ConfigError(f"model.image_size: {self.image_size} is too small (at least 16)")
        if not self.scales or any(s <= 0 for s in self.scales):
            raise ConfigError(f"model.scales: need one or more positive scales, got {self.scales}")
        if self.whitening not in ("none", "pca", "lw"):
            raise ConfigError(f"model.whitening: '{self.whitening}' is not one of none, pca, lw")
        if self.p <= 0:
            raise ConfigError(f"model.p: must be positive, got {self.p}")
        if self.dim is not None and self.dim < 1:
            raise ConfigError(f"model.dim: must be positive, got {self.dim}")


class DescriptorNet(nn.Module):
    """Image batch → L2-normalised global descriptor.

    ``forward(x)``: x (N, 3, H, W) float32 normalised with ``backbone.mean/std`` → (N, D) float32,
    unit L2 rows. D is the backbone's channel count, or the whitening's output dimension.
    """

    def __init__(self, config: ModelConfig, backbone: Backbone, pool: nn.Module) -> None:
        super().__init__()
        self.config = config
        self.backbone = backbone
        self.pool = pool
        self.register_buffer("whiten_m", torch.zeros(0))
        self.register_buffer("whiten_P", torch.zeros(0, 0))
        self.concepts = None  # retrieval.model.concepts.ConceptMask (not a weight: not in the state_dict)

    def set_concepts(self, concepts: Optional[Any]) -> None:
        """Pool with concept-masked GeM using ``concepts`` (a :class:`retrieval.model.concepts.ConceptMask`
        learned with this backbone), or plain pooling again with ``None``. Changes the fingerprint."""
        self.concepts = concepts

    # -- pieces ---------------------------------------------------------------------------
    @property
    def has_whitening(self) -> bool:
        return self.whiten_P.numel() > 0

    @property
    def dim(self) -> int:
        """Output dimension D."""
        if self.has_whitening:
            d = self.whiten_P.shape[0]
            return min(d, self.config.dim) if self.config.dim else d
        return self.backbone.out_channels

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, 3, H, W) → feature map (N, C, h, w) float32 ≥ 0."""
        return self.backbone(x)

    def pooled(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x: (N, 3, H, W) → pooled, L2-normalised, not yet whitened (N, C) float32 ≥ 0."""
        if self.concepts is not None:
            fmap, cmask = self.concepts.features_and_mask(self.backbone, x)
            mask = cmask if mask is None else mask * cmask
        else:
            fmap = self.features(x)
        if mask is not None:
            return F.normalize(self.pool(fmap.float(), mask), dim=-1)
        return F.normalize(self.pool(fmap.float()), dim=-1)

    def head(self, f: torch.Tensor) -> torch.Tensor:
        """Whitening slot then L2: f (N, C) float32 → (N, D) float32 (identity + L2 when empty)."""
        if self.has_whitening:
            P = self.whiten_P[: self.dim]
            f = (f - self.whiten_m) @ P.t()
        return F.normalize(f, dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pooled(x))

    # -- whitening slot ---------------------------------------------------------------------
    def set_whitening(self, m: Union[np.ndarray, torch.Tensor], P: Union[np.ndarray, torch.Tensor],
                      kind: str = "lw") -> None:
        """Fill the whitening slot: x' = L2(P (x − m)); m (C,) float32, P (d, C) float32 (rows =
        output dimensions, most important first)."""
        m = torch.as_tensor(np.asarray(m, dtype=np.float32) if not torch.is_tensor(m) else m).float()
        P = torch.as_tensor(np.asarray(P, dtype=np.float32) if not torch.is_tensor(P) else P).float()
        C = self.backbone.out_channels
        if m.shape != (C,) or P.dim() != 2 or P.shape[1] != C:
            raise WeightsError(f"whitening shapes m {tuple(m.shape)}, P {tuple(P.shape)} do not fit "
                               f"{C}-dimensional descriptors")
        dev = self.whiten_m.device
        self.whiten_m = m.to(dev)
        self.whiten_P = P.to(dev)
        self.config.whitening = kind

    def clear_whitening(self) -> None:
        dev = self.whiten_m.device
        self.whiten_m = torch.zeros(0, device=dev)
        self.whiten_P = torch.zeros(0, 0, device=dev)
        self.config.whitening = "none"

    # -- identity ---------------------------------------------------------------------------
    def fingerprint(self) -> str:
        """16-hex-digit hash of the config (all but the ``weights`` source) and every tensor."""
        h = hashlib.sha1()
        cfg = to_dict(self.config)
        cfg.pop("weights", None)
        cfg.pop("concepts", None)
        cfg.pop("object_factor", None)
        h.update(json.dumps(cfg, sort_keys=True).encode())
        if self.concepts is not None:
            h.update(f"concepts:{self.concepts.digest()}".encode())
        hash_state(h, self)
        return h.hexdigest()[:16]

    def extra_repr(self) -> str:
        return f"dim={self.dim}, whitening={self.config.whitening}"


def build_network(config: Optional[ModelConfig] = None, *, seed: int = 0) -> DescriptorNet:
    """Build a :class:`DescriptorNet` from ``config`` (default :class:`ModelConfig`).

    Random initialisation (``weights: none``) is seeded by ``seed``.
    """
    config = config or ModelConfig()
    config.validate()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        backbone = build_backbone(config.backbone, config.weights)
    pool = build_pooling(config.pooling, p=config.p, learn_p=config.learn_p)
    net = DescriptorNet(dataclasses.replace(config), backbone, pool).eval()
    if config.concepts:
        net.set_concepts(ConceptMask.from_file(config.concepts, backbone, config.object_factor))
    return net
