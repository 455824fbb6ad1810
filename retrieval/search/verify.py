"""Spatial verification of two images' local features: tentative matches, then a robust geometric fit.

1. **Tentative matches** (:func:`match_descriptors`): a feature of image a and one of image b match
   when each is the other's nearest neighbour (Euclidean distance of the descriptors; *mutual* NN)
   and the nearest neighbour in b is clearly nearer than the second: ``d₁ < ratio · d₂`` (Lowe's
   ratio test, Lowe IJCV 2004; 0.8 is his value). For RootSIFT the distance is the Hellinger
   distance of the SIFT histograms.
2. **Robust fit** (:func:`fit_model`): a transform from a's positions to b's, estimated by OpenCV —
   ``homography`` (``cv2.findHomography``, ≥ 4 matches), ``affine`` (``cv2.estimateAffine2D``, ≥ 3)
   or ``similarity`` (``cv2.estimateAffinePartial2D``, ≥ 2) — with ``method`` ``magsac``
   (``cv2.USAC_MAGSAC``, Barath et al. CVPR 2020: no hard threshold to tune, the threshold is the
   noise bound) or ``ransac`` (``cv2.RANSAC``; similarity has no USAC variant in OpenCV, so it always
   uses RANSAC). Both are seeded: the same pair gives the same inliers in every run.
3. The **inliers** (matches whose reprojection error is under the threshold) count how much of the
   two images is the same rigid scene; :class:`Verification` carries their number, the transform and
   the inlier pairs (what a page draws as lines between the two images).

The threshold ``threshold_px`` is in pixels of image b at a long side of ``reference_side`` (640, the
side SIFT detects at, :func:`retrieval.search.local_features.sift_features`): for a larger image b
it grows in proportion, since keypoints detected at 640 px and mapped back to a 4000 px photo are
~6× less precise in its pixels; images smaller than ``reference_side`` keep ``threshold_px``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Tuple

import cv2
import numpy as np

from retrieval.core.errors import DataError
from retrieval.search.local_features import LocalFeatures

#: Robust models and the least number of matches each is fitted from.
MODELS = {"homography": 4, "affine": 3, "similarity": 2}
METHODS = ("magsac", "ransac")
#: The long side (pixels) the threshold is given at (module docstring).
REFERENCE_SIDE = 640
#: Default reprojection threshold, pixels at ``REFERENCE_SIDE``.
DEFAULT_THRESHOLD_PX = 6.0


@dataclass
class Verification:
    """The result of :func:`verify_pair`.

    inliers: number of tentative matches consistent with the fitted transform (0 when none fits).
    matrix: (3, 3) float64 transform a → b in each image's pixels (``x_b ~ matrix @ [x_a, y_a, 1]``),
        ``None`` when no transform was fitted.
    matches: (m, 4) float32 inlier pairs ``[xa, ya, xb, yb]`` in each image's own pixels, m = inliers.
    tentative: number of tentative matches (mutual NN + ratio test) the fit started from.
    """

    inliers: int
    matrix: Optional[np.ndarray]
    matches: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    tentative: int = 0


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, d), (m, d) float32 → (n, m) float32 squared Euclidean distances (≥ 0)."""
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return np.maximum(d, 0.0)


def match_descriptors(da: np.ndarray, db: np.ndarray, ratio: float = 0.8, mutual: bool = True) -> np.ndarray:
    """Tentative matches between descriptors ``da`` (n, d) and ``db`` (m, d) (module docstring, 1):
    → (k, 2) int64 pairs ``[index in a, index in b]``, in a's order. A feature of a matches its
    nearest neighbour in b when ``d₁ < ratio · d₂`` (b needs ≥ 2 features; ratio ≥ 1: no ratio test)
    and, when ``mutual``, it is that neighbour's nearest neighbour in a."""
    da = np.asarray(da, np.float32)
    db = np.asarray(db, np.float32)
    if da.shape[0] == 0 or db.shape[0] == 0:
        return np.zeros((0, 2), np.int64)
    if da.shape[1] != db.shape[1]:
        raise DataError(f"local descriptors of {da.shape[1]} and {db.shape[1]} values cannot be matched")
    D = _sq_dists(da, db)
    nn = np.argmin(D, axis=1)
    rows = np.arange(D.shape[0])
    keep = np.ones(D.shape[0], bool)
    if ratio < 1.0:
        if D.shape[1] < 2:
            return np.zeros((0, 2), np.int64)
        two = np.partition(D, 1, axis=1)[:, :2]
        keep &= np.sqrt(two[:, 0]) < ratio * np.sqrt(two[:, 1])
    if mutual:
        back = np.argmin(D, axis=0)
        keep &= back[nn] == rows
    return np.stack([rows[keep], nn[keep]], axis=1).astype(np.int64)


