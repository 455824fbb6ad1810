"""dirtorch checkpoints (naver/deep-image-retrieval: AP-GeM, TL-GeM, TL-MAC ResNets) as gemseg networks.

Their layout (``dirtorch/test_dir.py`` ``load_model``, ``dirtorch/nets/rmac_resnet.py``):
``{"model_options": {"arch": "resnet101_rmac", "out_dim", "pooling": "gem" | "max" | "avg",
"gemp", "norm_features", "without_fc", …}, "state_dict": {"module.conv1.weight", … torchvision's
ResNet names …, "adpool.p", "fc.weight", "fc.bias"}, "preprocess": {"mean", "std", …},
"pca": {"Landmarks_clean": sklearn PCA}}``. The network (``ResNet_RMAC.forward``):

``v = L2(fc([L2](GeM_p(features(x)))))`` — GeM clamps at 1e-6, the inner L2 only with
``norm_features``, no ``fc`` with ``without_fc``.

Several scales are combined as dirtorch pools several transforms: the sign-keeping generalised
mean with p = 3 (``pool(…, "gem", gemp=3)``), then L2; each scale is made from the normalised
batch by bilinear interpolation (:func:`retrieval.model.cirtorch.plain_rescale`; dirtorch resizes
the PIL image instead). Its PCA whitening (``common.whiten_features``, default ``whitenp = 0.25``,
all components): ``v = L2((v − mean_) · components_ᵀ / explained_variance_^whitenp)``, which is
the whitening slot ``L2(P (v − m))`` with ``m = mean_`` and ``P = diag(ev^−whitenp) ·
components_`` (``components_`` alone when the PCA was fitted without ``whiten``). Defaults:
long side 1024, one scale (their published numbers are single-resolution).
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from retrieval.core.backbone import build_backbone
from retrieval.core.errors import WeightsError
from retrieval.core.feature_extractor import Backbone
from retrieval.core.foreign_weights import dirtorch_torchvision_state
from retrieval.model.cirtorch import generalized_mean, plain_rescale
from retrieval.model.network import DescriptorNet, ModelConfig
from retrieval.model.pooling import build_pooling

DIRTORCH_IMAGE_SIZE = 1024
DIRTORCH_SCALES = (1.0,)
#: dirtorch's test_dir defaults: whitening learned on Landmarks-clean, power 0.25, GeM p = 3 over transforms.
DEFAULT_PCA = "Landmarks_clean"
WHITEN_POWER = 0.25
TRANSFORM_P = 3.0
ARCHS = {"resnet18_rmac": "resnet18", "resnet50_rmac": "resnet50", "resnet101_rmac": "resnet101",
         "resnet152_rmac": "resnet152"}
POOLINGS = {"gem": "gem", "max": "mac", "avg": "spoc"}


class DirtorchNet(DescriptorNet):
    """A dirtorch ``ResNet_RMAC`` (see the module docstring); the whitening slot holds its PCA."""

    def __init__(self, config: ModelConfig, backbone: Backbone, pool: nn.Module, fc: Optional[nn.Linear],
                 norm_features: bool) -> None:
        super().__init__(config, backbone, pool)
        self.fc = fc
        self.norm_features = bool(norm_features)
        self.pca_source = ""

    @property
    def pooled_dim(self) -> int:
        return self.fc.out_features if self.fc is not None else self.backbone.out_channels

    @property
    def dim(self) -> int:
        if self.has_whitening:
            d = self.whiten_P.shape[0]
            return min(d, self.config.dim) if self.config.dim else d
        return self.pooled_dim

    @property
    def scale_rule(self) -> Tuple[str, float, bool]:
        return "plain", TRANSFORM_P, True

    def pooled(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x (N, 3, H, W) → dirtorch's network output (N, pooled_dim) float32, unit rows."""
        fmap = self.features(x).float()
        v = self.pool(fmap) if mask is None else self.pool(fmap, mask)
        if self.norm_features:
            v = F.normalize(v, dim=-1)
        if self.fc is not None:
            v = self.fc(v)
        return F.normalize(v, dim=-1)

    def set_pca(self, m: torch.Tensor, P: torch.Tensor) -> None:
        """The whitening slot: ``m (C,)``, ``P (d, C)`` float32 (no check against the backbone:
        C is the projection's output)."""
        if m.shape != (self.pooled_dim,) or P.dim() != 2 or P.shape[1] != self.pooled_dim:
            raise WeightsError(f"PCA shapes mean {tuple(m.shape)}, components {tuple(P.shape)} do not fit "
                               f"{self.pooled_dim}-dimensional descriptors")
        self.whiten_m = m.float().to(self.whiten_m.device)
        self.whiten_P = P.float().to(self.whiten_m.device)
        self.config.whitening = "pca"

    @torch.inference_mode()
    def describe_scales(self, x: torch.Tensor, scales: Sequence[float]) -> torch.Tensor:
        """x (B, 3, H, W) float32 → (B, D) float32 unit rows: scales pooled as dirtorch pools
        transforms, then the PCA whitening."""
        scales = list(scales)
        v = generalized_mean([self.pooled(plain_rescale(x, s)) for s in scales],
                             TRANSFORM_P if len(scales) > 1 else 1.0, signed=True)
        return self.head(v)

    def extra_repr(self) -> str:
        return f"dirtorch, dim={self.dim}, pca={self.pca_source or 'none'}"


def _field(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)


