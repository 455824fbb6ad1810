"""Local features of an image: keypoint positions and their descriptors (RootSIFT), what spatial
verification (:mod:`retrieval.search.verify`) matches.

* :class:`LocalFeatures` — ``xy`` (n, 2) float32 keypoint positions in the ORIGINAL image's pixels
  (x right, y down, pixel centres at integers, as OpenCV), ``desc`` (n, d) float32, ``size`` the
  original image's (w, h);
* :func:`root_sift` — RootSIFT (Arandjelović & Zisserman, "Three things everyone should know to
  improve object retrieval", CVPR 2012): each SIFT descriptor L1-normalised, then its element-wise
  square root, so that the Euclidean distance of two RootSIFT vectors is the Hellinger distance of
  the SIFT histograms (a RootSIFT vector has unit L2 norm);
* :func:`backbone_features` — DELG-like features of our own backbone (strongest feature-map
  positions, their cells' centres in the image), the alternative ``sv:features=backbone`` measures;
* :func:`sift_features` — OpenCV SIFT on the grayscale image downscaled to a long side of at most
  ``max_side`` pixels (detection cost and keypoint count do not grow with the photo's resolution),
  the ``max_features`` strongest keypoints (by detector response), positions mapped back to the
  original image.

Compact storage (the index folder's optional cache, :class:`PackedFeatures`): :meth:`LocalFeatures.compact` keeps the
strongest ``n`` features (they are stored strongest first) as float16 — about
``n · (2 d + 8)`` bytes, 264 kB for 1000 RootSIFT features (float16 descriptors, float32 positions).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch
from PIL import Image

from cosegment.activations import extract_layers
from retrieval.core.backbone import default_layer
from retrieval.core.feature_extractor import Backbone
from retrieval.core.images import resize_long_side, to_tensor
from retrieval.core.io import atomic_path

#: SIFT's descriptor length.
SIFT_DIM = 128


@dataclass
class LocalFeatures:
    """Local features of one image (module docstring).

    xy: (n, 2) float32 keypoint positions in the original image's pixels.
    desc: (n, d) float32 descriptors (RootSIFT for SIFT: non-negative, unit L2 norm), strongest first.
    size: (w, h) of the original image.
    """

    xy: np.ndarray
    desc: np.ndarray
    size: Tuple[int, int]

    def __post_init__(self) -> None:
        self.xy = np.asarray(self.xy, dtype=np.float32).reshape(-1, 2)
        self.desc = np.asarray(self.desc, dtype=np.float32)
        if self.desc.ndim != 2 or self.desc.shape[0] != self.xy.shape[0]:
            raise ValueError(f"{self.xy.shape[0]} keypoints but descriptors of shape {self.desc.shape}")
        self.size = (int(self.size[0]), int(self.size[1]))

    def __len__(self) -> int:
        return int(self.xy.shape[0])

    @property
    def dim(self) -> int:
        return int(self.desc.shape[1])

    def compact(self, max_features: int) -> Tuple[np.ndarray, np.ndarray]:
        """The first ``max_features`` (the strongest) as ``(xy (n, 2) float32, desc (n, d) float16)``:
        positions stay float32 (a float16 position is off by up to 2 px at 4000 px)."""
        n = max(0, min(int(max_features), len(self)))
        return self.xy[:n].astype(np.float32), self.desc[:n].astype(np.float16)

    @classmethod
    def empty(cls, size: Tuple[int, int], dim: int = SIFT_DIM) -> "LocalFeatures":
        return cls(np.zeros((0, 2), np.float32), np.zeros((0, dim), np.float32), size)


def root_sift(desc: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """RootSIFT of SIFT descriptors ``desc`` (n, d) float (non-negative histograms): each row divided
    by its L1 norm, then square-rooted → (n, d) float32 with unit L2 norm (a zero row stays zero)."""
    d = np.asarray(desc, dtype=np.float32)
    d = np.maximum(d, 0.0)
    l1 = d.sum(axis=1, keepdims=True)
    return np.sqrt(d / np.maximum(l1, eps)).astype(np.float32)


def _gray(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("L"), dtype=np.uint8)


def sift_features(image: Image.Image, max_features: int = 1000, max_side: int = 640) -> LocalFeatures:
    """RootSIFT features of ``image`` (module docstring).

    Args:
        image: a PIL image (any mode; converted to grayscale).
        max_features: keep at most this many keypoints, the strongest by detector response.
        max_side: the image is downscaled (area interpolation) so its long side is at most this for
            detection; 0 or less: the original size.
    Returns:
        :class:`LocalFeatures` with ``xy`` in the original image's pixels, strongest first.
    """
    w, h = image.size
    gray = _gray(image)
    scale = 1.0
    if max_side and max_side > 0 and max(w, h) > max_side:
        scale = max_side / float(max(w, h))
        ws, hs = max(1, int(round(w * scale))), max(1, int(round(h * scale)))
        gray = cv2.resize(gray, (ws, hs), interpolation=cv2.INTER_AREA)
    hs, ws = gray.shape
    if max_features < 1:
        return LocalFeatures.empty((w, h))
    sift = cv2.SIFT_create(nfeatures=int(max_features))
    kps, desc = sift.detectAndCompute(gray, None)
    if desc is None or not kps:
        return LocalFeatures.empty((w, h))
    response = np.array([k.response for k in kps], np.float32)
    xy = np.array([k.pt for k in kps], np.float32).reshape(-1, 2)
    order = np.lexsort((xy[:, 1], xy[:, 0], -response))[:max_features]  # strongest first, ties by position
    xy, desc = xy[order], desc[order]
    # pixel centres: x_orig + 0.5 = (x_small + 0.5) · (w / w_small)
    sx, sy = w / float(ws), h / float(hs)
    xy = np.stack([(xy[:, 0] + 0.5) * sx - 0.5, (xy[:, 1] + 0.5) * sy - 0.5], axis=1).astype(np.float32)
    return LocalFeatures(xy, root_sift(desc), (w, h))


@dataclass
class PackedFeatures:
    """The local features of ``n`` consecutive ids packed into flat arrays (what the index folder
    stores, ``tools/index.py --local-features``): the features of the ``j``-th id are rows
    ``offsets[j]:offsets[j+1]`` of ``xy`` (float32) and ``desc`` (float16); ``sizes[j]`` its image's
    (w, h), (−1, −1) when it had none (unreadable, or removed). ``max_features`` / ``max_side``:
    how they were computed (:func:`sift_features`)."""

    offsets: np.ndarray
    xy: np.ndarray
    desc: np.ndarray
    sizes: np.ndarray
    max_features: int
    max_side: int

    FILES = ("offsets", "xy", "desc", "sizes")

    def __len__(self) -> int:
        return int(self.sizes.shape[0])

    def nbytes(self) -> int:
        return int(sum(getattr(self, n).nbytes for n in self.FILES))

    def get(self, j: int, max_features: Optional[int] = None) -> Optional[LocalFeatures]:
        """The ``j``-th id's features (its strongest ``max_features``), ``None`` when it has none."""
        w, h = (int(v) for v in self.sizes[j])
        if w < 0:
            return None
        a, b = int(self.offsets[j]), int(self.offsets[j + 1])
        if max_features is not None:
            b = min(b, a + int(max_features))
        return LocalFeatures(np.asarray(self.xy[a:b], np.float32), np.asarray(self.desc[a:b], np.float32), (w, h))

    @classmethod
    def pack(cls, features: Sequence[Optional[LocalFeatures]], max_features: int, max_side: int,
             dim: int = SIFT_DIM) -> "PackedFeatures":
        """Pack one :class:`LocalFeatures` (or ``None``) per id, each capped to ``max_features``."""
        counts = [0 if f is None else min(len(f), int(max_features)) for f in features]
        offsets = np.zeros(len(features) + 1, np.int64)
        offsets[1:] = np.cumsum(counts)
        xy = np.zeros((int(offsets[-1]), 2), np.float32)
        desc = np.zeros((int(offsets[-1]), dim), np.float16)
        sizes = np.full((len(features), 2), -1, np.int32)
        for j, (f, c) in enumerate(zip(features, counts)):
            if f is None:
                continue
            sizes[j] = f.size
            xy[offsets[j]:offsets[j] + c], desc[offsets[j]:offsets[j] + c] = f.compact(c)
        return cls(offsets, xy, desc, sizes, int(max_features), int(max_side))

    def select(self, keep: np.ndarray) -> "PackedFeatures":
        """The features of the ids at positions ``keep`` ((m,) int64), packed again (compaction)."""
        return PackedFeatures.pack([self.get(int(j)) for j in keep], self.max_features, self.max_side,
                                   int(self.desc.shape[1]))

    def save(self, folder: Union[str, Path]) -> None:
        """Write the arrays as ``.npy`` files into ``folder`` (created; each through a rename)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name in self.FILES:
            with atomic_path(folder / f"{name}.npy") as tmp:
                with open(tmp, "wb") as fh:
                    np.save(fh, getattr(self, name))

    @classmethod
    def load(cls, folder: Union[str, Path], max_features: int, max_side: int) -> "PackedFeatures":
        """Read what :meth:`save` wrote (memory-mapped)."""
        folder = Path(folder)
        arrays = [np.load(folder / f"{name}.npy", mmap_mode="r") for name in cls.FILES]
        return cls(*arrays, int(max_features), int(max_side))


def backbone_features(backbone: Backbone, image: Image.Image, layer: Optional[str] = None,
                      max_features: int = 500, image_size: int = 512,
                      device: Optional[Union[str, torch.device]] = None) -> LocalFeatures:
    """DELG-like local features from our own backbone: the image resized to a long side of
    ``image_size``, one forward pass tapping ``layer`` (default: the backbone's co-segmentation
    layer), and its ``max_features`` strongest positions (by the L2 norm of their activation, the
    attention-free form of DELG's keypoint selection) → descriptors the L2-normalised activation
    vectors (float32, C values), positions the centres of their cells in the original image's
    pixels (so they are quantised to the layer's stride: 16 px at 512 px for ``block14``)."""
    layer = layer or default_layer(backbone.name) or backbone.layer_names()[-1]
    w, h = image.size
    small = resize_long_side(image.convert("RGB"), image_size)
    t = to_tensor(small, backbone.mean, backbone.std)
    fmap = extract_layers(backbone, [t], [layer], batch_size=1, device=device)[0][layer]  # (C, hl, wl)
    C, hl, wl = fmap.shape
    F = fmap.reshape(C, -1).T.numpy().astype(np.float32)  # (hl·wl, C)
    norms = np.linalg.norm(F, axis=1)
    keep = np.argsort(-norms, kind="stable")[:max(0, int(max_features))]
    keep = keep[norms[keep] > 0]
    rows, cols = np.divmod(keep, wl)
    xy = np.stack([(cols + 0.5) * (w / wl) - 0.5, (rows + 0.5) * (h / hl) - 0.5], axis=1).astype(np.float32)
    desc = F[keep] / norms[keep, None]
    return LocalFeatures(xy, desc.astype(np.float32), (w, h))
