"""The generated instance-retrieval collection, with known ground truth.

:func:`make_retrieval_collection` — N objects, each seen in several views (scale, rotation,
perspective, crop, colour and blur changes, partial occlusion) pasted on varied backgrounds, plus
distractor images. Ground truth in the layout of the revisited Oxford/Paris protocol: one query per
object (its canonical, mild view 0) and, per query, ``easy`` / ``hard`` / ``junk`` lists of
database indices. Every image comes with its object mask and its part label map.
:class:`ToyCollection` reads it back; :func:`export_class_folders` copies it as class folders.

Layout written by :func:`make_retrieval_collection`::

    root/queries/<object>_v0.jpg           one query per object (JPEG, quality 92)
    root/images/db####_<object>_v<j>.jpg   database: the other views and the distractors
                                           (``db####_distractor###.jpg``); sorted name = db index
    root/masks/<stem>.png                  object mask, 0/255, image size (all 0 for distractors)
    root/parts/<stem>.png                  part labels, 0 = background, 1..P = part of the object
    root/ground_truth.json                 read back by :meth:`ToyCollection.load`

Ground-truth rule for a database view of the query's object (measured on the rendered view):
``junk`` if less than 30 % of the object is visible (occluded or cropped away); otherwise ``hard``
if the scale differs from the query's by more than ×1.6 (or less than ×0.65), the rotation exceeds
30°, the perspective corner jitter exceeds 0.15 of the object size, or less than 75 % of the object
is visible; otherwise ``easy``. Distractors and other objects' views are never positives.

(:func:`make_coseg_sets` and :func:`photo_object_names` are re-exported here from
:mod:`retrieval.toy.coseg_sets` and :mod:`retrieval.toy.photos`.)
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from retrieval.core.errors import DataError
from retrieval.core.io import atomic_path
from retrieval.toy.backgrounds import _background, _paste_shape
from retrieval.toy.coseg_sets import make_coseg_sets
from retrieval.toy.geometry import _place, _unit_shape
from retrieval.toy.objects import ToyObject, _render_creature, _sample_creature
from retrieval.toy.output import _GT_VERSION, _check_size, _prepare_root, _save
from retrieval.toy.photos import _check_source, _object_sources, _photo_object, _photo_patch, photo_object_names
from retrieval.toy.render import _finish, _render_view, _ViewSpec
from retrieval.toy.streams import _S_DECOY, _S_DISTRACTOR, _S_OBJECT, _S_VIEW

PathLike = Union[str, Path]

__all__ = [
    "GT_FILE",
    "ToyCollection",
    "make_retrieval_collection",
    "export_class_folders",
    "make_coseg_sets",
    "photo_object_names",
]

GT_FILE = "ground_truth.json"

# Ground-truth thresholds (see the module docstring).
JUNK_VISIBLE = 0.30
HARD_VISIBLE = 0.75
HARD_SCALE = (0.65, 1.6)
HARD_ROTATION = 30.0
HARD_PERSPECTIVE = 0.15


def _query_area(clutter: float) -> float:
    """Target image-area fraction of the query's object: 0.45 at clutter 0, 0.12 at clutter 1."""
    return 0.45 + (0.12 - 0.45) * clutter


