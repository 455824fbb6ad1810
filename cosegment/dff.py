"""Deep Feature Factorization (Collins, Achanta & Süsstrunk, ECCV 2018): co-segmentation by
factorising CNN activations over a set of images.

Pipeline::

    images ─► load_images (any mode → RGB, long side = image_size)
           ─► extract_activations (Backbone.forward_layers at one layer; images of one size batched)
           ─► A: (Σ_i h_i·w_i, C) float32 ≥ 0  (every position of every image is a row)
           ─► factorize (nmf | sigmoid-nmf | deep-semi-nmf) → W (Σ h_i w_i, k) ≥ 0, H (k, C)
           ─► heat maps (N × (k, H_i, W_i)): W's columns per image, upsampled bilinearly to the
              image size, each factor divided by its maximum over the set (values in [0, 1])
           ─► object factor (rule below) ─► Otsu mask per image ─► co-localisation box

Object factor rule (:func:`choose_object_factors`): the object is what lies *inside* the images,
not on their borders. For each factor j its border share
``b_j = (mass of j on the outer ring of cells) / (total mass of j)``, pooled over the set, is
divided by the ring's share of the cells ``r`` (what a factor spread uniformly would get), and a
factor counts as present in an image when its maximum there reaches 0.25 of its set maximum.
Object factors are those present in at least half of the images with ``b_j / r < 0.8`` (with
k ≥ 3 an object often splits into parts, and the union keeps them all); if none qualifies, the
present factor with the lowest ``b_j / r`` (:func:`choose_object_factor`); never all k factors
(k ≥ 2). With k = 1 the only factor is the object. (Measured on the toy sets, this union rule
beat the single least-border factor for k ≥ 3 and equals it for k = 2; see the README.)

Masks (:func:`object_masks`): the object heat map thresholded by Otsu's method on the pooled
histogram of the set (so an image without the object gets an empty or small mask rather than
half of its pixels), or by a fixed value in [0, 1]. Boxes (:func:`mask_box` of the largest
8-connected component of each mask).

Part co-segmentation (:func:`part_labels`): the label of a pixel is ``1 + argmax_j heat_j`` where
the object mask is on, 0 elsewhere (``--parts``).

Concepts learned on one set project onto new images with fixed H (:func:`project_concepts`) and
travel in concept files (:func:`save_concepts` / :func:`load_concepts`) that carry the backbone's
fingerprint and layer; a file made with another backbone raises
:class:`~retrieval.errors.ModelMismatchError`.
"""
from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from retrieval.backbone import Backbone, hash_state, resolve_device
from retrieval.data import load_image, resize_long_side, to_tensor
from retrieval.errors import DataError, ImageError, ModelMismatchError, WeightsError
from retrieval.io import atomic_path

from .evaluate import mask_box
from .factorize import FACTORIZERS, factorize, project

PathLike = Union[str, Path]
ArrayLike = Union[np.ndarray, torch.Tensor]

#: Layer factorised by default, per backbone (see the README for the layer comparison).
DEFAULT_LAYERS: Dict[str, str] = {
    "efficientnet_lite0": "block14",
    "vgg16": "relu5_3",
    "vgg19": "relu5_4",
    "resnet18": "layer4", "resnet34": "layer4", "resnet50": "layer4",
    "resnet101": "layer4", "resnet152": "layer4",
}
#: Long side of the network input by default, per backbone.
DEFAULT_IMAGE_SIZES: Dict[str, int] = {"efficientnet_lite0": 320}
FALLBACK_IMAGE_SIZE = 448

CONCEPTS_FORMAT = "gemseg-concepts"
CONCEPTS_VERSION = 1


def default_layer(backbone_name: str) -> str:
    """The layer DFF factorises for ``backbone_name`` when none is given."""
    return DEFAULT_LAYERS.get(backbone_name, "")


def default_image_size(backbone_name: str) -> int:
    return DEFAULT_IMAGE_SIZES.get(backbone_name, FALLBACK_IMAGE_SIZE)


