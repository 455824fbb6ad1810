"""Losses for training a descriptor on matching / non-matching pairs (Radenović et al., TPAMI 2018).

Training tuples are packed as ``(T, S, D)``: T tuples, each ``S = 2 + n`` L2-normalised descriptors
in the order query, positive, negative_1 .. negative_n. The query is compared with each of the
other ``S - 1`` members.

* Contrastive loss of one pair, with d = ‖a − b‖ and y = 1 for a matching pair, 0 otherwise::

      L = ½·y·d² + ½·(1 − y)·max(margin − d, 0)²

  Default margin 0.85 (ResNet); the paper uses 0.75 for VGG (:func:`default_margin`).
* Triplet loss of (query, positive, negative), squared distances::

      L = max(‖q − p‖² − ‖q − n‖² + margin, 0)

A tuple's loss is the sum over its pairs (or triplets); ``reduction="mean"`` averages that over the
tuples (so the value does not grow with the batch), ``"sum"`` sums (the reference implementation's
convention), ``"none"`` returns the per-tuple values ``(T,)``.
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

Reduction = Literal["mean", "sum", "none"]

#: Squared-distance floor: keeps the gradient of ``sqrt`` finite when two descriptors coincide.
_D2_FLOOR = 1e-12


def default_margin(backbone: str) -> float:
    """Contrastive margin used by the paper for a backbone family: 0.75 for VGG, 0.85 otherwise."""
    return 0.75 if backbone.lower().startswith("vgg") else 0.85


def pair_distance(a: Tensor, b: Tensor) -> Tensor:
    """Euclidean distance of rows: a, b ``(M, D)`` float → ``(M,)``; differentiable at a == b."""
    d2 = (a - b).pow(2).sum(dim=-1)
    return d2.clamp_min(_D2_FLOOR).sqrt()


def contrastive_pair_loss(a: Tensor, b: Tensor, y: Tensor, margin: float = 0.85) -> Tensor:
    """Per-pair contrastive loss.

    Args:
        a, b: ``(M, D)`` float descriptors (normally L2-normalised).
        y: ``(M,)`` 1 for a matching pair, 0 for a non-matching one (float or int/bool).
        margin: non-matching pairs closer than this are penalised.

    Returns:
        ``(M,)`` float: ½·y·d² + ½·(1 − y)·max(margin − d, 0)².
    """
    d = pair_distance(a, b)
    y = y.to(d.dtype)
    return 0.5 * y * d.pow(2) + 0.5 * (1 - y) * (margin - d).clamp_min(0).pow(2)


def _check_tuples(x: Tensor, min_size: int) -> None:
    if x.dim() != 3 or x.shape[1] < min_size:
        raise ValueError(f"expected tuples of shape (T, S>={min_size}, D), got {tuple(x.shape)}")


def _reduce(per_tuple: Tensor, reduction: Reduction) -> Tensor:
    if reduction == "mean":
        return per_tuple.mean()
    if reduction == "sum":
        return per_tuple.sum()
    if reduction == "none":
        return per_tuple
    raise ValueError(f"unknown reduction {reduction!r}")


def contrastive_loss(x: Tensor, margin: float = 0.85, reduction: Reduction = "mean") -> Tensor:
    """Contrastive loss of packed tuples.

    Args:
        x: ``(T, S, D)`` float, S = 2 + n: query, positive, n negatives per tuple.
        margin: contrastive margin.
        reduction: ``"mean"`` over tuples of each tuple's summed pair losses, ``"sum"`` or ``"none"``.

    Returns:
        scalar (or ``(T,)`` with ``reduction="none"``).
    """
    _check_tuples(x, 2)
    t, s, dim = x.shape
    q = x[:, :1, :].expand(t, s - 1, dim).reshape(-1, dim)
    others = x[:, 1:, :].reshape(-1, dim)
    y = torch.zeros(t, s - 1, dtype=x.dtype, device=x.device)
    y[:, 0] = 1
    per_pair = contrastive_pair_loss(q, others, y.reshape(-1), margin)
    return _reduce(per_pair.view(t, s - 1).sum(dim=1), reduction)


def triplet_loss(x: Tensor, margin: float = 0.1, reduction: Reduction = "mean") -> Tensor:
    """Triplet loss of packed tuples (squared distances), summed over each tuple's negatives.

    Args:
        x: ``(T, S, D)`` float, S = 2 + n (n ≥ 1): query, positive, n negatives per tuple.
        margin: required gap between ‖q − n‖² and ‖q − p‖².
        reduction: as in :func:`contrastive_loss`.
    """
    _check_tuples(x, 3)
    q, p, n = x[:, :1, :], x[:, 1:2, :], x[:, 2:, :]
    dp = (q - p).pow(2).sum(-1)  # (T, 1)
    dn = (q - n).pow(2).sum(-1)  # (T, n)
    per_tuple = (dp - dn + margin).clamp_min(0).sum(dim=1)
    return _reduce(per_tuple, reduction)


class ContrastiveLoss(nn.Module):
    """Module form of :func:`contrastive_loss`; ``forward(x: (T, S, D)) -> scalar``."""

    def __init__(self, margin: float = 0.85, reduction: Reduction = "mean") -> None:
        super().__init__()
        self.margin = float(margin)
        self.reduction: Reduction = reduction

    def forward(self, x: Tensor) -> Tensor:
        return contrastive_loss(x, self.margin, self.reduction)

    def extra_repr(self) -> str:
        return f"margin={self.margin:.4f}, reduction={self.reduction}"


class TripletLoss(nn.Module):
    """Module form of :func:`triplet_loss`; ``forward(x: (T, S, D)) -> scalar``."""

    def __init__(self, margin: float = 0.1, reduction: Reduction = "mean") -> None:
        super().__init__()
        self.margin = float(margin)
        self.reduction: Reduction = reduction

    def forward(self, x: Tensor) -> Tensor:
        return triplet_loss(x, self.margin, self.reduction)

    def extra_repr(self) -> str:
        return f"margin={self.margin:.4f}, reduction={self.reduction}"


def build_loss(name: str, margin: float, reduction: Reduction = "mean") -> nn.Module:
    """``"contrastive"`` → :class:`ContrastiveLoss`, ``"triplet"`` → :class:`TripletLoss`."""
    if name == "contrastive":
        return ContrastiveLoss(margin, reduction)
    if name == "triplet":
        return TripletLoss(margin, reduction)
    raise ValueError(f"unknown loss {name!r} (contrastive, triplet)")