def _view_spec(rng: np.random.Generator, kind: str, clutter: float) -> Tuple[_ViewSpec, float]:
    """Sample a view of the intended ``kind`` (query/easy/hard/junk); returns (spec, scale ratio)."""
    a0 = _query_area(clutter)
    if kind == "query":
        return _ViewSpec(area=a0, rotation=0.0, perspective=0.0, colour=0.0, blur=0.0), 1.0
    if kind == "easy":
        ratio = rng.uniform(0.8, 1.25)
        occ = 0.0 if rng.random() < 0.6 else rng.uniform(0.05, 0.15)
        return _ViewSpec(area=a0 * ratio ** 2, rotation=rng.uniform(-15, 15), perspective=rng.uniform(0, 0.08),
                         occlusion=occ, colour=rng.uniform(0.2, 0.6), blur=rng.uniform(0, 0.8)), ratio
    if kind == "hard":
        strong = set(rng.choice(["scale", "rotation", "perspective", "occlusion", "crop"], 2, replace=False))
        if "scale" in strong:
            ratio = rng.uniform(0.45, 0.6) if (rng.random() < 0.6 or clutter < 0.3) else rng.uniform(1.7, 2.1)
        else:
            ratio = rng.uniform(0.8, 1.25)
        rot = rng.choice([-1, 1]) * rng.uniform(40, 180) if "rotation" in strong else rng.uniform(-15, 15)
        persp = rng.uniform(0.18, 0.28) if "perspective" in strong else rng.uniform(0, 0.08)
        occ = rng.uniform(0.3, 0.45) if "occlusion" in strong else 0.0
        inf = rng.uniform(0.55, 0.7) if "crop" in strong else 1.0
        spec = _ViewSpec(area=a0 * ratio ** 2, rotation=float(rot), perspective=persp, in_frame=inf,
                         occlusion=occ, colour=rng.uniform(0.5, 1.0), blur=rng.uniform(0, 1.5),
                         shrink_to_fit=ratio <= 1.3)
        return spec, ratio
    # junk: the object barely visible, occluded or cropped away
    ratio = rng.uniform(0.7, 1.3)
    if rng.random() < 0.5:
        spec = _ViewSpec(area=a0 * ratio ** 2, rotation=rng.uniform(-30, 30), perspective=rng.uniform(0, 0.1),
                         occlusion=rng.uniform(0.8, 0.9), colour=rng.uniform(0.3, 1.0), blur=rng.uniform(0, 1.2))
    else:
        spec = _ViewSpec(area=a0 * ratio ** 2, rotation=rng.uniform(-30, 30), perspective=rng.uniform(0, 0.1),
                         in_frame=rng.uniform(0.1, 0.22), colour=rng.uniform(0.3, 1.0), blur=rng.uniform(0, 1.2))
    return spec, ratio


_VIEW_CYCLE = ("easy", "hard", "easy", "hard", "junk")


def _classify(visible: float, ratio: float, rotation: float, perspective: float) -> str:
    """The ground-truth type of a database view (``easy``, ``hard`` or ``junk``; the rule of the module docstring)."""
    if visible < JUNK_VISIBLE:
        return "junk"
    rot = abs((rotation + 180.0) % 360.0 - 180.0)
    if (visible < HARD_VISIBLE or ratio < HARD_SCALE[0] or ratio > HARD_SCALE[1] or rot > HARD_ROTATION
            or perspective > HARD_PERSPECTIVE):
        return "hard"
    return "easy"


