"""Co-segmentation scores: Jaccard, precision, CorLoc, part mIoU.

Scores (all masks are (H, W) bool arrays of the same size; boxes are ``(x0, y0, x1, y1)`` in pixels
with x1, y1 exclusive):

* :func:`jaccard` — intersection over union of a predicted and a true object mask (1 when both are
  empty); the set score is the mean over images.
* :func:`precision` — pixel accuracy: the fraction of pixels labelled correctly (object or not).
* :func:`corloc` — co-localisation: the fraction of images whose predicted box has IoU ≥ 0.5 with a
  true box (the box of the true mask's non-zero pixels, or any of several given boxes).
* :func:`part_miou` — part co-segmentation: predicted label maps (0 = background, 1…k = factor) and
  true part maps (0 = background, 1…P = part) over a set; the IoU of every (part, factor) pair is
  computed from pixel counts pooled over the set's images, factors are matched one-to-one to parts
  by the Hungarian algorithm maximising the total IoU, and the mIoU is the mean over the true parts
  (an unmatched part scores 0).

Masks and boxes come from :mod:`cosegment.masks`; ground truth from :mod:`cosegment.annotations`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from scipy.optimize import linear_sum_assignment

from cosegment.masks import Box, mask_box
from retrieval.core.errors import DataError

PathLike = Union[str, Path]


# ----------------------------------------------------------------------------------------------
# Scores
# ----------------------------------------------------------------------------------------------
def _pair(pred: np.ndarray, gt: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    p, g = np.asarray(pred).astype(bool), np.asarray(gt).astype(bool)
    if p.shape != g.shape:
        raise DataError(f"mask sizes differ: prediction {p.shape} vs ground truth {g.shape}")
    return p, g


def jaccard(pred: np.ndarray, gt: np.ndarray) -> float:
    """IoU of two (H, W) masks (non-zero = object); 1.0 if both are empty."""
    p, g = _pair(pred, gt)
    union = np.count_nonzero(p | g)
    return 1.0 if union == 0 else np.count_nonzero(p & g) / union


def precision(pred: np.ndarray, gt: np.ndarray) -> float:
    """Pixel accuracy of an (H, W) object mask: fraction of pixels where pred == gt."""
    p, g = _pair(pred, gt)
    return float(np.count_nonzero(p == g)) / p.size


def box_iou(a: Optional[Sequence[float]], b: Optional[Sequence[float]]) -> float:
    """IoU of two boxes ``(x0, y0, x1, y1)``; 0 if either is None or empty."""
    if a is None or b is None:
        return 0.0
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    area = lambda r: max(0.0, r[2] - r[0]) * max(0.0, r[3] - r[1])  # noqa: E731
    union = area(a) + area(b) - inter
    return inter / union if union > 0 else 0.0


def corloc(pred_boxes: Sequence[Optional[Box]], gt_boxes: Sequence, threshold: float = 0.5) -> float:
    """Fraction of images whose predicted box has IoU ≥ ``threshold`` with a true box.

    ``gt_boxes[i]`` is one box or a list of boxes (any of them counts); None = no object, which
    counts as correct only if no box is predicted either.
    """
    if len(pred_boxes) != len(gt_boxes):
        raise DataError(f"{len(pred_boxes)} predicted boxes for {len(gt_boxes)} images")
    if not pred_boxes:
        return float("nan")
    hits = 0
    for p, g in zip(pred_boxes, gt_boxes):
        if g is None or (isinstance(g, (list, tuple)) and len(g) == 0):
            hits += p is None
            continue
        gs = [g] if np.isscalar(g[0]) else list(g)
        hits += any(box_iou(p, gb) >= threshold for gb in gs)
    return hits / len(pred_boxes)


@dataclass
class SetScore:
    """Scores of one image set: mean Jaccard, mean precision, CorLoc, number of images, and
    per-image Jaccard (same order as the inputs)."""

    jaccard: float
    precision: float
    corloc: float
    n: int
    per_image: List[float] = field(default_factory=list)

    def as_dict(self) -> Dict[str, float]:
        return {"jaccard": self.jaccard, "precision": self.precision, "corloc": self.corloc, "n": self.n}


def score_set(pred_masks: Sequence[np.ndarray], gt_masks: Sequence[np.ndarray],
              pred_boxes: Optional[Sequence[Optional[Box]]] = None) -> SetScore:
    """Jaccard, precision and CorLoc of a set: masks (H_i, W_i) per image; boxes default to the
    box of each predicted mask's largest component; true boxes are the true masks' boxes."""
    if len(pred_masks) != len(gt_masks):
        raise DataError(f"{len(pred_masks)} predicted masks for {len(gt_masks)} ground-truth masks")
    js = [jaccard(p, g) for p, g in zip(pred_masks, gt_masks)]
    ps = [precision(p, g) for p, g in zip(pred_masks, gt_masks)]
    if pred_boxes is None:
        pred_boxes = [mask_box(p, largest_component=True) for p in pred_masks]
    gts = [mask_box(g) for g in gt_masks]
    cl = corloc(list(pred_boxes), gts)
    nan = float("nan")
    return SetScore(float(np.mean(js)) if js else nan, float(np.mean(ps)) if ps else nan, cl, len(js), js)


@dataclass
class PartScore:
    """Part co-segmentation of a set: ``miou`` over the true parts; ``ious[p]`` the IoU of true part
    p with its matched factor (0 if unmatched); ``match[p]`` that factor's label (or None); ``iou``
    the full (P, k) IoU matrix (rows: true parts 1…P, columns: factors 1…k)."""

    miou: float
    ious: Dict[int, float]
    match: Dict[int, Optional[int]]
    iou: np.ndarray


def part_miou(pred_labels: Sequence[np.ndarray], gt_labels: Sequence[np.ndarray],
              n_factors: Optional[int] = None, n_parts: Optional[int] = None) -> PartScore:
    """Hungarian-matched part mIoU over a set (see the module docstring).

    Args:
        pred_labels: per image (H, W) int: 0 = background, 1…k = factor.
        gt_labels: per image (H, W) int: 0 = background, 1…P = part.
        n_factors, n_parts: k and P (default: the largest label seen).
    """
    if len(pred_labels) != len(gt_labels) or not pred_labels:
        raise DataError(f"part mIoU needs as many label maps as ground-truth maps (got {len(pred_labels)}, {len(gt_labels)})")
    preds = [np.asarray(p).astype(np.int64) for p in pred_labels]
    gts = [np.asarray(g).astype(np.int64) for g in gt_labels]
    for p, g in zip(preds, gts):
        if p.shape != g.shape:
            raise DataError(f"label map sizes differ: prediction {p.shape} vs ground truth {g.shape}")
    k = int(n_factors if n_factors is not None else max(int(p.max()) for p in preds))
    P = int(n_parts if n_parts is not None else max(int(g.max()) for g in gts))
    if P == 0:
        raise DataError("no part labels in the ground truth")
    if any(int(p.max()) > k for p in preds) or any(int(g.max()) > P for g in gts):
        raise DataError(f"label maps hold labels above n_factors={k} / n_parts={P}")
    conf = np.zeros((P + 1, k + 1), np.int64)  # [true, pred], 0 = background
    for p, g in zip(preds, gts):
        conf += np.bincount(g.ravel() * (k + 1) + p.ravel(),
                            minlength=(P + 1) * (k + 1)).reshape(P + 1, k + 1)
    inter = conf[1:, 1:].astype(np.float64)  # (P, k)
    area_g = conf[1:, :].sum(1, keepdims=True)
    area_p = conf[:, 1:].sum(0, keepdims=True)
    union = area_g + area_p - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    ious: Dict[int, float] = {p: 0.0 for p in range(1, P + 1)}
    match: Dict[int, Optional[int]] = {p: None for p in range(1, P + 1)}
    if k > 0:
        rows, cols = linear_sum_assignment(-iou)
        for r, c in zip(rows, cols):
            if iou[r, c] > 0:  # a zero-IoU pairing is no match
                ious[r + 1] = float(iou[r, c])
                match[r + 1] = int(c + 1)
    return PartScore(float(np.mean(list(ious.values()))), ious, match, iou)
