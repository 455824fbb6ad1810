"""Deep Feature Factorization (Collins, Achanta & Süsstrunk, ECCV 2018): co-segmentation by
factorising CNN activations over a set of images.

Pipeline::

    images ─► activations.load_images (any mode → RGB, long side = image_size)
           ─► activations.extract_activations (one backbone layer tap; images of one size batched)
           ─► A: (Σ_i h_i·w_i, C) float32 ≥ 0  (every position of every image is a row)
           ─► factorize_activations (nmf | sigmoid-nmf | deep-semi-nmf) → W (Σ h_i w_i, k) ≥ 0, H (k, C)
           ─► heatmaps (N × (k, H_i, W_i)): W's columns per image, upsampled bilinearly to the
              image size, each factor divided by its maximum over the set (values in [0, 1])
           ─► choose_object_factors (rule below) ─► masks.object_masks ─► masks.boxes_from_masks

Object factor rule (:func:`choose_object_factors`): the object is what lies *inside* the images,
not on their borders. For each factor j its border share
``b_j = (mass of j on the outer ring of cells) / (total mass of j)``, pooled over the set, is
divided by the ring's share of the cells ``r`` (what a factor spread uniformly would get), and a
factor counts as present in an image when its maximum there reaches 0.25 of its set maximum.
Object factors are those present in at least half of the images with ``b_j / r < 0.8`` (with
k ≥ 3 an object often splits into parts, and the union keeps them all); if none qualifies, the
present factor with the lowest ``b_j / r`` (:func:`choose_object_factor`); never all k factors
(k ≥ 2). With k = 1 the only factor is the object. (Measured on the toy sets, this union rule
beat the single least-border factor for k ≥ 3 and equals it for k = 2; see docs/coseg.md.)

Factors are numbered from 0 (the rows of H), here, in the tools, in configs and in concept files;
:func:`select_object_factors` takes factors given by the user or applies one of the two rules.
Concepts learned on one set project onto new images with fixed H (:func:`project_concepts`) and
travel in concept files (:mod:`cosegment.concept_file`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from cosegment.activations import stack_activations
from cosegment.factorizers import factorize, project
from retrieval.core.backbone import resolve_device
from retrieval.core.errors import DataError, ModelMismatchError

ArrayLike = Union[np.ndarray, torch.Tensor]


# ----------------------------------------------------------------------------------------------
# Factorisation and heat maps
# ----------------------------------------------------------------------------------------------
@dataclass
class DFFResult:
    """W: (Σ h_i w_i, k) float32 ≥ 0 (numpy); H: (k, C) float32 concepts; shapes: (h_i, w_i) per
    image; method: factoriser; seconds: time of the factorisation."""

    W: np.ndarray
    H: np.ndarray
    shapes: List[Tuple[int, int]]
    method: str = "nmf"
    seconds: float = 0.0

    @property
    def k(self) -> int:
        return int(self.W.shape[1])

    def maps(self) -> List[np.ndarray]:
        """Low-resolution factor maps per image: (k, h_i, w_i) float32."""
        out, o = [], 0
        for h, w in self.shapes:
            out.append(np.ascontiguousarray(self.W[o:o + h * w].T.reshape(self.k, h, w)))
            o += h * w
        return out


def max_factors(shapes: Sequence[Tuple[int, int]], channels: int) -> int:
    """The largest k the data allows: min(number of positions, number of channels)."""
    return min(sum(h * w for h, w in shapes), channels)


def factorize_activations(acts: Sequence[torch.Tensor], k: int, method: str = "nmf", seed: int = 0,
                          device: Optional[Union[str, torch.device]] = None, **options: Any) -> DFFResult:
    """Stack per-image activations (C, h_i, w_i) and factorise them into ``k`` factors."""
    A, shapes = stack_activations(acts)
    kmax = max_factors(shapes, A.shape[1])
    if k < 1 or k > kmax:
        raise DataError(f"k={k} is larger than the data allows: {len(shapes)} image(s) give "
                        f"{sum(h * w for h, w in shapes)} positions × {A.shape[1]} channels (k ≤ {kmax})")
    dev = resolve_device(device)
    f = factorize(A.to(dev), k, method=method, seed=seed, **options)
    W = f.W.detach().cpu().numpy() if isinstance(f.W, torch.Tensor) else f.W
    H = f.H.detach().cpu().numpy() if isinstance(f.H, torch.Tensor) else f.H
    return DFFResult(np.ascontiguousarray(W, np.float32), np.ascontiguousarray(H, np.float32), shapes, method, f.seconds)


def project_concepts(acts: Sequence[torch.Tensor], H: ArrayLike, max_iter: int = 100) -> DFFResult:
    """Heat maps of new images on fixed concepts ``H (k, C)``: W ≥ 0 by fixed-H NMF (NNLS)."""
    A, shapes = stack_activations(acts)
    Ht = torch.as_tensor(np.asarray(H, np.float32) if not torch.is_tensor(H) else H).float()
    if Ht.dim() != 2 or Ht.shape[1] != A.shape[1]:
        raise ModelMismatchError(f"concepts have {Ht.shape[-1]} channels, the layer gives {A.shape[1]}")
    t0 = time.perf_counter()
    W = project(A, Ht, max_iter=max_iter)
    W = W.cpu().numpy() if isinstance(W, torch.Tensor) else W
    return DFFResult(np.ascontiguousarray(W, np.float32), Ht.cpu().numpy(), shapes, "projection",
                     time.perf_counter() - t0)


def heatmaps(result: DFFResult, sizes: Sequence[Tuple[int, int]], normalise: bool = True) -> List[np.ndarray]:
    """Per image (k, H_i, W_i) float32: factor maps upsampled bilinearly to the image size
    ``sizes[i] = (H_i, W_i)`` and, with ``normalise``, each factor divided by its maximum over the
    set (values in [0, 1]; a factor that is zero everywhere stays zero)."""
    maps = result.maps()
    if len(sizes) != len(maps):
        raise DataError(f"{len(sizes)} image sizes for {len(maps)} images")
    scale = np.ones(result.k, np.float32)
    if normalise:
        mx = np.max(np.stack([m.reshape(result.k, -1).max(1) for m in maps]), 0)
        scale = np.where(mx > 0, 1.0 / np.maximum(mx, 1e-30), 0.0).astype(np.float32)
    out = []
    for m, (H, W) in zip(maps, sizes):
        t = torch.from_numpy(m * scale[:, None, None])[None]
        up = F.interpolate(t, size=(int(H), int(W)), mode="bilinear", align_corners=False)[0]
        out.append(up.clamp_(0, 1 if normalise else float("inf")).numpy())
    return out


# ----------------------------------------------------------------------------------------------
# Object factor
# ----------------------------------------------------------------------------------------------
@dataclass
class FactorStats:
    """Per factor (k,): border share b_j / ring share r (< 1: inside the images), presence (the
    fraction of images where the factor reaches 0.25 of its set maximum) and mass share."""

    border_ratio: np.ndarray
    presence: np.ndarray
    mass: np.ndarray


def factor_presence(result: DFFResult) -> np.ndarray:
    """(N, k) bool: factor j is present in image i when its maximum there reaches 0.25 of its
    maximum over the set (a factor that is zero everywhere is present nowhere)."""
    P = np.stack([m.reshape(result.k, -1).max(1) for m in result.maps()])  # (N, k)
    gmax = P.max(0)
    return (P >= 0.25 * np.maximum(gmax, 1e-30)) & (gmax > 0)[None]


def factor_stats(result: DFFResult) -> FactorStats:
    """Border, presence and mass statistics of every factor (see the module docstring)."""
    k = result.k
    border = np.zeros(k)
    total = np.zeros(k)
    cells = ring = 0
    for m in result.maps():
        _, h, w = m.shape
        ringmask = np.zeros((h, w), bool)
        if h > 2 and w > 2:
            ringmask[0, :] = ringmask[-1, :] = ringmask[:, 0] = ringmask[:, -1] = True
        else:
            ringmask[:] = True
        border += m[:, ringmask].sum(1)
        total += m.reshape(k, -1).sum(1)
        cells += h * w
        ring += int(ringmask.sum())
    presence = factor_presence(result).mean(0)
    r = ring / max(cells, 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(total > 0, border / np.maximum(total, 1e-30), 1.0)
    ratio = share / r if r > 0 else np.ones(k)
    mass = total / max(total.sum(), 1e-30)
    return FactorStats(ratio.astype(np.float64), presence.astype(np.float64), mass)


def choose_object_factor(result: DFFResult, min_presence: float = 0.5) -> int:
    """Index (0-based) of the single object factor: among factors present in ≥ ``min_presence``
    of the images, the one with the least mass on the image borders relative to a uniform factor."""
    if result.k == 1:
        return 0
    st = factor_stats(result)
    ok = st.presence >= min_presence
    if not ok.any():
        ok = st.presence >= st.presence.max()
    ratio = np.where(ok, st.border_ratio, np.inf)
    return int(np.argmin(ratio))


def choose_object_factors(result: DFFResult, max_border_ratio: float = 0.8, min_presence: float = 0.5) -> List[int]:
    """The factors (0-based, sorted) whose union is the object: every factor present in ≥
    ``min_presence`` of the images whose border share is below ``max_border_ratio`` × the ring's
    share (an object split into parts keeps all its parts); never all k factors when k ≥ 2 (the
    one most on the borders is background); at least the single best factor
    (:func:`choose_object_factor`)."""
    if result.k == 1:
        return [0]
    st = factor_stats(result)
    fs = [j for j in range(result.k) if st.presence[j] >= min_presence and st.border_ratio[j] < max_border_ratio]
    if len(fs) == result.k:
        fs.remove(int(np.argmax(st.border_ratio)))
    return sorted(fs) or [choose_object_factor(result, min_presence)]


def choose_anchored_factors(result: DFFResult, anchor: int = 0, max_border_ratio: float = 0.8,
                            min_presence: float = 0.5) -> List[int]:
    """The factors (0-based, sorted) that image ``anchor`` shares with the others: present in the
    anchor, present in ≥ ``min_presence`` of the other images, and with a border share below
    ``max_border_ratio`` × the ring's share; never all k factors when k ≥ 2 (the one most on the
    borders is dropped). If none qualifies: the factor present in the anchor with the least mass on
    the borders. (For a query and its shortlist: the object they agree on, whatever the shortlist's
    wrong hits share among themselves.)"""
    if result.k == 1:
        return [0]
    st = factor_stats(result)
    pres = factor_presence(result)
    others = np.delete(pres, anchor, axis=0)
    shared = others.mean(0) if len(others) else np.ones(result.k)
    fs = [j for j in range(result.k)
          if pres[anchor, j] and shared[j] >= min_presence and st.border_ratio[j] < max_border_ratio]
    if len(fs) == result.k:
        fs.remove(int(np.argmax(st.border_ratio)))
    if fs:
        return sorted(fs)
    ratio = np.where(pres[anchor], st.border_ratio, np.inf)
    return [int(np.argmin(ratio))] if np.isfinite(ratio).any() else [choose_object_factor(result, min_presence)]


OBJECT_RULES = ("union", "single")


def check_object_rule(rule: str) -> None:
    """A :class:`DataError` unless ``rule`` is one of :data:`OBJECT_RULES`."""
    if rule not in OBJECT_RULES:
        raise DataError(f"object_rule must be 'single' or 'union', got {rule!r}")


def select_object_factors(result: DFFResult, given: Optional[Sequence[int]] = None, *, rule: str = "union",
                          max_border_ratio: float = 0.8, min_presence: float = 0.5) -> List[int]:
    """The object factors of ``result`` (numbered from 0, sorted): ``given`` when not None
    (checked against k, :class:`DataError` if out of range), else by ``rule``: ``union``
    (:func:`choose_object_factors`, every factor that stays off the borders) or ``single``
    (:func:`choose_object_factor`, the one least on the borders)."""
    check_object_rule(rule)
    if given is not None:
        obj = sorted(int(j) for j in given)
        if any(j < 0 or j >= result.k for j in obj):
            raise DataError(f"object factors are numbered from 0 (0..{result.k - 1}), got {obj}")
        return obj
    if rule == "single":
        return [choose_object_factor(result, min_presence)]
    return choose_object_factors(result, max_border_ratio=max_border_ratio, min_presence=min_presence)