@dataclass
class ToyCollection:
    """A generated retrieval collection with revisited-style ground truth.

    ``query_paths`` (Q) and ``db_paths`` (N) are absolute path strings; ``gnd[q]`` is a dict with
    ``easy``, ``hard``, ``junk`` (lists of database indices) and ``bbx`` ([x0, y0, x1, y1], the query
    object's box in pixels, x1/y1 exclusive); ``db_labels``: (N,) int64, object id or -1 for a
    distractor; ``query_labels``: (Q,) int64; ``query_bboxes``: (Q, 4) int64; ``db_meta``: per database
    image the measured view properties (type, visible, scale ratio, rotation, ...).
    """

    root: Path
    query_paths: List[str]
    db_paths: List[str]
    gnd: List[Dict[str, Any]]
    db_labels: np.ndarray
    query_labels: np.ndarray
    object_names: List[str] = field(default_factory=list)
    query_bboxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.int64))
    db_meta: List[Dict[str, Any]] = field(default_factory=list)
    params: Dict[str, Any] = field(default_factory=dict)
    part_names: Dict[str, List[str]] = field(default_factory=dict)

    def mask_path(self, path: PathLike) -> Path:
        """The object mask (PNG, 0/255) of an image of this collection."""
        return Path(self.root) / "masks" / (Path(path).stem + ".png")

    def part_path(self, path: PathLike) -> Path:
        """The part label map (PNG, 0 = background, 1..P = part) of an image of this collection."""
        return Path(self.root) / "parts" / (Path(path).stem + ".png")

    @property
    def images_dir(self) -> Path:
        """The database folder (index it to search the collection)."""
        return Path(self.root) / "images"

    @property
    def queries_dir(self) -> Path:
        return Path(self.root) / "queries"

    @classmethod
    def load(cls, root: PathLike) -> "ToyCollection":
        """Read ``root/ground_truth.json`` written by :func:`make_retrieval_collection`."""
        root = Path(root).resolve()
        f = root / GT_FILE
        if not f.is_file():
            raise DataError(f"{root}: no toy collection here ({GT_FILE} missing); "
                            "make one with retrieval.toy.collection.make_retrieval_collection")
        try:
            d = json.loads(f.read_text())
            return cls(
                root=root,
                query_paths=[str(root / p) for p in d["queries"]],
                db_paths=[str(root / p) for p in d["database"]],
                gnd=[{"easy": list(g["easy"]), "hard": list(g["hard"]), "junk": list(g["junk"]),
                      "bbx": list(g["bbx"])} for g in d["gnd"]],
                db_labels=np.asarray(d["db_labels"], dtype=np.int64),
                query_labels=np.asarray(d["query_labels"], dtype=np.int64),
                object_names=list(d["objects"]),
                query_bboxes=np.asarray(d["query_bboxes"], dtype=np.int64).reshape(-1, 4),
                db_meta=list(d["db_meta"]),
                params=dict(d["params"]),
                part_names={k: list(v) for k, v in d["part_names"].items()},
            )
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"{f}: not a toy-collection ground truth ({type(e).__name__}: {e})") from None


def _objects_for(n_objects: int, source: str, image_size: int, seed: int, stream: int,
                 n_parts: Optional[int] = None) -> List[ToyObject]:
    """The ``n_objects`` objects of a collection: real-photo objects in :func:`photo_object_names` order, or
    synthetic creatures ``obj00``, ``obj01``, ... each drawn from ``default_rng([seed, stream, i])``."""
    if source == "photos":
        names = photo_object_names()
        if n_objects > len(names):
            raise DataError(f"source='photos' has {len(names)} objects; asked for {n_objects}")
        R = max(2 * image_size, 96)
        return [_photo_object(n, R) for n in names[:n_objects]]
    R = max(image_size, 64)
    objs = []
    for i in range(n_objects):
        rng = np.random.default_rng([seed, stream, i])
        P = n_parts if n_parts is not None else int(rng.integers(3, 6))
        objs.append(_render_creature(_sample_creature(rng, P, varied=True), R, f"obj{i:02d}"))
    return objs


