"""Co-segmentation of image folders end to end — what ``tools/coseg.py`` calls.

``prepare_sets`` loads the images of each set and computes the chosen layer's activations once
(timed as *loading* and *backbone*); ``segment_set`` factorises one set (or projects it onto saved
concepts) and derives heat maps, object masks, boxes and part labels (timed as *factorisation*);
``score_result`` compares them with ground-truth masks / part maps; ``write_results`` writes the
overlays, masks, parts, ``boxes.json`` and ``index.html``.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from cosegment import activations, dff
from cosegment.annotations import find_annotation, load_labels, load_mask
from cosegment.factorizers import FACTORIZERS
from cosegment.masks import boxes_from_masks, object_masks, part_labels
from cosegment.metrics import part_miou, score_set
from cosegment.render import heat_overlay, label_overlay, mask_preview, save_png, write_index_html
from retrieval.core.backbone import Backbone
from retrieval.core.errors import ConfigError, DataError, ImageError
from retrieval.core.images import load_image
from retrieval.core.io import atomic_path

PathLike = Union[str, Path]


@dataclass
class CosegConfig:
    """The ``coseg:`` section of a YAML config (command-line options override it).

    k: number of concepts. layer: backbone layer to factorise (default per backbone:
    :data:`cosegment.dff.DEFAULT_LAYERS`). image_size: long side of the network input (default
    per backbone). factorizer: ``nmf`` | ``sigmoid-nmf`` | ``deep-semi-nmf``. threshold: ``otsu``
    (pooled over the set) | ``otsu-image`` | a number in [0, 1]. object_factors: 1-based factors
    forming the object (default: the rule of :func:`cosegment.dff.choose_object_factors`).
    max_border_ratio: that rule's border threshold. seed: factorisation seed. batch_size: images
    per forward pass.
    """

    k: int = 3
    layer: Optional[str] = None
    image_size: Optional[int] = None
    factorizer: str = "nmf"
    threshold: str = "otsu"
    object_factors: Optional[List[int]] = None
    max_border_ratio: float = 0.8
    seed: int = 0
    batch_size: int = 8

    def validate(self) -> None:
        if self.k < 1:
            raise ConfigError(f"coseg.k: must be ≥ 1, got {self.k}")
        if self.factorizer not in FACTORIZERS:
            raise ConfigError(f"coseg.factorizer: '{self.factorizer}' is not one of {', '.join(FACTORIZERS)}")
        if self.image_size is not None and self.image_size < 32:
            raise ConfigError(f"coseg.image_size: {self.image_size} is too small (at least 32)")
        parse_threshold(self.threshold)
        if self.object_factors is not None and any(j < 1 or j > self.k for j in self.object_factors):
            raise ConfigError(f"coseg.object_factors: factors are numbered 1..{self.k}, got {self.object_factors}")
        if self.batch_size < 1:
            raise ConfigError(f"coseg.batch_size: must be ≥ 1, got {self.batch_size}")


def parse_threshold(t: Union[str, float]) -> Union[str, float]:
    """``otsu`` | ``otsu-image`` | a number in [0, 1] (also as a string)."""
    if isinstance(t, str) and t in ("otsu", "otsu-image"):
        return t
    try:
        v = float(t)
    except (TypeError, ValueError):
        raise ConfigError(f"threshold must be 'otsu', 'otsu-image' or a number in [0, 1], got {t!r}") from None
    if not 0.0 <= v <= 1.0:
        raise ConfigError(f"threshold must be in [0, 1], got {v}")
    return v


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
    """Seconds spent decoding/resizing images, in the backbone, and factorising."""

    loading: float = 0.0
    backbone: float = 0.0
    factorisation: float = 0.0

    def as_dict(self) -> Dict[str, float]:
        return {"loading": self.loading, "backbone": self.backbone, "factorisation": self.factorisation,
                "total": self.loading + self.backbone + self.factorisation}


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
    return [f for p in prepared.values() for f in p.failures]


@dataclass
class SetResult:
    """Co-segmentation of one set. heat[i]: (k, H_i, W_i) float32 in [0, 1]; masks[i]: (H_i, W_i)
    bool; boxes[i]: (x0, y0, x1, y1) or None; labels[i]: (H_i, W_i) uint8 part map (0 = background,
    1..k = factor) when parts were asked for; object_factors: 0-based; threshold: the one used."""

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


def segment_set(prep: PreparedSet, k: int, *, method: str = "nmf", seed: int = 0,
                threshold: Union[str, float] = "otsu", object_factors: Optional[Sequence[int]] = None,
                max_border_ratio: float = 0.8, parts: bool = False, concepts: Optional[np.ndarray] = None,
                device: Optional[Union[str, torch.device]] = None, **factorizer_options: Any) -> SetResult:
    """Factorise one prepared set into ``k`` concepts (or project it onto ``concepts`` (k, C))
    and derive heat maps, object masks, boxes and (with ``parts``) part label maps.

    object_factors: 0-based object factors (default: :func:`cosegment.dff.choose_object_factors`).
    """
    if not prep.acts:
        raise DataError(f"set '{prep.name}': no image could be loaded")
    if concepts is not None:
        r = dff.project_concepts(prep.acts, concepts)
    else:
        r = dff.factorize_activations(prep.acts, k, method=method, seed=seed, device=device, **factorizer_options)
    heat = dff.heatmaps(r, prep.sizes)
    if object_factors is None:
        obj = dff.choose_object_factors(r, max_border_ratio=max_border_ratio)
    else:
        obj = sorted(int(j) for j in object_factors)
        if any(j < 0 or j >= r.k for j in obj):
            raise DataError(f"object factors are numbered 1..{r.k}, got {[j + 1 for j in obj]}")
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


def output_names(results: Sequence[SetResult]) -> Dict[Tuple[str, int], str]:
    """File stem for each (set, image index): the image stem, or ``<set>_<stem>`` if two images
    of the run share a stem."""
    stems = [p.stem for r in results for p in r.paths]
    dup = {s for s in stems if stems.count(s) > 1}
    return {(r.name, i): (f"{r.name}_{p.stem}" if p.stem in dup else p.stem)
            for r in results for i, p in enumerate(r.paths)}


def write_results(out_dir: PathLike, results: Sequence[SetResult], scores: Optional[Dict[str, Dict[str, Any]]] = None,
                  summary: str = "") -> Dict[str, Any]:
    """Write, for every image: ``overlays/<stem>.jpg`` (heat maps, one colour per concept),
    ``masks/<stem>.png`` (0/255, image size), ``previews/<stem>.jpg`` (mask and box), with parts
    ``parts/<stem>.png`` (0 = background, 1..k) and ``parts/<stem>_overlay.jpg``; then
    ``boxes.json`` and ``index.html``. Returns the boxes document."""
    out = Path(out_dir)
    for sub in ("overlays", "masks", "previews"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    if any(r.labels is not None for r in results):
        (out / "parts").mkdir(parents=True, exist_ok=True)
    names = output_names(results)
    rows: List[Dict[str, Any]] = []
    doc: Dict[str, Any] = {"images": {}}
    for r in results:
        for i, p in enumerate(r.paths):
            stem = names[(r.name, i)]
            try:
                img = np.asarray(load_image(p))
            except ImageError:
                continue
            if img.shape[:2] != r.heat[i].shape[1:]:
                continue
            save_png(out / "overlays" / f"{stem}.jpg", heat_overlay(img, r.heat[i]))
            save_png(out / "masks" / f"{stem}.png", (r.masks[i] * 255).astype(np.uint8))
            save_png(out / "previews" / f"{stem}.jpg", mask_preview(img, r.masks[i], r.boxes[i]))
            row = {"name": p.name, "set": r.name, "image": _rel(p, out), "overlay": f"overlays/{stem}.jpg",
                   "preview": f"previews/{stem}.jpg", "mask": f"masks/{stem}.png",
                   "box": list(r.boxes[i]) if r.boxes[i] is not None else None}
            if r.labels is not None:
                save_png(out / "parts" / f"{stem}.png", r.labels[i])
                save_png(out / "parts" / f"{stem}_overlay.jpg", label_overlay(img, r.labels[i]))
                row["parts"] = f"parts/{stem}_overlay.jpg"
            rows.append(row)
            doc["images"][stem] = {"image": str(p), "set": r.name, "box": row["box"],
                                   "size": [int(r.sizes[i][1]), int(r.sizes[i][0])]}
    doc["box_format"] = "x0, y0, x1, y1 in pixels of the original image (x1, y1 exclusive); null = empty mask"
    with atomic_path(out / "boxes.json") as tmp:
        tmp.write_text(json.dumps(doc, indent=1))
    if scores:
        for row in rows:
            s = scores.get(row["set"])
            if s and "jaccard" in s:
                row["score"] = f"set Jaccard {s['jaccard']:.3f}"
    write_index_html(out / "index.html", rows, summary=summary)
    return doc


def _rel(p: Path, base: Path) -> str:
    import os

    try:
        return os.path.relpath(Path(p).resolve(), base.resolve())
    except ValueError:
        return Path(p).resolve().as_uri()
