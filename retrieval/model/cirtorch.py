"""cirtorch checkpoints (filipradenovic/cnnimageretrieval-pytorch) as gemseg networks, descriptors as cirtorch computes them.

A cirtorch file (layout: :mod:`retrieval.core.foreign_weights`) becomes a :class:`CirtorchNet`,
a :class:`~retrieval.model.network.DescriptorNet` whose pieces follow cirtorch's
``ImageRetrievalNet`` and ``extract_ms``:

* one scale: ``v = L2(GeM(features(x)))`` (GeM clamps at 1e-6; MAC and SPoC too), then, with a
  whiten layer (``meta["whitening"]``: an ``nn.Linear(C, C)``), ``v = L2(W v + b)``;
* several scales: each made from the normalised batch by bilinear interpolation with
  ``scale_factor = s`` (``align_corners=False``, no antialiasing: :func:`plain_rescale`);
  ``v = L2((mean_s v_s^msp)^(1/msp))`` with ``msp = p`` for a GeM network without a whiten layer
  and 1 otherwise (cirtorch's ``test.py`` rule);
* the precomputed Lw ``meta["Lw"][<dataset>]["ss" | "ms"] = {"m", "P"}``, when present:
  ``v = L2(P (v − m))`` with ``ss`` at one scale and ``ms`` at several (cirtorch's
  ``whitenapply``).

Defaults are the paper's test settings: long side 1024, scales 1, 1/√2, 1/2 (``--image-size`` and
``--scales`` of the tools override them). Regional pooling (``meta["regional"]``), local
whitening (``meta["local_whitening"]``) and GeMmp / R-MAC pooling are refused in one line.

What differs from cirtorch: images are resized to the long side with PIL's bilinear filter
(cirtorch: ``thumbnail`` with Lanczos), as for every gemseg model; the network from the tensor on
is cirtorch's (tested against a forward written from these equations).
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from retrieval.core.backbone import backbone_names, build_backbone
from retrieval.core.errors import WeightsError, first_line
from retrieval.core.foreign_weights import cirtorch_torchvision_state
from retrieval.core.feature_extractor import Backbone
from retrieval.model.network import MULTISCALE, DescriptorNet, ModelConfig
from retrieval.model.pooling import GeM, build_pooling

#: The paper's test settings (cirtorch's test.py: --image-size 1024 --multiscale '[1, 1/2**(1/2), 1/2]').
CIRTORCH_IMAGE_SIZE = 1024
CIRTORCH_SCALES = tuple(MULTISCALE)
CIRTORCH_POOLINGS = ("gem", "mac", "spoc")
#: The whitening dataset cirtorch's released models precompute Lw on.
DEFAULT_LW = "retrieval-SfM-120k"


def plain_rescale(x: torch.Tensor, s: float) -> torch.Tensor:
    """cirtorch's scale: ``x (B, 3, H, W)`` → bilinear by ``scale_factor=s`` (``floor(s·H)``,
    ``align_corners=False``, no antialiasing); ``s = 1`` returns ``x``."""
    if abs(s - 1.0) <= 1e-6:
        return x
    return F.interpolate(x, scale_factor=float(s), mode="bilinear", align_corners=False)


def signed_pow(x: torch.Tensor, p: float, eps: float = 1e-6) -> torch.Tensor:
    """dirtorch's ``sympow``: ``sign(x) · max(|x|, eps)^p``."""
    s = torch.sign(x)
    return (x * s).clamp(min=eps).pow(p) * s


def generalized_mean(vectors: Sequence[torch.Tensor], msp: float, signed: bool = False) -> torch.Tensor:
    """``L2((mean_s v_s^msp)^(1/msp))`` of per-scale ``(B, D)`` float32 vectors; ``msp = 1`` is the
    plain mean (the vectors may then be negative). ``signed``: the power keeps the sign
    (dirtorch's pooling of several transforms, :func:`signed_pow`); else the vectors are clamped
    at 0 first (they are non-negative GeM vectors)."""
    if msp == 1.0:
        v = sum(vectors) / len(vectors)
    elif signed:
        v = signed_pow(sum(signed_pow(t, msp) for t in vectors) / len(vectors), 1.0 / msp)
    else:
        v = (sum(t.clamp(min=0).pow(msp) for t in vectors) / len(vectors)).pow(1.0 / msp)
    return F.normalize(v, dim=-1)