def backbone_fingerprint(backbone: Backbone) -> str:
    """16-hex-digit hash of the backbone's name and every weight and buffer (what changes its
    activations); pooling and whitening do not enter it."""
    h = hashlib.sha1()
    h.update(str(getattr(backbone, "name", type(backbone).__name__)).encode())
    hash_state(h, backbone)
    return h.hexdigest()[:16]


# ----------------------------------------------------------------------------------------------
# Images and activations
# ----------------------------------------------------------------------------------------------
@dataclass
class LoadedImages:
    """tensors: per image (3, h, w) float32, normalised for the backbone, long side = image_size;
    sizes: per image its original (H, W); paths: the files that loaded (input order);
    failures: (path, reason) for each file skipped."""

    tensors: List[torch.Tensor]
    sizes: List[Tuple[int, int]]
    paths: List[Path]
    failures: List[Tuple[str, str]] = field(default_factory=list)


def load_images(paths: Sequence[PathLike], image_size: int, mean: Sequence[float],
                std: Sequence[float]) -> LoadedImages:
    """Decode every image (any mode → RGB), resize its long side to ``image_size`` and normalise.

    Unreadable files are skipped and listed in ``failures`` (never an exception)."""
    out = LoadedImages([], [], [], [])
    for p in paths:
        try:
            img = load_image(p)
        except ImageError as e:
            out.failures.append((str(p), e.reason))
            continue
        out.sizes.append((img.height, img.width))
        out.tensors.append(to_tensor(resize_long_side(img, image_size), mean, std))
        out.paths.append(Path(p))
    return out


def layer_names(backbone: Backbone) -> List[str]:
    """Layers DFF can factorise: the backbone's stages, plus for ``efficientnet_lite0`` the inner
    activation of every MBConv block, ``block<i>.inner`` (the expanded, depthwise-convolved,
    ReLU6'd map that the block's linear projection reads; ≥ 0 by construction)."""
    names = list(backbone.layer_names())
    if backbone.name == "efficientnet_lite0":
        names += [f"{n}.inner" for n in backbone.layer_names() if n.startswith("block")]
    return names


