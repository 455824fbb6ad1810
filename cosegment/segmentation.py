"""Co-segmentation of image sets, stage by stage — the steps :func:`cosegment.pipeline.cosegment` runs.

``prepare_sets`` loads the images of each set and computes the chosen layer's activations once
(timed as *loading* and *backbone*); ``factorize_set`` factorises one set (or projects it onto
saved concepts); ``segment_set`` adds heat maps, the object factors, object masks, boxes and part
labels (timed as *factorisation*); ``score_result`` compares them with ground-truth masks / part
maps. Object factors are numbered from 0; part label maps hold 0 for the background and ``j + 1``
for factor ``j``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from cosegment import activations, dff
from cosegment.annotations import find_annotation, load_labels, load_mask
from cosegment.config import parse_threshold
from cosegment.masks import boxes_from_masks, object_masks, part_labels
from cosegment.metrics import part_miou, score_set
from retrieval.core.backbone import Backbone
from retrieval.core.errors import DataError

PathLike = Union[str, Path]


@dataclass
class PreparedSet:
    """One image set ready to factorise: ``acts[i]`` (C, h_i, w_i) float32 of image ``paths[i]``
    whose original size is ``sizes[i] = (H, W)``; ``failures``: (path, reason) skipped."""

    name: str
    paths: List[Path]
    sizes: List[Tuple[int, int]]
    acts: List[torch.Tensor]
    failures: List[Tuple[str, str]] = field(default_factory=list)


@dataclass
class Timings:
    """Seconds spent decoding/resizing images, in the backbone, factorising and writing the
    pictures; ``wall``: the whole run, when measured (it also holds scoring and what lies between
    the stages). ``as_dict`` adds ``total``: ``wall`` when measured, else the sum of the stages."""

    loading: float = 0.0
    backbone: float = 0.0
    factorisation: float = 0.0
    writing: float = 0.0
    wall: float = 0.0

    def as_dict(self) -> Dict[str, float]:
        stages = self.loading + self.backbone + self.factorisation + self.writing
        return {"loading": self.loading, "backbone": self.backbone, "factorisation": self.factorisation,
                "writing": self.writing, "total": max(self.wall, stages)}


def prepare_sets(backbone: Backbone, sets: Dict[str, Sequence[PathLike]], layer: str, image_size: int, *,
                 batch_size: int = 8, device: Optional[Union[str, torch.device]] = None,
                 timings: Optional[Timings] = None) -> Dict[str, PreparedSet]:
    """Load each set's images and compute ``layer``'s activations (times added to ``timings``).
    A set whose images all fail to load is left out (its failures are in the other sets' lists
    only if they loaded; see :func:`all_failures`)."""
    timings = timings if timings is not None else Timings()
    out: Dict[str, PreparedSet] = {}
    for name, paths in sets.items():
        t0 = time.perf_counter()
        L = activations.load_images(list(paths), image_size, backbone.mean, backbone.std)
        t1 = time.perf_counter()
        acts = activations.extract_activations(backbone, L.tensors, layer, batch_size=batch_size, device=device) if L.tensors else []
        t2 = time.perf_counter()
        timings.loading += t1 - t0
        timings.backbone += t2 - t1
        out[name] = PreparedSet(name, L.paths, L.sizes, acts, L.failures)
    return out


def all_failures(prepared: Dict[str, PreparedSet]) -> List[Tuple[str, str]]:
    """(path, reason) of every image of every set that could not be loaded."""
    return [f for p in prepared.values() for f in p.failures]


@dataclass
class SetResult:
    """Co-segmentation of one set. heat[i]: (k, H_i, W_i) float32 in [0, 1]; masks[i]: (H_i, W_i)
    bool; boxes[i]: (x0, y0, x1, y1) or None; labels[i]: (H_i, W_i) uint8 part map (0 = background,
    j + 1 = factor j) when parts were asked for; object_factors: numbered from 0; threshold: the
    one used."""

    name: str
    paths: List[Path]
    sizes: List[Tuple[int, int]]
    result: dff.DFFResult
    heat: List[np.ndarray]
    object_factors: List[int]
    threshold: float
    masks: List[np.ndarray]
    boxes: List[Optional[Tuple[int, int, int, int]]]
    labels: Optional[List[np.ndarray]] = None

    @property
    def seconds(self) -> float:
        return self.result.seconds


def factorize_set(prep: PreparedSet, k: int, *, method: str = "nmf", seed: int = 0,
                  concepts: Optional[np.ndarray] = None, device: Optional[Union[str, torch.device]] = None,
                  **factorizer_options: Any) -> dff.DFFResult:
    """Factorise one prepared set into ``k`` concepts with ``method`` (a key of
    :data:`cosegment.factorizers.FACTORIZERS`), or, with ``concepts`` (k, C) float32, project it
    onto them (fixed-H NMF; ``k`` and ``method`` then do not apply)."""
    if not prep.acts:
        raise DataError(f"set '{prep.name}': no image could be loaded")
    if concepts is not None:
        return dff.project_concepts(prep.acts, concepts)
    return dff.factorize_activations(prep.acts, k, method=method, seed=seed, device=device, **factorizer_options)


def segment_set(prep: PreparedSet, k: int, *, method: str = "nmf", seed: int = 0,
                threshold: Union[str, float] = "otsu", object_factors: Optional[Sequence[int]] = None,
                max_border_ratio: float = 0.8, parts: bool = False, concepts: Optional[np.ndarray] = None,
                device: Optional[Union[str, torch.device]] = None, **factorizer_options: Any) -> SetResult:
    """Factorise one prepared set into ``k`` concepts (or project it onto ``concepts`` (k, C)),
    see :func:`factorize_set`, and derive heat maps, object masks, boxes and (with ``parts``) part
    label maps (0 = background, ``j + 1`` = factor ``j``).

    object_factors: the object factors, numbered from 0 (default: the union rule of
    :func:`cosegment.dff.choose_object_factors` with ``max_border_ratio``).
    """
    r = factorize_set(prep, k, method=method, seed=seed, concepts=concepts, device=device, **factorizer_options)
    heat = dff.heatmaps(r, prep.sizes)
    obj = dff.select_object_factors(r, object_factors, rule="union", max_border_ratio=max_border_ratio)
    masks, t = object_masks(heat, obj, parse_threshold(threshold))
    boxes = boxes_from_masks(masks)
    labels = part_labels(heat, masks) if parts else None
    return SetResult(prep.name, prep.paths, prep.sizes, r, heat, obj, t, masks, boxes, labels)


def score_result(res: SetResult, gt_dir: Optional[PathLike] = None, part_dir: Optional[PathLike] = None,
                 images_root: Optional[PathLike] = None) -> Dict[str, Any]:
    """Scores of one set against ``gt_dir/<stem>.png`` object masks (Jaccard, precision, CorLoc)
    and ``part_dir/<stem>.png`` part maps (Hungarian part mIoU); images without ground truth are
    skipped; a folder with none of them is a :class:`DataError`."""
    out: Dict[str, Any] = {"set": res.name, "images": len(res.paths)}
    if gt_dir is not None:
        pm, gm, pb = [], [], []
        for p, (H, W), m, b in zip(res.paths, res.sizes, res.masks, res.boxes):
            a = find_annotation(p, gt_dir, images_root)
            if a is None:
                continue
            gm.append(load_mask(a, size=(W, H)))
            pm.append(m)
            pb.append(b)
        if not gm:
            raise DataError(f"no ground-truth masks for set '{res.name}' in {gt_dir} (expected <image stem>.png)")
        s = score_set(pm, gm, pb)
        out.update(s.as_dict())
    if part_dir is not None and res.labels is not None:
        pl, gl = [], []
        for p, (H, W), lab in zip(res.paths, res.sizes, res.labels):
            a = find_annotation(p, part_dir, images_root)
            if a is None:
                continue
            gl.append(load_labels(a, size=(W, H)))
            pl.append(lab)
        if gl and max(int(g.max()) for g in gl) > 0:
            ps = part_miou(pl, gl, n_factors=res.result.k)
            out["part_miou"] = ps.miou
    return out