def make_retrieval_collection(root: PathLike, n_objects: int = 8, views: int = 6, distractors: int = 8,
                              image_size: int = 128, seed: int = 0, clutter: float = 0.0,
                              source: str = "synthetic") -> ToyCollection:
    """Generate a retrieval collection under ``root`` and return it (see the module docstring).

    ``n_objects`` objects × ``views`` views (view 0 is the object's query, the other ``views - 1``
    go to the database), plus ``distractors`` database images with no object of the collection.
    ``clutter`` in [0, 1]: 0 = the query's object covers about 45 % of the image on a plain-ish
    background; 1 = about 12 % on a busy background full of textured shapes. ``source`` is
    ``"synthetic"`` or ``"photos"`` (scikit-image samples; at most 10 objects, in the order of
    :func:`photo_object_names`). Images are ``image_size``² JPEGs. Existing generator output under
    ``root`` is replaced; a folder with other images in ``images/`` is refused (DataError).
    """
    photos = _check_source(source)
    _check_size(image_size)
    if n_objects < 1 or views < 2 or distractors < 0:
        raise DataError(f"need n_objects ≥ 1, views ≥ 2, distractors ≥ 0 "
                        f"(got {n_objects}, {views}, {distractors})")
    if not 0.0 <= float(clutter) <= 1.0:
        raise DataError(f"clutter must be in [0, 1], got {clutter}")
    clutter = float(clutter)
    root = Path(root).resolve()
    S = int(image_size)
    objs = _objects_for(n_objects, source, S, seed, _S_OBJECT)

    # database order: a seeded shuffle of (object views, distractors); file names carry the index
    items: List[Tuple[int, int]] = [(o, v) for o in range(n_objects) for v in range(1, views)]
    items += [(-1, d) for d in range(distractors)]
    order = np.random.default_rng([seed, 0]).permutation(len(items))
    items = [items[i] for i in order]

    # backgrounds never come from a photo that an object of the collection was cut from
    exclude = _object_sources([o.name for o in objs]) if photos else ()
    _prepare_root(root, GT_FILE)
    queries: List[str] = []
    bboxes: List[List[int]] = []
    qscale: List[float] = []
    for o, obj in enumerate(objs):
        rng = np.random.default_rng([seed, _S_VIEW, o, 0])
        spec, _ = _view_spec(rng, "query", clutter)
        bg = _background(rng, S, busy=clutter * 0.8, photos=photos, exclude=exclude)
        r = _render_view(obj, spec, S, bg, rng, photos, exclude=exclude)
        qscale.append(r.scale)
        rel = f"queries/{obj.name}_v0.jpg"
        _save(root, rel, r.image, r.labels)
        ys, xs = np.nonzero(r.labels)
        bboxes.append([int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1])
        queries.append(rel)

    unused = photo_object_names()[n_objects:] if photos else []
    database: List[str] = []
    labels: List[int] = []
    meta: List[Dict[str, Any]] = []
    nd = len(str(max(len(items) - 1, 999)))
    for k, (o, v) in enumerate(items):
        if o >= 0:
            obj = objs[o]
            rng = np.random.default_rng([seed, _S_VIEW, o, v])
            intended = _VIEW_CYCLE[(v - 1) % len(_VIEW_CYCLE)]
            spec, ratio = _view_spec(rng, intended, clutter)
            bg = _background(rng, S, busy=clutter, photos=photos, exclude=exclude)
            r = _render_view(obj, spec, S, bg, rng, photos, exclude=exclude)
            ratio = r.scale / qscale[o]
            kind = _classify(r.visible, ratio, spec.rotation, spec.perspective)
            name = f"db{k:0{nd}d}_{obj.name}_v{v}"
            m = dict(name=name, label=o, type=kind, intended=intended, visible=round(r.visible, 4),
                     in_frame=round(r.in_frame, 4), occluded=round(r.occluded, 4),
                     scale_ratio=round(ratio, 4),
                     rotation=round(float(spec.rotation), 2), perspective=round(float(spec.perspective), 4),
                     blur=round(float(spec.blur), 3),
                     mask_area=round(float(np.count_nonzero(r.labels)) / (S * S), 4))
            image, lab = r.image, r.labels
        else:
            rng = np.random.default_rng([seed, _S_DISTRACTOR, v])
            image = _distractor(rng, S, clutter, photos, unused, seed, v, exclude)
            lab = np.zeros((S, S), np.uint8)
            name = f"db{k:0{nd}d}_distractor{v:03d}"
            m = dict(name=name, label=-1, type="distractor", mask_area=0.0)
        rel = f"images/{name}.jpg"
        _save(root, rel, image, lab)
        database.append(rel)
        labels.append(o)
        meta.append(m)

    gnd = []
    for o in range(n_objects):
        g: Dict[str, Any] = {"easy": [], "hard": [], "junk": [], "bbx": bboxes[o]}
        for i, m in enumerate(meta):
            if m["label"] == o:
                g[m["type"]].append(i)
        gnd.append(g)
    doc = {
        "version": _GT_VERSION,
        "params": dict(n_objects=n_objects, views=views, distractors=distractors, image_size=S, seed=seed,
                       clutter=clutter, source=source),
        "objects": [o.name for o in objs],
        "part_names": {o.name: o.part_names for o in objs},
        "queries": queries,
        "database": database,
        "query_labels": list(range(n_objects)),
        "db_labels": labels,
        "query_bboxes": bboxes,
        "gnd": gnd,
        "db_meta": meta,
        "rules": dict(junk_visible_below=JUNK_VISIBLE, hard_visible_below=HARD_VISIBLE,
                      hard_scale_outside=list(HARD_SCALE), hard_rotation_above=HARD_ROTATION,
                      hard_perspective_above=HARD_PERSPECTIVE),
    }
    with atomic_path(root / GT_FILE) as tmp:
        tmp.write_text(json.dumps(doc, indent=1))
    return ToyCollection.load(root)


