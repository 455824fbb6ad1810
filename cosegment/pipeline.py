"""Co-segmentation end to end — what ``tools/coseg.py`` calls, callable from Python.

:func:`cosegment` takes image sets (a folder, a list of paths or ``{set: paths}``) and a backbone,
factorises every set (or projects it onto saved concepts), scores it against ground truth, writes
the pictures and returns a :class:`CosegReport` (``as_dict()`` is the tool's ``--json`` document,
``text_lines()`` its printed summary). :func:`learn_concepts` learns concepts over one set of
images and picks the object factors — what ``--save-concepts`` and concept-masked pooling
(:mod:`retrieval.model.concepts`) both use. Both run the stages of :mod:`cosegment.segmentation`:
load and take activations (:func:`prepare_sets`), factorise (:func:`factorize_set`), choose the
object factors (:func:`cosegment.dff.select_object_factors`), and save with :func:`save_set_concepts`.

Object factors are numbered from 0 (here, in the tool's output and ``--object-factor``, in concept
files and in the ``coseg.object_factors`` of a config); part label maps hold 0 for the background
and ``j + 1`` for factor ``j``.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from cosegment import concept_file, dff
from cosegment.annotations import load_coseg_folder
from cosegment.config import CosegConfig, parse_threshold
from cosegment.factorizers import FACTORIZERS
from cosegment.outputs import write_results
from cosegment.segmentation import (
    PreparedSet,
    SetResult,
    Timings,
    all_failures,
    factorize_set,
    prepare_sets,
    score_result,
    segment_set,
)
from retrieval.core.backbone import Backbone, default_image_size, default_layer, resolve_device
from retrieval.core.errors import ConfigError, DataError
from retrieval.core.image_listing import scan_images

PathLike = Union[str, Path]
Images = Union[PathLike, Sequence[PathLike], Mapping[str, Sequence[PathLike]]]
Device = Optional[Union[str, torch.device]]


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------
def image_sets(images: Images, joint: bool = False) -> Tuple[Dict[str, List[Path]], Optional[Path]]:
    """``{set name: image paths}`` and the images folder (None for lists): a folder is read by
    :func:`cosegment.annotations.load_coseg_folder` (one set, or one per sub-folder); a list of
    paths is one set named ``images``; a mapping is taken as is. ``joint``: all images as one set
    (named after the folder)."""
    root: Optional[Path] = None
    if isinstance(images, (str, Path)):
        root = Path(images)
        sets = {name: [it.image for it in items] for name, items in load_coseg_folder(root).items()}
    elif isinstance(images, Mapping):
        sets = {str(name): [Path(p) for p in paths] for name, paths in images.items()}
    else:
        sets = {"images": [Path(p) for p in images]}
    if not any(sets.values()):
        raise DataError("no images given")
    if joint and len(sets) > 1:
        sets = {root.name if root is not None else "images": [p for ps in sets.values() for p in ps]}
    return sets, root


def split_notes(root: Optional[Path], sets: Mapping[str, Sequence[Path]]) -> List[str]:
    """A line saying how a folder was split into sets when that may surprise: loose images beside
    sub-folders form a set of their own (a folder of sub-folders only is the iCoseg layout)."""
    if root is None or len(sets) < 2:
        return []
    img_root = root / "images" if (root / "images").is_dir() else root
    loose = img_root.name if img_root.name != "images" else root.name
    if loose not in sets:
        return []
    subs = [n for n in sets if n != loose]
    shown = ", ".join(subs[:5]) + (", …" if len(subs) > 5 else "")
    return [f"{root}: its {len(sets[loose])} loose image(s) form set '{loose}', and {len(subs)} sub-folder(s) "
            f"are sets of their own ({shown}); each set is factorised on its own (--joint: all images as one set)"]


def single_image_notes(loaded: Mapping[str, int]) -> List[str]:
    """One warning line per set of ``loaded`` (set name → images that loaded) holding a single
    image: co-segmentation finds what the images of a set *share*, so one image has nothing to
    share and its "object" is merely its strongest region (often the sky or the ground)."""
    return [f"set '{name}' holds 1 image: co-segmentation finds what several images share, so its object "
            f"mask is only the strongest region of that image; add images of the same object (or project on "
            f"learned concepts with --concepts)" for name, n in loaded.items() if n == 1]


def save_set_concepts(path: PathLike, backbone: Backbone, result: dff.DFFResult, object_factors: Sequence[int],
                      layer: str, image_size: int, n_images: int) -> Path:
    """Write a concept file of ``result.H (k, C)`` with the backbone's fingerprint, the layer, the
    input size, the object factors (from 0) and the method (``extra``: images, k)."""
    return concept_file.save_concepts(path, result.H, backbone.fingerprint(), layer, backbone=backbone.name,
                                      image_size=image_size, object_factors=list(object_factors),
                                      method=result.method, extra={"images": int(n_images), "k": result.k})


def _mean_scores(method: str, rows: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """One row of the ``compare`` table: mean scores over the sets, summed seconds."""
    agg: Dict[str, Any] = {"factorizer": method}
    for key in ("jaccard", "precision", "corloc", "part_miou", "seconds"):
        vals = [row[key] for row in rows if key in row]
        if vals:
            agg[key] = sum(vals) if key == "seconds" else sum(vals) / len(vals)
    return agg


# ----------------------------------------------------------------------------------------------
# Learning concepts
# ----------------------------------------------------------------------------------------------
@dataclass
class LearnedConcepts:
    """Concepts learned over one set. H: (k, C) float32; object_factors: from 0; layer and
    image_size they were learned at; result: the factorisation (W, H, shapes); paths: the images
    used; failures: (path, reason) of those that could not be loaded."""

    H: np.ndarray
    object_factors: List[int]
    layer: str
    image_size: int
    result: dff.DFFResult
    paths: List[Path]
    failures: List[Tuple[str, str]] = field(default_factory=list)


def learn_concepts(backbone: Backbone, paths: Sequence[PathLike], k: int = 3, *, layer: Optional[str] = None,
                   image_size: Optional[int] = None, method: str = "nmf", seed: int = 0,
                   max_images: Optional[int] = None, batch_size: int = 8, object_rule: str = "union",
                   object_factors: Optional[Sequence[int]] = None, max_border_ratio: float = 0.8,
                   device: Device = None, save_to: Optional[PathLike] = None,
                   timings: Optional[Timings] = None) -> LearnedConcepts:
    """Learn ``k`` concepts over the images ``paths`` with DFF and choose the object factors.

    layer / image_size: default per backbone (the last layer when it has no DFF default).
    max_images: at most this many images, an evenly spaced subset (None: all). object_rule:
    ``union`` or ``single`` (:func:`cosegment.dff.select_object_factors`) unless
    ``object_factors`` (from 0) are given. With ``save_to`` also writes a concept file
    (:func:`save_set_concepts`) that ``tools/coseg.py --concepts`` and
    :meth:`retrieval.model.concepts.ConceptMask.from_file` read. Unreadable images are skipped
    (listed in ``failures``); none readable is a :class:`DataError`.
    """
    layer = layer or default_layer(backbone.name) or backbone.layer_names()[-1]
    image_size = int(image_size or default_image_size(backbone.name))
    paths = list(paths)
    if not paths:
        raise DataError("learn_concepts: no images")
    dff.check_object_rule(object_rule)
    if max_images is not None and len(paths) > max_images:
        sel = np.linspace(0, len(paths) - 1, max_images).round().astype(int)
        paths = [paths[i] for i in sel]
    prep = prepare_sets(backbone, {"concepts": paths}, layer, image_size, batch_size=batch_size, device=device,
                        timings=timings)["concepts"]
    if not prep.acts:
        raise DataError(f"learn_concepts: none of {len(paths)} images could be loaded"
                        + (f" (e.g. {prep.failures[0][0]}: {prep.failures[0][1]})" if prep.failures else ""))
    r = factorize_set(prep, k, method=method, seed=seed, device=device)
    obj = dff.select_object_factors(r, object_factors, rule=object_rule, max_border_ratio=max_border_ratio)
    if save_to is not None:
        save_set_concepts(save_to, backbone, r, obj, layer, image_size, len(prep.paths))
    return LearnedConcepts(r.H, obj, layer, image_size, r, prep.paths, prep.failures)


# ----------------------------------------------------------------------------------------------
# The whole run
# ----------------------------------------------------------------------------------------------
@dataclass
class CosegReport:
    """What :func:`cosegment` did. images: the input (a folder, or a description); k, layer,
    image_size, backbone, factorizer (``projection`` with saved concepts), fingerprint (of the
    backbone); sets: per set its scores (``set``, ``images``, Jaccard/precision/CorLoc with
    ground truth, ``part_miou``, ``object_factors`` from 0, ``threshold``, ``seconds``); timings;
    failures: (path, reason); out: output folder (None: nothing written); boxes: per output
    stem its box (x0, y0, x1, y1) or None; compare: one row per factoriser (``compare=True``);
    concepts: the concept file used (``concepts_used``) or written (``concepts_saved``);
    results: the per-set :class:`SetResult` (heat maps, masks, labels; not in ``as_dict``);
    model_seconds: time to load the model, set by the caller (the tool) for the report;
    notes: what the user should know about how the input was read (e.g. a folder split into sets)."""

    images: str
    k: int
    layer: str
    image_size: int
    backbone: str
    factorizer: str
    fingerprint: str
    sets: List[Dict[str, Any]]
    timings: Timings
    failures: List[Tuple[str, str]]
    out: Optional[str] = None
    boxes: Optional[Dict[str, Any]] = None
    compare: List[Dict[str, Any]] = field(default_factory=list)
    concepts_used: Optional[str] = None
    concepts_saved: Optional[str] = None
    results: List[SetResult] = field(default_factory=list, repr=False)
    model_seconds: float = 0.0
    notes: List[str] = field(default_factory=list)

    def as_dict(self) -> Dict[str, Any]:
        """The JSON document of ``tools/coseg.py --json``."""
        doc: Dict[str, Any] = {
            "images": self.images, "k": self.k, "layer": self.layer, "image_size": self.image_size,
            "backbone": self.backbone, "factorizer": self.factorizer, "fingerprint": self.fingerprint,
            "sets": self.sets, "timings": dict(self.timings.as_dict(), model=self.model_seconds),
            "failures": [{"path": p, "reason": why} for p, why in self.failures],
            "out": self.out, "boxes": self.boxes, "notes": self.notes,
        }
        if self.compare:
            doc["compare"] = self.compare
        if self.concepts_saved:
            doc["concepts"] = self.concepts_saved
        return doc

    def text_lines(self) -> List[str]:
        """The tool's printed summary (stdout; the failures go to stderr): one line per set, the
        comparison table, the time split and what was written."""
        lines = []
        for s in self.sets:
            line = (f"set {s['set']}: {s['images']} images, object factor(s) {s['object_factors']}, "
                    f"threshold {s['threshold']:.3f}")
            if "jaccard" in s:
                line += f" | Jaccard {s['jaccard']:.3f}  precision {s['precision']:.3f}  CorLoc {s['corloc']:.3f}"
            if "part_miou" in s:
                line += f"  part mIoU {s['part_miou']:.3f}"
            lines.append(line)
        if self.compare:
            cols = [c for c in ("jaccard", "precision", "corloc", "part_miou") if any(c in r for r in self.compare)]
            lines += ["", f"{'factorizer':<15}" + "".join(f"{c:>11}" for c in cols) + f"{'seconds':>10}"]
            for r in self.compare:
                lines.append(f"{r['factorizer']:<15}" + "".join(f"{r.get(c, float('nan')):>11.3f}" for c in cols)
                             + f"{r['seconds']:>10.2f}")
            lines.append("")
        t = self.timings.as_dict()
        lines.append(f"time: {self.model_seconds + t['total']:.1f}s in all: model {self.model_seconds:.1f}s, "
                     f"loading {t['loading']:.1f}s, backbone {t['backbone']:.1f}s, factorisation "
                     f"{t['factorisation']:.2f}s, writing {t['writing']:.1f}s (layer {self.layer}, "
                     f"{self.image_size} px, k={self.k})")
        if self.concepts_saved:
            lines.append(f"wrote concepts to {self.concepts_saved}")
        if self.out is not None:
            lines.append(f"wrote {Path(self.out) / 'index.html'}")
        return lines


def cosegment(images: Images, *, backbone: Backbone, config: Optional[CosegConfig] = None,
              masks: Optional[PathLike] = None, part_masks: Optional[PathLike] = None, parts: bool = False,
              compare: bool = False, joint: bool = False, concepts: Optional[PathLike] = None,
              save_concepts: Optional[PathLike] = None, out: Optional[PathLike] = None, device: Device = None,
              progress: Optional[Callable[[str], None]] = None) -> CosegReport:
    """Co-segment image sets with Deep Feature Factorization.

    Args:
        images: a folder (one set, or one per sub-folder: ``images/<set>/…``), a list of image
            paths (one set) or ``{set name: paths}``; each set is factorised on its own.
        backbone: the :class:`~retrieval.core.backbone.Backbone` whose layer is factorised.
        config: k, layer, image size, factoriser, threshold, object factors (from 0), seed …
            (default :class:`CosegConfig()`; not modified).
        masks / part_masks: ground-truth folders (``<stem>.png`` or ``<set>/<stem>.png``):
            Jaccard, precision, CorLoc / part mIoU per set.
        parts: compute part label maps (0 = background, ``j + 1`` = factor ``j``).
        compare: also run every factoriser on the same activations (``CosegReport.compare``).
        joint: all images as one set.
        concepts: a concept file to project on instead of learning (its k, layer, size and object
            factors are used unless ``config`` names them).
        save_concepts: write the learned concepts (one set only) to this file.
        out: write overlays, masks, previews, parts, ``boxes.json`` and ``index.html`` here.
        device: where the backbone and the factoriser run (default: CUDA when available).
        progress: called with one line per set once it is segmented.

    Raises:
        DataError (no images, none loadable, no ground truth, k too large),
        ConfigError (bad options), ModelMismatchError (concepts of another backbone).
    """
    t_start = time.perf_counter()
    cfg = dataclasses.replace(config) if config is not None else CosegConfig()
    cfg.validate()
    resolve_device(device)  # no CUDA device: one line, before any image is read
    if concepts is not None and (save_concepts is not None or compare):
        raise ConfigError("concepts= projects on saved concepts; it excludes save_concepts= and compare=")
    sets, root = image_sets(images, joint)
    source = str(images) if root is not None else f"{sum(len(p) for p in sets.values())} images"
    notes = [] if joint else split_notes(root, sets)
    if save_concepts is not None and len(sets) > 1:
        raise DataError(f"--save-concepts learns one set of concepts but {source} holds {len(sets)} sets; add --joint")

    fingerprint = backbone.fingerprint()
    saved = None
    if concepts is not None:
        saved = concept_file.load_concepts(concepts, expected_fingerprint=fingerprint)
        layer = cfg.layer or saved.layer
        if layer != saved.layer:
            raise ConfigError(f"--layer {layer}: the concepts in {concepts} were learned at layer {saved.layer}")
        cfg.k = saved.H.shape[0]
        image_size = cfg.image_size or saved.image_size or default_image_size(backbone.name)
        if cfg.object_factors is None and saved.object_factors is not None:
            cfg.object_factors = list(saved.object_factors)
    else:
        layer = cfg.layer or default_layer(backbone.name)
        image_size = cfg.image_size or default_image_size(backbone.name)
    if not layer:
        raise ConfigError(f"no default DFF layer for {backbone.name}; give --layer ({', '.join(backbone.layer_names())})")

    timings = Timings()
    prepared: Dict[str, PreparedSet] = prepare_sets(backbone, sets, layer, image_size, batch_size=cfg.batch_size,
                                                    device=device, timings=timings)
    failures = (scan_images(root).skipped if root is not None else []) + all_failures(prepared)
    prepared = {n: p for n, p in prepared.items() if p.acts}
    if not prepared:
        raise DataError(f"no image in {source} could be loaded ({len(failures)} failed, e.g. {failures[0][0]}: "
                        f"{failures[0][1]})" if failures else f"no images in {source}")
    if saved is None:
        notes += single_image_notes({n: len(p.acts) for n, p in prepared.items()})
    threshold = parse_threshold(cfg.threshold)
    scoring = masks is not None or part_masks is not None

    def run(prep: PreparedSet, method: str, with_parts: bool, H: Optional[np.ndarray] = None) -> SetResult:
        return segment_set(prep, cfg.k, method=method, seed=cfg.seed, threshold=threshold,
                           object_factors=cfg.object_factors, max_border_ratio=cfg.max_border_ratio,
                           parts=with_parts, concepts=H, device=device)

    results, scores = [], {}
    for name, prep in prepared.items():
        r = run(prep, cfg.factorizer, parts, None if saved is None else saved.H)
        timings.factorisation += r.seconds
        results.append(r)
        s = score_result(r, masks, part_masks, root) if scoring else {"set": name, "images": len(r.paths)}
        s.update({"object_factors": list(r.object_factors), "threshold": r.threshold, "seconds": r.seconds})
        scores[name] = s
        if progress is not None:
            progress(f"set {name}: {len(r.paths)} images, {r.seconds:.2f}s")

    table = []
    if compare:
        for method in FACTORIZERS:
            rows = []
            for prep in prepared.values():
                r = run(prep, method, part_masks is not None)
                row = score_result(r, masks, part_masks, root) if scoring else {}
                row["seconds"] = r.seconds
                rows.append(row)
            table.append(_mean_scores(method, rows))

    if save_concepts is not None:
        r = results[0]
        save_set_concepts(save_concepts, backbone, r.result, r.object_factors, layer, image_size, len(r.paths))

    boxes = None
    if out is not None:
        summary = (f"{sum(len(r.paths) for r in results)} images, k={cfg.k}, layer {layer} at {image_size} px, "
                   f"{'projection on ' + str(concepts) if saved is not None else cfg.factorizer}")
        t_write = time.perf_counter()
        doc = write_results(out, results, scores, summary=summary)
        timings.writing = time.perf_counter() - t_write
        boxes = {k: v["box"] for k, v in doc["images"].items()}
    timings.wall = time.perf_counter() - t_start
    return CosegReport(
        images=source, k=cfg.k, layer=layer, image_size=image_size, backbone=backbone.name,
        factorizer="projection" if saved is not None else cfg.factorizer, fingerprint=fingerprint,
        sets=list(scores.values()), timings=timings, failures=failures, out=None if out is None else str(out),
        boxes=boxes, compare=table, concepts_used=None if concepts is None else str(concepts),
        concepts_saved=None if save_concepts is None else str(save_concepts), results=results, notes=notes)