def fit_model(pa: np.ndarray, pb: np.ndarray, model: str = "homography", threshold: float = 3.0,
              method: str = "magsac", max_iters: int = 2000, confidence: float = 0.999,
              seed: int = 0) -> Tuple[Optional[np.ndarray], np.ndarray]:
    """Robust fit of ``pb ≈ T(pa)`` (module docstring, 2): pa, pb (k, 2) float32 matched positions,
    ``threshold`` the reprojection error (pixels of b) of an inlier → ``(matrix (3, 3) float64 or None,
    inlier mask (k,) bool)``."""
    if model not in MODELS:
        raise DataError(f"unknown verification model '{model}'; choose from: {', '.join(MODELS)}")
    if method not in METHODS:
        raise DataError(f"unknown robust fit '{method}'; choose from: {', '.join(METHODS)}")
    k = int(pa.shape[0])
    none = (None, np.zeros(k, bool))
    if k < MODELS[model]:
        return none
    pa = np.ascontiguousarray(pa, np.float32).reshape(-1, 1, 2)
    pb = np.ascontiguousarray(pb, np.float32).reshape(-1, 1, 2)
    flag = cv2.USAC_MAGSAC if method == "magsac" and model != "similarity" else cv2.RANSAC
    cv2.setRNGSeed(int(seed))  # RANSAC draws from OpenCV's thread RNG; USAC seeds itself
    try:
        if model == "homography":
            M, mask = cv2.findHomography(pa, pb, flag, float(threshold), maxIters=int(max_iters),
                                         confidence=float(confidence))
        elif model == "affine":
            M, mask = cv2.estimateAffine2D(pa, pb, method=flag, ransacReprojThreshold=float(threshold),
                                           maxIters=int(max_iters), confidence=float(confidence))
        else:
            M, mask = cv2.estimateAffinePartial2D(pa, pb, method=flag, ransacReprojThreshold=float(threshold),
                                                  maxIters=int(max_iters), confidence=float(confidence))
    except cv2.error:  # degenerate samples (all points on a line, ...): no transform
        return none
    if M is None or mask is None:
        return none
    M = np.asarray(M, np.float64)
    if M.shape == (2, 3):
        M = np.vstack([M, [0.0, 0.0, 1.0]])
    if not np.all(np.isfinite(M)):
        return none
    return M, np.asarray(mask, bool).reshape(-1)


def verify_pair(a: LocalFeatures, b: LocalFeatures, ratio: float = 0.8, model: str = "homography",
                threshold_px: float = DEFAULT_THRESHOLD_PX, method: str = "magsac", mutual: bool = True,
                reference_side: int = REFERENCE_SIDE, max_iters: int = 2000, seed: int = 0) -> Verification:
    """Spatially verify image a against image b (module docstring).

    Args:
        a, b: the two images' :class:`LocalFeatures` (same descriptor kind).
        ratio: Lowe's ratio test (≥ 1: off); mutual: keep only mutual nearest neighbours.
        model: ``homography`` | ``affine`` | ``similarity``; method: ``magsac`` | ``ransac``.
        threshold_px: inlier reprojection error, pixels of b at a long side of ``reference_side``.
    Returns:
        :class:`Verification`: inliers, transform a → b, inlier pairs ``[xa, ya, xb, yb]``.
    """
    if not ratio > 0:
        raise DataError(f"the ratio test needs a ratio > 0, got {ratio}")
    if not threshold_px > 0:
        raise DataError(f"the verification threshold must be > 0 pixels, got {threshold_px}")
    pairs = match_descriptors(a.desc, b.desc, ratio=ratio, mutual=mutual)
    if pairs.shape[0] == 0:
        if model not in MODELS:
            raise DataError(f"unknown verification model '{model}'; choose from: {', '.join(MODELS)}")
        return Verification(0, None, np.zeros((0, 4), np.float32), 0)
    pa, pb = a.xy[pairs[:, 0]], b.xy[pairs[:, 1]]
    thr = float(threshold_px) * max(1.0, max(b.size) / float(reference_side))
    M, mask = fit_model(pa, pb, model=model, threshold=thr, method=method, max_iters=max_iters, seed=seed)
    if M is None:
        return Verification(0, None, np.zeros((0, 4), np.float32), int(pairs.shape[0]))
    matches = np.concatenate([pa[mask], pb[mask]], axis=1).astype(np.float32)
    return Verification(int(mask.sum()), M, matches, int(pairs.shape[0]))