class CirtorchNet(DescriptorNet):
    """A cirtorch ``ImageRetrievalNet`` (see the module docstring).

    ``pooled(x)`` is cirtorch's network output at one scale (after the whiten layer, if any);
    the whitening slot holds the precomputed Lw for the configured number of scales (``ms`` for
    several, ``ss`` for one); both stay as buffers, and :meth:`describe_scales` picks by the
    scales it is given. ``forward(x)`` is the single-scale descriptor.
    """

    def __init__(self, config: ModelConfig, backbone: Backbone, pool: nn.Module,
                 whiten: Optional[nn.Linear], lw: Mapping[str, Tuple[torch.Tensor, torch.Tensor]]) -> None:
        super().__init__(config, backbone, pool)
        self.whiten = whiten
        for kind in ("ss", "ms"):
            m, P = lw.get(kind, (torch.zeros(0), torch.zeros(0, 0)))
            self.register_buffer(f"lw_{kind}_m", m.float().clone())
            self.register_buffer(f"lw_{kind}_P", P.float().clone())
        self.lw_source = ""

    @property
    def pooled_dim(self) -> int:
        """C of :meth:`pooled` (the whiten layer's output, or the backbone's channels)."""
        return self.whiten.out_features if self.whiten is not None else self.backbone.out_channels

    @property
    def msp(self) -> float:
        """The exponent of the mean over scales: GeM's p without a whiten layer, else 1."""
        if isinstance(self.pool, GeM) and self.whiten is None:
            return float(self.pool.p.detach())
        return 1.0

    @property
    def scale_rule(self) -> Tuple[str, float, bool]:
        """``("plain", msp, False)``: how :mod:`retrieval.model.onnx_export` records the multi-scale rule."""
        return "plain", self.msp, False

    def pooled(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x (N, 3, H, W) → cirtorch's output at this scale, (N, C) float32, unit rows."""
        v = super().pooled(x, mask)
        if self.whiten is not None:
            v = F.normalize(self.whiten(v), dim=-1)
        return v

    def lw_for(self, n_scales: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """The precomputed Lw ``(m (C,), P (C, C))`` for ``n_scales`` scales (empty when absent)."""
        kind = "ms" if n_scales > 1 else "ss"
        return getattr(self, f"lw_{kind}_m"), getattr(self, f"lw_{kind}_P")

    def use_lw_for(self, n_scales: int) -> None:
        """Fill the whitening slot with the Lw for ``n_scales`` scales (or empty it)."""
        m, P = self.lw_for(n_scales)
        if P.numel():
            self.set_whitening(m, P, kind="lw")
        else:
            self.clear_whitening()

    @torch.inference_mode()
    def describe_scales(self, x: torch.Tensor, scales: Sequence[float]) -> torch.Tensor:
        """cirtorch's ``extract_ss`` / ``extract_ms`` then ``whitenapply``: x (B, 3, H, W) float32
        → (B, D) float32 unit rows."""
        scales = list(scales)
        v = generalized_mean([self.pooled(plain_rescale(x, s)).float() for s in scales],
                             self.msp if len(scales) > 1 else 1.0)
        m, P = self.lw_for(len(scales))
        if P.numel():
            d = min(P.shape[0], self.config.dim) if self.config.dim else P.shape[0]
            v = F.normalize((v - m) @ P[:d].t(), dim=-1)
        return v

    def extra_repr(self) -> str:
        return f"cirtorch, dim={self.dim}, msp={self.msp:g}, lw={self.lw_source or 'none'}"


def _need(meta: Mapping[str, Any], key: str, source: str) -> Any:
    if key not in meta:
        raise WeightsError(f"{source}: cirtorch checkpoint without meta['{key}']")
    return meta[key]


def _as_tensor(a: Any, what: str, source: str) -> torch.Tensor:
    try:
        return torch.as_tensor(np.asarray(a, dtype=np.float32))
    except (TypeError, ValueError) as e:
        raise WeightsError(f"{source}: {what} is not an array: {first_line(e, 120)}") from None


def _lw(meta: Mapping[str, Any], source: str, which: Optional[str] = None) -> Tuple[Dict[str, Tuple[torch.Tensor, torch.Tensor]], str]:
    """The precomputed Lw of ``meta`` (``which`` dataset; default retrieval-SfM-120k, else the only one)."""
    table = meta.get("Lw")
    if not table:
        return {}, ""
    if not isinstance(table, Mapping):
        raise WeightsError(f"{source}: meta['Lw'] is not a table of whitenings")
    name = which or (DEFAULT_LW if DEFAULT_LW in table else sorted(table)[0])
    if name not in table:
        raise WeightsError(f"{source}: no precomputed Lw '{name}' (it has: {', '.join(sorted(table))})")
    out: Dict[str, Tuple[torch.Tensor, torch.Tensor]] = {}
    for kind in ("ss", "ms"):
        entry = table[name].get(kind) if isinstance(table[name], Mapping) else None
        if entry is None:
            continue
        if not isinstance(entry, Mapping) or "m" not in entry or "P" not in entry:
            raise WeightsError(f"{source}: meta['Lw']['{name}']['{kind}'] lacks 'm' or 'P'")
        m = _as_tensor(entry["m"], f"Lw {kind} m", source).reshape(-1)
        P = _as_tensor(entry["P"], f"Lw {kind} P", source)
        out[kind] = (m, P)
    return out, name


def _load_backbone(arch: str, state_dict: Mapping[str, torch.Tensor], source: str) -> Backbone:
    """The gemseg backbone ``arch`` with cirtorch's ``features.*`` weights (matched in module
    order, names and shapes checked)."""
    import torchvision.models as tvm

    tv_state = cirtorch_torchvision_state(state_dict, arch)
    with torch.device("meta"):  # names and shapes only
        reference = getattr(tvm, arch)(weights=None).state_dict()
    wanted = [k for k in reference if not k.startswith(("fc.", "classifier."))]
    missing = [k for k in wanted if k not in tv_state]
    if missing:
        raise WeightsError(f"{source}: cirtorch {arch} checkpoint misses weights, e.g. {missing[0]} "
                           f"(features.* as cirtorch saves them)")
    bb = build_backbone(arch, "none")
    target = list(bb.state_dict().items())
    if len(target) != len(wanted):
        raise WeightsError(f"{source}: {len(wanted)} {arch} weights do not map onto gemseg's {len(target)}")
    mapped = {}
    for (tk, tv), sk in zip(target, wanted):
        src = tv_state[sk]
        if tk.rsplit(".", 1)[-1] != sk.rsplit(".", 1)[-1] or tuple(tv.shape) != tuple(src.shape):
            raise WeightsError(f"{source}: weight {sk} {tuple(src.shape)} does not fit {tk} {tuple(tv.shape)}")
        mapped[tk] = src
    bb.load_state_dict(mapped)
    return bb


def cirtorch_network(obj: Mapping[str, Any], source: str = "checkpoint", *, lw: Optional[str] = None) -> CirtorchNet:
    """A :class:`CirtorchNet` from a loaded cirtorch checkpoint (``{"meta", "state_dict"}``).

    Args:
        obj: the file's object (read with :func:`retrieval.core.foreign_weights.foreign_loading`).
        source: how messages name it. lw: which precomputed Lw (default retrieval-SfM-120k).

    Raises:
        WeightsError: one line for a layout that is not cirtorch's, a missing key, an
            architecture or pooling gemseg does not have, regional pooling or local whitening.
    """
    meta = obj.get("meta")
    sd = obj.get("state_dict")
    if not isinstance(meta, Mapping) or not isinstance(sd, Mapping):
        raise WeightsError(f"{source}: not a cirtorch checkpoint (needs 'meta' and 'state_dict')")
    arch = str(_need(meta, "architecture", source)).lower()
    pooling = str(_need(meta, "pooling", source)).lower()
    mean, std = _need(meta, "mean", source), _need(meta, "std", source)
    if meta.get("regional"):
        raise WeightsError(f"{source}: cirtorch regional pooling (R-pooling, '-r' models) is not supported; "
                           f"use a global-pooling model")
    if meta.get("local_whitening"):
        raise WeightsError(f"{source}: cirtorch local whitening ('-lw' models) is not supported; use a model without it")
    if pooling not in CIRTORCH_POOLINGS:
        raise WeightsError(f"{source}: cirtorch pooling '{pooling}' is not supported (use {', '.join(CIRTORCH_POOLINGS)})")
    if not (arch.startswith(("resnet", "vgg")) and arch in backbone_names()):
        raise WeightsError(f"{source}: cirtorch architecture '{arch}' is not supported (ResNet-50/101/152, VGG-16)")
    bb = _load_backbone(arch, sd, source)
    bb.mean, bb.std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
    p = 3.0
    if pooling == "gem":
        if "pool.p" not in sd:
            raise WeightsError(f"{source}: cirtorch GeM checkpoint without 'pool.p'")
        p = float(sd["pool.p"].reshape(-1)[0])
    whiten = None
    if meta.get("whitening"):
        if "whiten.weight" not in sd or "whiten.bias" not in sd:
            raise WeightsError(f"{source}: meta['whitening'] is set but 'whiten.weight' / 'whiten.bias' are missing")
        W, b = sd["whiten.weight"], sd["whiten.bias"]
        if W.dim() != 2 or W.shape[1] != bb.out_channels or b.shape != (W.shape[0],):
            raise WeightsError(f"{source}: whiten layer {tuple(W.shape)} does not fit {bb.out_channels} channels")
        whiten = nn.Linear(W.shape[1], W.shape[0], bias=True)
        with torch.no_grad():
            whiten.weight.copy_(W.float())
            whiten.bias.copy_(b.float())
    lw_table, lw_name = _lw(meta, source, lw)
    config = ModelConfig(backbone=arch, weights=str(source), pooling=pooling, p=p,
                         image_size=CIRTORCH_IMAGE_SIZE, scales=list(CIRTORCH_SCALES),
                         whitening="lw" if lw_table else "none")
    net = CirtorchNet(config, bb, build_pooling(pooling, p=p), whiten, lw_table)
    for kind, (m, P) in lw_table.items():
        if m.shape != (net.pooled_dim,) or P.dim() != 2 or P.shape[1] != net.pooled_dim:
            raise WeightsError(f"{source}: Lw {kind} shapes m {tuple(m.shape)}, P {tuple(P.shape)} do not fit "
                               f"{net.pooled_dim}-dimensional descriptors")
    net.lw_source = lw_name
    net.use_lw_for(len(config.scales))  # the whitening slot, and config.whitening
    return net.eval()