def _distractor(rng: np.random.Generator, S: int, clutter: float, photos: bool, unused: Sequence[str],
                seed: int, d: int, exclude: Sequence[str] = ()) -> np.ndarray:
    """A database image without any object of the collection: (S, S, 3) uint8."""
    img = _background(rng, S, busy=clutter, photos=photos, exclude=exclude)
    n_decoys = int(rng.integers(0, 3))
    for j in range(n_decoys):
        if photos and unused and rng.random() < 0.5:
            decoy = _photo_object(unused[int(rng.integers(len(unused)))], max(2 * S, 96))
        elif photos:
            decoy = None
        else:
            drng = np.random.default_rng([seed, _S_DECOY, d, j])
            decoy = _render_creature(_sample_creature(drng, int(drng.integers(2, 6)), varied=True),
                                     max(S, 64), "decoy")
        if decoy is None:
            poly = _place(_unit_shape(rng, str(rng.choice(["ellipse", "blob", "rect"]))), rng.uniform(0.2, 0.8) * S,
                          rng.uniform(0.2, 0.8) * S, S * rng.uniform(0.15, 0.3), rng.uniform(0, 2 * np.pi))
            patch = _photo_patch(rng, (S, S), exclude)
            _paste_shape(img, poly, lambda y0, y1, x0, x1: patch[y0:y1, x0:x1])
            continue
        spec = _ViewSpec(area=_query_area(clutter) * rng.uniform(0.4, 1.0), rotation=rng.uniform(-40, 40),
                         perspective=rng.uniform(0, 0.15))
        img = _render_view(decoy, spec, S, img, rng, photos, exclude=exclude).image.astype(np.float32) / 255.0
    photo = (1.0 + rng.uniform(-0.1, 0.1), 1.0 + rng.uniform(-0.1, 0.1), 1.0, 0.0)
    return _finish(img, photo, float(rng.uniform(0, 0.8)), rng.normal(0, 0.008, img.shape).astype(np.float32))


def export_class_folders(collection: ToyCollection, out_dir: PathLike,
                         include_junk: bool = True) -> Dict[str, List[str]]:
    """Copy every view of each object (its query and its database views) to ``out_dir/<object>/``.

    The folder-of-classes layout for training from class folders or for evaluating with "every
    image a query, positives = same class". Distractors are left out. Files are copied (never
    linked). ``include_junk=False`` leaves out the views where the object is barely visible.
    Returns ``{object name: [written paths]}``.
    """
    out = Path(out_dir)
    written: Dict[str, List[str]] = {n: [] for n in collection.object_names}
    for q, p in zip(collection.query_labels, collection.query_paths):
        written[collection.object_names[int(q)]].append(p)
    for lab, p, m in zip(collection.db_labels, collection.db_paths, collection.db_meta):
        if lab >= 0 and (include_junk or m.get("type") != "junk"):
            written[collection.object_names[int(lab)]].append(p)
    result: Dict[str, List[str]] = {}
    for name, srcs in written.items():
        d = out / name
        d.mkdir(parents=True, exist_ok=True)
        result[name] = []
        for s in srcs:
            dst = d / Path(s).name
            shutil.copyfile(s, dst)
            result[name].append(str(dst))
    return result
