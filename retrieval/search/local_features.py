"""Local features of an image: keypoint positions and their descriptors (RootSIFT), what spatial
verification (:mod:`retrieval.search.verify`) matches.

* :class:`~retrieval.search.packed_features.LocalFeatures` (what they return) — ``xy`` (n, 2)
  float32 keypoint positions in the ORIGINAL image's pixels (x right, y down, pixel centres at
  integers, as OpenCV), ``desc`` (n, d) float32, ``size`` the original image's (w, h);
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

:class:`~retrieval.search.packed_features.LocalFeatures` and their compact storage (the index
folder's optional cache, :class:`~retrieval.search.packed_features.PackedFeatures`) live in
:mod:`retrieval.search.packed_features`, which loads neither torch nor OpenCV, so that the index
folder's reader and writer do not either.
"""
from __future__ import annotations

from typing import Optional, Union

import cv2
import numpy as np
import torch
from PIL import Image

from cosegment.activations import extract_layers
from retrieval.core.backbone import default_layer
from retrieval.core.feature_extractor import Backbone
from retrieval.core.images import resize_long_side, to_tensor
from retrieval.search.packed_features import LocalFeatures


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