def pca_projection(pca: Any, power: float = WHITEN_POWER, source: str = "checkpoint") -> Tuple[torch.Tensor, torch.Tensor]:
    """dirtorch's PCA (a scikit-learn PCA's attributes, or its ``{"means", "W"}`` dict) as
    ``(m (C,), P (d, C))`` float32 for the whitening slot."""
    if _field(pca, "components_") is not None:
        comps = np.asarray(_field(pca, "components_"), dtype=np.float64)
        mean = _field(pca, "mean_")
        m = np.zeros(comps.shape[1]) if mean is None else np.asarray(mean, dtype=np.float64).reshape(-1)
        P = comps
        if _field(pca, "whiten"):
            ev = np.asarray(_field(pca, "explained_variance_"), dtype=np.float64).reshape(-1)
            P = comps / np.power(ev, power)[:, None]
    elif _field(pca, "W") is not None and _field(pca, "means") is not None:
        m = np.asarray(_field(pca, "means"), dtype=np.float64).reshape(-1)
        P = np.asarray(_field(pca, "W"), dtype=np.float64).T
    else:
        raise WeightsError(f"{source}: dirtorch 'pca' entry has neither components_ (scikit-learn PCA) nor W/means")
    return torch.from_numpy(m.astype(np.float32)), torch.from_numpy(np.ascontiguousarray(P, dtype=np.float32))


def _load_backbone(arch: str, state_dict: Mapping[str, torch.Tensor], source: str) -> Backbone:
    import torchvision.models as tvm

    tv = dirtorch_torchvision_state(state_dict)
    with torch.device("meta"):  # names and shapes only
        ref = getattr(tvm, arch)(weights=None).state_dict()
    wanted = [k for k in ref if not k.startswith("fc.")]
    missing = [k for k in wanted if k not in tv and not k.endswith("num_batches_tracked")]
    if missing:
        raise WeightsError(f"{source}: dirtorch {arch} checkpoint misses weights, e.g. {missing[0]}")
    bb = build_backbone(arch, "none")
    target = list(bb.state_dict().items())
    mapped = {}
    for (tk, tval), sk in zip(target, wanted):
        src = tv.get(sk, tval)  # old checkpoints have no num_batches_tracked
        if tk.rsplit(".", 1)[-1] != sk.rsplit(".", 1)[-1] or tuple(tval.shape) != tuple(src.shape):
            raise WeightsError(f"{source}: weight {sk} {tuple(src.shape)} does not fit {tk} {tuple(tval.shape)}")
        mapped[tk] = src
    bb.load_state_dict(mapped)
    return bb


def dirtorch_network(obj: Mapping[str, Any], source: str = "checkpoint", *, pca: Optional[str] = None,
                     power: float = WHITEN_POWER) -> DirtorchNet:
    """A :class:`DirtorchNet` from a loaded dirtorch checkpoint, with its PCA ``pca`` (default
    Landmarks_clean, else the only one) at whitening power ``power``.

    Raises:
        WeightsError: one line for another layout, an unknown architecture or pooling, or missing weights.
    """
    opts = obj.get("model_options")
    sd = obj.get("state_dict")
    if not isinstance(opts, Mapping) or not isinstance(sd, Mapping):
        raise WeightsError(f"{source}: not a dirtorch checkpoint (needs 'model_options' and 'state_dict')")
    name = str(opts.get("arch", ""))
    if name not in ARCHS:
        raise WeightsError(f"{source}: dirtorch architecture '{name}' is not supported (use {', '.join(ARCHS)})")
    arch = ARCHS[name]
    pooling = str(opts.get("pooling", "gem"))
    pooling = "gem" if pooling.startswith("gem") else pooling
    if pooling not in POOLINGS:
        raise WeightsError(f"{source}: dirtorch pooling '{pooling}' is not supported (use {', '.join(POOLINGS)})")
    sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}
    bb = _load_backbone(arch, sd, source)
    pre = obj.get("preprocess") or {}
    bb.mean = tuple(float(v) for v in pre.get("mean", bb.mean))
    bb.std = tuple(float(v) for v in pre.get("std", bb.std))
    p = float(opts.get("gemp", 3))
    if pooling == "gem":
        if "adpool.p" not in sd:
            raise WeightsError(f"{source}: dirtorch GeM checkpoint without 'adpool.p'")
        p = float(sd["adpool.p"].reshape(-1)[0])
    fc = None
    if not opts.get("without_fc", False):
        if "fc.weight" not in sd or "fc.bias" not in sd:
            raise WeightsError(f"{source}: dirtorch checkpoint without 'fc.weight' / 'fc.bias'")
        W, b = sd["fc.weight"], sd["fc.bias"]
        if W.dim() != 2 or W.shape[1] != bb.out_channels:
            raise WeightsError(f"{source}: fc layer {tuple(W.shape)} does not fit {bb.out_channels} channels")
        fc = nn.Linear(W.shape[1], W.shape[0], bias=True)
        with torch.no_grad():
            fc.weight.copy_(W.float())
            fc.bias.copy_(b.float())
    config = ModelConfig(backbone=arch, weights=str(source), pooling=POOLINGS[pooling], p=p,
                         image_size=DIRTORCH_IMAGE_SIZE, scales=list(DIRTORCH_SCALES))
    net = DirtorchNet(config, bb, build_pooling(POOLINGS[pooling], p=p), fc, bool(opts.get("norm_features", False)))
    table = obj.get("pca")
    if isinstance(table, Mapping) and table:
        key = pca or (DEFAULT_PCA if DEFAULT_PCA in table else sorted(table)[0])
        if key not in table:
            raise WeightsError(f"{source}: no PCA '{key}' (it has: {', '.join(sorted(table))})")
        m, P = pca_projection(table[key], power, source)
        net.set_pca(m, P)
        net.pca_source = f"{key}, power {power:g}"
    return net.eval()
