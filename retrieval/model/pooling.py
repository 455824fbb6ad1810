"""Global pooling of a feature map into a descriptor: GeM, MAC, SPoC, R-MAC, masked GeM.

Each pooling is a pure function of ``x: (N, C, h, w) float32`` returning ``(N, C) float32``, wrapped
by a small ``nn.Module``. GeM (Radenović, Tolias, Chum, TPAMI 2018) is
``f_c = (mean_x X_c(x)^p)^(1/p)``: ``p = 1`` is SPoC (average pooling), ``p → ∞`` is MAC (max
pooling). Its ``p`` is a learnable parameter of :class:`GeM`.
"""
from __future__ import annotations

import math
from typing import List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from retrieval.core.errors import ConfigError

POOLINGS = ("gem", "mac", "spoc", "rmac")


def gem(x: torch.Tensor, p: "float | torch.Tensor" = 3.0, eps: float = 1e-6) -> torch.Tensor:
    """Generalized-mean pooling. x: (N, C, h, w) float32 ≥ 0 → (N, C) float32.

    Values are clamped at ``eps`` so that fractional powers and the gradient w.r.t. p are finite.
    """
    return x.clamp(min=eps).pow(p).mean(dim=(-2, -1)).pow(1.0 / p)


def mac(x: torch.Tensor) -> torch.Tensor:
    """Max pooling. x: (N, C, h, w) → (N, C)."""
    return x.amax(dim=(-2, -1))


def spoc(x: torch.Tensor) -> torch.Tensor:
    """Sum (average) pooling. x: (N, C, h, w) → (N, C)."""
    return x.mean(dim=(-2, -1))


def masked_gem(x: torch.Tensor, mask: torch.Tensor, p: "float | torch.Tensor" = 3.0,
               eps: float = 1e-6) -> torch.Tensor:
    """GeM weighted by a spatial mask: ``f_c = (Σ m(x) X_c(x)^p / Σ m(x))^(1/p)``.

    Args:
        x: (N, C, h, w) float32 ≥ 0.
        mask: (N, h, w) or (N, 1, h, w) float32 ≥ 0 weights; an all-ones mask gives :func:`gem`.
    Returns:
        (N, C) float32. Rows whose mask sums to 0 fall back to plain GeM.
    """
    if mask.dim() == 3:
        mask = mask.unsqueeze(1)
    mask = mask.to(x.dtype).clamp(min=0)
    total = mask.sum(dim=(-2, -1))  # (N, 1)
    empty = total <= 0
    mask = torch.where(empty[..., None, None], torch.ones_like(mask), mask)
    total = torch.where(empty, torch.full_like(total, x.shape[-2] * x.shape[-1]), total)
    num = (x.clamp(min=eps).pow(p) * mask).sum(dim=(-2, -1))
    return (num / total).pow(1.0 / p)


def rmac_regions(h: int, w: int, levels: int = 3, overlap: float = 0.4) -> List[Tuple[int, int, int, int]]:
    """R-MAC regions (Tolias, Sicre, Jégou, ICLR 2016) on an h×w map, as (top, left, height, width).

    Level l has square regions of side ``2·min(h, w)/(l+1)`` laid on a uniform grid with about
    ``overlap`` between neighbours; the long side gets extra regions so that the grid covers it.
    """
    side = min(h, w)
    long_side = max(h, w)
    # Extra steps along the long side that make consecutive level-1 regions overlap ≈ `overlap`.
    extra = 0
    if long_side > side:
        best = None
        for steps in range(1, 7):
            b = (long_side - side) / steps
            err = abs((side * side - side * b) / (side * side) - overlap)
            if best is None or err < best:
                best, extra = err, steps
    regions: List[Tuple[int, int, int, int]] = []
    for level in range(1, levels + 1):
        size = int(math.floor(2 * side / (level + 1)))
        if size < 1:
            break
        n_short = level
        n_long = level + extra
        n_h, n_w = (n_long, n_short) if h > w else (n_short, n_long)

        def starts(length: int, n: int) -> List[int]:
            if n <= 1 or length <= size:
                return [max(0, (length - size) // 2)]
            step = (length - size) / (n - 1)
            return sorted({int(round(i * step)) for i in range(n)})

        for top in starts(h, n_h):
            for left in starts(w, n_w):
                regions.append((top, left, min(size, h), min(size, w)))
    return regions


def rmac(x: torch.Tensor, levels: int = 3, overlap: float = 0.4, eps: float = 1e-6) -> torch.Tensor:
    """Regional MAC. x: (N, C, h, w) → (N, C): Σ over the global map and the R-MAC regions of the
    L2-normalised MAC of each region."""
    out = F.normalize(mac(x), dim=-1, eps=eps)
    for top, left, hh, ww in rmac_regions(x.shape[-2], x.shape[-1], levels, overlap):
        out = out + F.normalize(mac(x[..., top:top + hh, left:left + ww]), dim=-1, eps=eps)
    return out


class GeM(nn.Module):
    """GeM pooling with a learnable exponent ``p`` (initial 3)."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6, learn_p: bool = True) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.tensor(float(p)), requires_grad=learn_p)
        self.eps = eps

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x: (N, C, h, w) → (N, C); with ``mask`` (N, h, w) it is :func:`masked_gem`."""
        if mask is not None:
            return masked_gem(x, mask, self.p, self.eps)
        return gem(x, self.p, self.eps)

    def __repr__(self) -> str:
        return f"GeM(p={self.p.item():.4f}, eps={self.eps})"


class MAC(nn.Module):
    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        return mac(x if mask is None else x * (mask.unsqueeze(1) if mask.dim() == 3 else mask))

    def __repr__(self) -> str:
        return "MAC()"


class SPoC(nn.Module):
    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        if mask is None:
            return spoc(x)
        return masked_gem(x, mask, 1.0)

    def __repr__(self) -> str:
        return "SPoC()"


class RMAC(nn.Module):
    def __init__(self, levels: int = 3, overlap: float = 0.4) -> None:
        super().__init__()
        self.levels, self.overlap = levels, overlap

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        if mask is not None:
            x = x * (mask.unsqueeze(1) if mask.dim() == 3 else mask)
        return rmac(x, self.levels, self.overlap)

    def __repr__(self) -> str:
        return f"RMAC(levels={self.levels}, overlap={self.overlap})"


def build_pooling(name: str, p: float = 3.0, learn_p: bool = True) -> nn.Module:
    """Pooling module by name (``gem`` | ``mac`` | ``spoc`` | ``rmac``)."""
    name = name.lower()
    if name == "gem":
        return GeM(p=p, learn_p=learn_p)
    if name == "mac":
        return MAC()
    if name == "spoc":
        return SPoC()
    if name == "rmac":
        return RMAC()
    raise ConfigError(f"unknown pooling '{name}'; choose from: {', '.join(POOLINGS)}")
