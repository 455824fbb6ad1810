"""Validation: the mAP of a network on held-out pairs, and the whitening choice made with it.

:func:`validate` describes every image of a :class:`~retrieval.training.pairs.PairSet` (single
scale) and ranks all of them for each image that has a match (:func:`mean_ap`);
:func:`learn_whitenings` learns Lw and PCA-w for a trained network and scores none / PCA-w / Lw on
the validation pairs. Which (step, whitening) a run keeps is :mod:`retrieval.training.selection`.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from retrieval.evaluation.metrics import compute_map
from retrieval.model.whitening import Whitening, learn_whitening, pca_whitening
from retrieval.search.extract import extract_descriptors
from retrieval.training.pairs import PairSet


def describe_pairs(net: nn.Module, pairs: PairSet, *, image_size: int, scales: Sequence[float] = (1.0,),
                   batch_size: int = 16, workers: Optional[int] = None, device: Optional[torch.device] = None,
                   progress: bool = False, desc: str = "describe") -> Tuple[np.ndarray, PairSet]:
    """Descriptors of every image of ``pairs`` (at ``image_size``, ``scales``; single scale by
    default): ``(X (N', D) float32, pairs')`` where ``pairs'`` is ``pairs`` without the images that
    could not be read."""
    ex = extract_descriptors(net, pairs.paths, image_size=image_size, scales=list(scales), batch_size=batch_size,
                             workers=workers, device=device, progress=progress, desc=desc)
    if ex.failures:
        loaded = set(ex.paths)
        pairs = pairs.subset(np.array([str(p) in loaded for p in pairs.paths]))
    return ex.descriptors, pairs


def query_aps(X: np.ndarray, pairs: PairSet) -> Tuple[np.ndarray, np.ndarray]:
    """Per-query AP with every image of ``pairs`` that has a match as a query against all of them
    (itself ignored), positives = its cluster: ``(aps (Q,) float64, classes (Q,) int64)``, the
    class of each query beside its AP (the unit a significance test resamples:
    :mod:`retrieval.evaluation.significance`). ``X``: ``(N, D)`` float32 descriptors of
    ``pairs.paths``. Non-finite descriptors (a diverged network) score 0 on every query."""
    queries, gnd = pairs.ground_truth()
    classes = pairs.labels[queries].astype(np.int64)
    if len(queries) == 0:
        return np.zeros(0), classes
    if not np.isfinite(X).all():
        return np.zeros(len(queries)), classes
    scores = X[queries] @ X.T
    ranks = np.argsort(-scores, axis=1, kind="stable")
    return np.asarray(compute_map(ranks, gnd).aps, dtype=np.float64), classes


def mean_ap(X: np.ndarray, pairs: PairSet) -> float:
    """mAP with every image of ``pairs`` as a query against all of them (itself ignored),
    positives = its cluster (the mean of :func:`query_aps`). ``X``: ``(N, D)`` float32 descriptors
    of ``pairs.paths``. Non-finite descriptors (a diverged network) score 0, so that they are never
    chosen. NaN when no image has a match."""
    aps, _ = query_aps(X, pairs)
    return float(aps.mean()) if aps.size else float("nan")


def validate(net: nn.Module, val: PairSet, *, image_size: int, scales: Sequence[float] = (1.0,),
             batch_size: int = 16, workers: Optional[int] = None, device: Optional[torch.device] = None,
             progress: bool = False) -> float:
    """Validation mAP of ``net`` on ``val`` (see :func:`mean_ap`); NaN for an empty set."""
    if val.n_images == 0:
        return float("nan")
    X, val = describe_pairs(net, val, image_size=image_size, scales=scales, batch_size=batch_size, workers=workers,
                            device=device, progress=progress, desc="validate")
    return mean_ap(X, val)


def sample_pairs(pairs: PairSet, n: int, seed: int = 0) -> PairSet:
    """At most ``n`` of the matching pairs, with only the images they use."""
    if pairs.n_pairs > n:
        sel = np.sort(np.random.default_rng(seed).permutation(pairs.n_pairs)[:n])
        pairs = dataclasses.replace(pairs, qidx=pairs.qidx[sel], pidx=pairs.pidx[sel])
    used = np.zeros(pairs.n_images, dtype=bool)
    used[pairs.qidx] = True
    used[pairs.pidx] = True
    return pairs.subset(used)


def learn_whitenings(net: nn.Module, train_pairs: PairSet, val: Optional[PairSet] = None, *,
                     image_size: int, max_pairs: int = 5000, shrinkage: Union[float, str] = "auto",
                     batch_size: int = 16,
                     workers: Optional[int] = None, device: Optional[torch.device] = None,
                     seed: int = 0, progress: bool = False) -> Tuple[Whitening, Whitening, Dict[str, float]]:
    """Learn Lw (from the matching pairs) and PCA-w (from the same images) with ``net`` (its
    whitening slot must be empty), and the validation mAP with none / PCA-w / Lw.

    Returns ``(lw, pca, {"none": mAP, "pca": mAP, "lw": mAP})`` (mAPs NaN without ``val``).
    """
    if getattr(net, "has_whitening", False):
        raise ValueError("learn whitening on a network whose whitening slot is empty")
    sub = sample_pairs(train_pairs, max_pairs, seed)
    X, sub = describe_pairs(net, sub, image_size=image_size, batch_size=batch_size, workers=workers,
                            device=device, progress=progress, desc="whitening")
    lw = learn_whitening(X, sub.qidx, sub.pidx, shrinkage=shrinkage)
    pca = pca_whitening(X)
    maps = {"none": float("nan"), "pca": float("nan"), "lw": float("nan")}
    if val is not None and val.n_images:
        V, val = describe_pairs(net, val, image_size=image_size, batch_size=batch_size, workers=workers,
                                device=device, progress=progress, desc="validate")
        maps = {"none": mean_ap(V, val), "pca": mean_ap(pca.apply(V), val), "lw": mean_ap(lw.apply(V), val)}
    return lw, pca, maps
