"""From heat maps to object masks, boxes and part labels.

Masks (:func:`object_masks`): the object heat map thresholded by Otsu's method on the pooled
histogram of the set (so an image without the object gets an empty or small mask rather than
half of its pixels), or by a fixed value in [0, 1]. Boxes: :func:`mask_box` of the largest
8-connected component of each mask. Part co-segmentation (:func:`part_labels`): the label of a
pixel is ``1 + argmax_j heat_j`` where the object mask is on, 0 elsewhere.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
from scipy import ndimage

from retrieval.core.errors import DataError

Box = Tuple[int, int, int, int]


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


def mask_box(mask: np.ndarray, largest_component: bool = False) -> Optional[Box]:
    """Tight box ``(x0, y0, x1, y1)`` (x1, y1 exclusive) of a mask's non-zero pixels, or of its
    largest 8-connected component; None for an empty mask."""
    m = np.asarray(mask).astype(bool)
    if largest_component and m.any():
        lab, n = ndimage.label(m, structure=np.ones((3, 3), bool))
        if n > 1:
            sizes = np.bincount(lab.ravel())[1:]
            m = lab == (1 + int(np.argmax(sizes)))
    ys, xs = np.nonzero(m)
    if ys.size == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