def _check_layer(backbone: Backbone, layer: str) -> None:
    valid = layer_names(backbone)
    if layer not in valid:
        import difflib

        close = difflib.get_close_matches(layer, valid, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise WeightsError(f"unknown layer '{layer}' for {backbone.name}{hint}; choose from: "
                           f"{', '.join(backbone.layer_names())} (and <block>.inner)")


def _forward_layer(backbone: Backbone, x: torch.Tensor, layer: str) -> torch.Tensor:
    """(N, 3, H, W) → the map of ``layer`` (N, C, h, w) ≥ 0."""
    if not layer.endswith(".inner"):
        return backbone.forward_layers(x, [layer])[layer]
    stage = layer[: -len(".inner")]
    captured: List[torch.Tensor] = []
    # Inner activation of an MBConv block: the input of its projection conv (a pre-hook; the
    # efficientnet_lite_pytorch block computes it functionally, so it is not a stage of its own).
    proj = backbone.stages[stage].block._project_conv
    handle = proj.register_forward_pre_hook(lambda mod, inp: captured.append(inp[0]))
    try:
        backbone.forward_layers(x, [stage])
    finally:
        handle.remove()
    return captured[0].clamp(min=0)


def extract_activations(backbone: Backbone, tensors: Sequence[torch.Tensor], layer: str, *,
                        batch_size: int = 8, device: Optional[Union[str, torch.device]] = None
                        ) -> List[torch.Tensor]:
    """Activations of ``layer`` (see :func:`layer_names`) for each image: list of (C, h_i, w_i)
    float32 ≥ 0 on the CPU. Images of equal size are batched (at most ``batch_size``); order kept."""
    _check_layer(backbone, layer)
    dev = resolve_device(device)
    backbone = backbone.to(dev).eval()
    groups: Dict[Tuple[int, int], List[int]] = {}
    for i, t in enumerate(tensors):
        groups.setdefault(tuple(t.shape[-2:]), []).append(i)
    out: List[Optional[torch.Tensor]] = [None] * len(tensors)
    with torch.inference_mode():
        for idx in groups.values():
            for s in range(0, len(idx), max(1, batch_size)):
                chunk = idx[s:s + batch_size]
                x = torch.stack([tensors[i] for i in chunk]).to(dev)
                y = _forward_layer(backbone, x, layer).float().clamp_min(0).cpu()
                for j, i in enumerate(chunk):
                    out[i] = y[j].contiguous()
    return out  # type: ignore[return-value]


def stack_activations(acts: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, List[Tuple[int, int]]]:
    """Per-image (C, h_i, w_i) → ``A: (Σ h_i·w_i, C)`` float32 (row-major positions of image 0,
    then image 1, …) and the list of (h_i, w_i)."""
    if not acts:
        raise DataError("no activations to factorise (no image loaded)")
    C = acts[0].shape[0]
    for a in acts:
        if a.shape[0] != C:
            raise DataError("activations of different layers cannot be stacked")
    shapes = [(int(a.shape[1]), int(a.shape[2])) for a in acts]
    A = torch.cat([a.reshape(C, -1).T for a in acts], 0).contiguous()
    return A, shapes


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
# Object factor, masks, boxes, parts
# ----------------------------------------------------------------------------------------------
@dataclass
class FactorStats:
    """Per factor (k,): border share b_j / ring share r (< 1: inside the images), presence (the
    fraction of images where the factor reaches 0.25 of its set maximum) and mass share."""

    border_ratio: np.ndarray
    presence: np.ndarray
    mass: np.ndarray


def factor_stats(result: DFFResult) -> FactorStats:
    """Border, presence and mass statistics of every factor (see the module docstring)."""
    k = result.k
    border = np.zeros(k)
    total = np.zeros(k)
    cells = ring = 0
    peaks = []
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
        peaks.append(m.reshape(k, -1).max(1))
    P = np.stack(peaks)  # (N, k)
    gmax = P.max(0)
    presence = (P >= 0.25 * np.maximum(gmax, 1e-30)).mean(0) * (gmax > 0)
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


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of values in [0, 1] (maximises the between-class variance of a
    ``bins``-bin histogram); returns a value t with classes ``v ≤ t`` and ``v > t``."""
    v = np.asarray(values, np.float64).ravel()
    if v.size == 0:
        return 0.5
    hist, edges = np.histogram(v, bins=bins, range=(0.0, 1.0))
    p = hist / hist.sum()
    centers = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(p)
    m0 = np.cumsum(p * centers)
    mt = m0[-1]
    w1 = 1 - w0
    with np.errstate(invalid="ignore", divide="ignore"):
        between = (mt * w0 - m0) ** 2 / (w0 * w1)
    between[~np.isfinite(between)] = -1
    i = int(np.argmax(between))
    return float(edges[i + 1])


def object_masks(heat: Sequence[np.ndarray], factor: Union[int, Sequence[int]],
                 threshold: Union[str, float] = "otsu") -> Tuple[List[np.ndarray], float]:
    """Object masks (H_i, W_i) bool from the heat of ``factor`` (or the sum of several factors,
    clipped at 1) and the threshold used: ``"otsu"`` (pooled over the set), ``"otsu-image"``
    (per image; the returned value is then the mean) or a number in [0, 1]."""
    fs = [factor] if isinstance(factor, (int, np.integer)) else list(factor)
    obj = [np.clip(h[fs].sum(0), 0, 1) for h in heat]
    if isinstance(threshold, str):
        if threshold == "otsu":
            t = otsu_threshold(np.concatenate([o.ravel()[:: max(1, o.size // 20000)] for o in obj]))
            return [o > t for o in obj], t
        if threshold == "otsu-image":
            ts = [otsu_threshold(o) for o in obj]
            return [o > t for o, t in zip(obj, ts)], float(np.mean(ts))
        raise DataError(f"threshold must be 'otsu', 'otsu-image' or a number, got {threshold!r}")
    t = float(threshold)
    return [o > t for o in obj], t


def boxes_from_masks(masks: Sequence[np.ndarray]) -> List[Optional[Tuple[int, int, int, int]]]:
    """Co-localisation box (x0, y0, x1, y1; x1, y1 exclusive) of each mask's largest component."""
    return [mask_box(m, largest_component=True) for m in masks]


def part_labels(heat: Sequence[np.ndarray], masks: Sequence[np.ndarray],
                factors: Optional[Sequence[int]] = None) -> List[np.ndarray]:
    """Part label maps (H_i, W_i) uint8: 0 outside the object mask, else 1 + the factor with the
    highest heat (among ``factors``, default all; labels keep the factor's index + 1)."""
    out = []
    for h, m in zip(heat, masks):
        idx = np.arange(h.shape[0]) if factors is None else np.asarray(list(factors))
        best = idx[np.argmax(h[idx], axis=0)]
        out.append(np.where(m, best + 1, 0).astype(np.uint8))
    return out


# ----------------------------------------------------------------------------------------------
# Concept files
# ----------------------------------------------------------------------------------------------
def save_concepts(path: PathLike, H: ArrayLike, fingerprint: str, layer: str, *,
                  backbone: str = "", image_size: Optional[int] = None,
                  object_factors: Optional[Sequence[int]] = None, method: str = "nmf",
                  extra: Optional[Dict[str, Any]] = None) -> Path:
    """Write concepts ``H (k, C)`` with the backbone fingerprint and layer that made them,
    atomically (a temporary file beside ``path`` then ``os.replace``). ``object_factors``: the
    0-based rows of H whose union is the object. Loadable with ``torch.load(path, weights_only=True)``."""
    Ht = torch.as_tensor(np.asarray(H, np.float32) if not torch.is_tensor(H) else H).detach().float().cpu()
    if Ht.dim() != 2:
        raise DataError(f"concepts must be a (k, C) matrix, got shape {tuple(Ht.shape)}")
    obj = {
        "format": CONCEPTS_FORMAT, "version": CONCEPTS_VERSION, "H": Ht.contiguous(),
        "fingerprint": str(fingerprint), "layer": str(layer), "backbone": str(backbone),
        "image_size": None if image_size is None else int(image_size),
        "object_factors": None if object_factors is None else [int(j) for j in object_factors],
        "method": str(method), "extra": dict(extra or {}),
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return path


@dataclass
class Concepts:
    """A concept file's content: H (k, C) float32 numpy; fingerprint (of the backbone, see
    :func:`backbone_fingerprint`), layer, backbone name, image_size (long side the concepts were
    learned at), object_factors (0-based rows of H forming the object, or None), method, extra."""

    H: np.ndarray
    fingerprint: str
    layer: str
    backbone: str = ""
    image_size: Optional[int] = None
    object_factors: Optional[List[int]] = None
    method: str = "nmf"
    extra: Dict[str, Any] = field(default_factory=dict)


def load_concepts(path: PathLike, expected_fingerprint: Optional[str] = None) -> Concepts:
    """Read a concept file; a file of another backbone (fingerprint differs from
    ``expected_fingerprint``) raises :class:`ModelMismatchError`; an unreadable or foreign file
    raises :class:`DataError`."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"concept file not found: {p}")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise DataError(f"cannot read concept file {p}: {str(e).splitlines()[0][:160]}") from None
    if not isinstance(obj, dict) or obj.get("format") != CONCEPTS_FORMAT:
        raise DataError(f"{p} is not a gemseg concept file (made by tools/coseg.py --save-concepts)")
    fp = str(obj.get("fingerprint", ""))
    if expected_fingerprint is not None and fp != str(expected_fingerprint):
        raise ModelMismatchError(
            f"concept file {p} was learned with another backbone (fingerprint {fp}, "
            f"layer {obj.get('layer')}); this model's is {expected_fingerprint}: re-run tools/coseg.py "
            "--save-concepts with this model")
    H = obj["H"]
    return Concepts(H.numpy().astype(np.float32), fp, str(obj.get("layer", "")), str(obj.get("backbone", "")),
                    obj.get("image_size"), obj.get("object_factors"), str(obj.get("method", "nmf")),
                    dict(obj.get("extra") or {}))
