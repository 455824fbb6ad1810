"""Evaluation datasets behind one interface, :class:`EvalDataset`.

* :func:`load_revisited` — the public Revisited Oxford/Paris layout
  ``data_root/<name>/gnd_<name>.pkl`` + ``data_root/<name>/jpg/<image>.jpg``. The pickle holds
  ``imlist`` (database image names), ``qimlist`` (query image names) and ``gnd``, one dict per query
  with ``bbx`` (x1, y1, x2, y2 in pixels: the query is cropped to it before description) and index
  lists ``easy``, ``hard``, ``junk`` into ``imlist``. A missing file is a one-line
  :class:`~retrieval.core.errors.DataError` naming what to download and where to put it.
* :func:`load_class_folders` — ``DIR/<class>/*.jpg``: every image is a query, its positives are the
  other images of its class (``easy``; ``hard`` is empty), the query's own database entry is
  ``junk`` (so it is taken out of its own ranking). Images lying directly in ``DIR`` belong to no
  class: they are database-only distractors.
* :func:`load_toy` — the generated toy collection of :mod:`retrieval.toy.collection` (made on first use);
  queries are cropped to their object box.
"""
from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np

from retrieval.core.errors import DataError
from retrieval.core.image_listing import ImageListing, scan_images
from retrieval.core.images import IMAGE_EXTENSIONS, unsupported_reason
from retrieval.toy.collection import GT_FILE, ToyCollection, make_retrieval_collection

PathLike = Union[str, Path]
Box = Tuple[float, float, float, float]

#: Where the public files come from (the Revisited Oxford/Paris protocol, revisitop).
GND_URL = "https://cmp.felk.cvut.cz/revisitop/data/datasets/{name}/gnd_{name}.pkl"
IMAGE_URLS: Dict[str, Tuple[str, ...]] = {
    "roxford5k": ("https://www.robots.ox.ac.uk/~vgg/data/oxbuildings/oxbuild_images-v1.tgz",),
    "rparis6k": (
        "https://www.robots.ox.ac.uk/~vgg/data/parisbuildings/paris_1-v1.tgz",
        "https://www.robots.ox.ac.uk/~vgg/data/parisbuildings/paris_2-v1.tgz",
    ),
}
REVISITED_NAMES: Tuple[str, ...] = tuple(IMAGE_URLS)


@dataclass
class EvalDataset:
    """A retrieval evaluation set.

    name: display name.
    query_paths: Q image files.
    query_boxes: None (whole images) or Q entries, each None or (x1, y1, x2, y2) pixel box in the
        original image to crop the query to.
    db_paths: N database image files.
    gnd: Q dicts with int64 index arrays ``easy``, ``hard``, ``junk`` into ``db_paths``.
    query_db_ids: None or (Q,) int64, the database index of each query's own image (-1: not in the
        database); used to keep a query's own copy out of its query expansion.
    """

    name: str
    query_paths: List[Path]
    query_boxes: Optional[List[Optional[Box]]]
    db_paths: List[Path]
    gnd: List[Dict[str, np.ndarray]]
    query_db_ids: Optional[np.ndarray] = None
    info: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        q = len(self.query_paths)
        if len(self.gnd) != q:
            raise DataError(f"{self.name}: {q} queries but {len(self.gnd)} ground-truth entries")
        if self.query_boxes is not None and len(self.query_boxes) != q:
            raise DataError(f"{self.name}: {q} queries but {len(self.query_boxes)} query boxes")
        n = len(self.db_paths)
        for i, g in enumerate(self.gnd):
            for key in ("easy", "hard", "junk"):
                a = np.asarray(g.get(key, []), dtype=np.int64).reshape(-1)
                if a.size and (a.min() < 0 or a.max() >= n):
                    raise DataError(
                        f"{self.name}: query {i} '{key}' holds an index outside the {n} database"
                        " images"
                    )
                g[key] = a

    @property
    def n_queries(self) -> int:
        return len(self.query_paths)

    @property
    def n_db(self) -> int:
        return len(self.db_paths)


def _missing_gnd_message(name: str, gnd_path: Path) -> str:
    url = GND_URL.format(name=name) if name in REVISITED_NAMES else f"gnd_{name}.pkl"
    return f"{name}: missing {gnd_path}; download {url} and put it at {gnd_path}"


def _missing_images_message(name: str, jpg_dir: Path, first: Path, n_missing: int, n: int) -> str:
    urls = " and ".join(IMAGE_URLS.get(name, ()))
    src = f"extract {urls} " if urls else "put the images "
    return (
        f"{name}: {n_missing} of {n} images missing (first: {first}); "
        f"{src}so that the .jpg files lie directly in {jpg_dir}"
    )


def load_revisited(name: str, data_root: PathLike, check_images: bool = True) -> EvalDataset:
    """ROxford5k / RParis6k (or any set in the same public layout) from ``data_root``.

    Reads ``data_root/<name>/gnd_<name>.pkl`` (a pickle: load only files from the official source
    or your own) and lists ``data_root/<name>/jpg/<image>.jpg``. With ``check_images`` every image
    file must exist. Raises DataError naming the missing file and the download URL.
    """
    root = Path(data_root) / name
    gnd_path = root / f"gnd_{name}.pkl"
    jpg_dir = root / "jpg"
    if not gnd_path.is_file():
        raise DataError(_missing_gnd_message(name, gnd_path))
    try:
        with open(gnd_path, "rb") as f:
            cfg = pickle.load(f)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad file
        raise DataError(f"{gnd_path}: not a readable ground-truth pickle ({type(e).__name__}: {e})")
    if not isinstance(cfg, Mapping) or not all(k in cfg for k in ("imlist", "qimlist", "gnd")):
        raise DataError(f"{gnd_path}: expected a dict with keys imlist, qimlist, gnd")
    imlist = [str(s) for s in cfg["imlist"]]
    qimlist = [str(s) for s in cfg["qimlist"]]
    raw = list(cfg["gnd"])
    if len(raw) != len(qimlist):
        raise DataError(f"{gnd_path}: {len(qimlist)} queries but {len(raw)} gnd entries")

    def img(n: str) -> Path:
        return jpg_dir / (n if n.lower().endswith(".jpg") else n + ".jpg")

    db_paths = [img(n) for n in imlist]
    query_paths = [img(n) for n in qimlist]
    if check_images:
        missing = [p for p in dict.fromkeys(db_paths + query_paths) if not p.is_file()]
        if missing:
            raise DataError(
                _missing_images_message(name, jpg_dir, missing[0], len(missing), len(db_paths))
            )
    boxes: List[Optional[Box]] = []
    gnd: List[Dict[str, np.ndarray]] = []
    for i, g in enumerate(raw):
        if not isinstance(g, Mapping) or not all(k in g for k in ("easy", "hard", "junk")):
            raise DataError(f"{gnd_path}: gnd[{i}] lacks one of easy, hard, junk")
        bbx = g.get("bbx")
        if bbx is None:
            boxes.append(None)
        else:
            b = [float(v) for v in np.asarray(bbx, dtype=np.float64).reshape(-1)]
            if len(b) != 4:
                raise DataError(f"{gnd_path}: gnd[{i}]['bbx'] must be (x1, y1, x2, y2)")
            boxes.append((b[0], b[1], b[2], b[3]))
        gnd.append({k: np.asarray(g[k], dtype=np.int64).reshape(-1) for k in ("easy", "hard", "junk")})
    # query_db_ids stays None: a cropped query is not the same image as its database copy, and the
    # published protocol expands queries with their top-k database images, whatever they are.
    return EvalDataset(name, query_paths, boxes, db_paths, gnd, None)


def load_class_folders(root: PathLike) -> EvalDataset:
    """A folder of classes, ``root/<class>/...`` (images found recursively in each class folder).

    Every image of a class with two images or more is a query; positives (``easy``) are the other
    images of its class, its own database entry is ``junk``; ``hard`` is empty, so Medium = Easy
    and there is no Hard set. The image of a one-image class and the images directly in ``root``
    are database-only distractors. ``info["left_out"]`` lists every file that is not a query, with
    the reason (those, and files of formats that are not read); ``info["notes"]`` explains the
    columns. Raises DataError for a missing folder or one without a class of two images.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"folder dataset: {root} is not a folder (expected {root}/<class>/*.jpg)")
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    db_paths: List[Path] = []
    labels: List[int] = []
    class_names: List[str] = []
    left_out: List[Dict[str, str]] = []  # what is not a query, and why
    singles: List[Path] = []
    for c in classes:
        try:
            listing = scan_images(c)
        except DataError:
            listing = ImageListing([])
        left_out += [{"path": p, "why": why} for p, why in listing.skipped]
        if len(listing.paths) == 1:  # no other image of its class: no positive, no AP
            singles.append(listing.paths[0])
            left_out.append({"path": str(listing.paths[0]), "why": f"class '{c.name}' has one image: "
                             "not a query (no positive), kept in the database as a distractor"})
            continue
        if not listing.paths:
            continue
        class_names.append(c.name)
        db_paths.extend(listing.paths)
        labels.extend([len(class_names) - 1] * len(listing.paths))
    top_files = sorted(p for p in root.iterdir() if p.is_file() and not p.name.startswith("."))
    distractors = [p for p in top_files if p.suffix.lower() in IMAGE_EXTENSIONS]
    left_out += [{"path": str(p), "why": "top-level file, in no class: not a query, kept in the database "
                  "as a distractor"} for p in distractors]
    left_out += [{"path": str(p), "why": unsupported_reason(p)} for p in top_files
                 if p.suffix.lower() not in IMAGE_EXTENSIONS]
    if not db_paths:
        raise DataError(f"folder dataset: no class of {root} has two images or more "
                        f"(expected {root}/<class>/*.jpg)")
    n_q = len(db_paths)
    db_paths = db_paths + singles + distractors
    lab = np.asarray(labels, dtype=np.int64)
    gnd = []
    for i in range(n_q):
        same = np.flatnonzero(lab == lab[i])
        gnd.append({
            "easy": same[same != i].astype(np.int64),
            "hard": np.empty(0, np.int64),
            "junk": np.array([i], np.int64),
        })
    return EvalDataset(
        name=f"folder:{root.name}",
        query_paths=list(db_paths[:n_q]),
        query_boxes=None,
        db_paths=db_paths,
        gnd=gnd,
        query_db_ids=np.arange(n_q, dtype=np.int64),
        info={"classes": class_names, "n_distractors": len(distractors) + len(singles), "left_out": left_out,
              "notes": list(FOLDER_NOTES)},
    )


#: What the columns of a class-folder evaluation mean (printed under its table, and in its report).
FOLDER_NOTES = (
    "class folders: every image of a class with 2+ images is a query; the other images of its class are "
    "its positives (Easy); the query itself is left out of its own ranking",
    "no image is marked hard, so Medium = Easy and there is no Hard set (H: -)",
)


#: Size of the toy collection ``load_toy`` generates when none exists (the README's toy table).
TOY_DEFAULTS: Dict[str, Any] = {"n_objects": 24, "views": 8, "distractors": 64, "image_size": 128,
                                "clutter": 0.3, "seed": 0, "source": "synthetic"}


def load_toy(root: PathLike, generate: bool = True, **params: Any) -> EvalDataset:
    """The generated toy collection of :mod:`retrieval.toy.collection` at ``root``.

    An existing collection (``root/ground_truth.json``) is used as it is when no ``params`` are
    given, or when it was made with them; otherwise, with ``generate``, one is made there with
    :data:`TOY_DEFAULTS` updated by ``params`` (a few seconds), replacing a generated collection
    made with other settings. Queries are cropped to their object's box, as in the revisited
    protocol.
    """
    root = Path(root)
    unknown = set(params) - set(TOY_DEFAULTS)
    if unknown:
        raise DataError(f"load_toy: unknown parameter(s) {', '.join(sorted(unknown))}")
    wanted = {**TOY_DEFAULTS, **params}
    col = ToyCollection.load(root) if (root / GT_FILE).is_file() else None
    if col is not None and params and any(col.params.get(k) != v for k, v in wanted.items()):
        col = None  # made with other settings: make it again
    if col is None:
        if not generate:
            raise DataError(f"{root}: no toy collection with these settings here ({GT_FILE})")
        col = make_retrieval_collection(root, **wanted)
    boxes: List[Optional[Box]] = [tuple(float(v) for v in g["bbx"]) if g.get("bbx") is not None
                                  else None for g in col.gnd]  # type: ignore[misc]
    gnd = [{k: np.asarray(g[k], dtype=np.int64) for k in ("easy", "hard", "junk")} for g in col.gnd]
    return EvalDataset(
        name="toy", query_paths=[Path(p) for p in col.query_paths], query_boxes=boxes,
        db_paths=[Path(p) for p in col.db_paths], gnd=gnd, query_db_ids=None,
        info={"root": str(col.root), "params": col.params},
    )


def default_toy_root() -> Path:
    """Where ``--dataset toy`` keeps its generated collection: ``$GEMSEG_CACHE/toy`` or
    ``~/.cache/gemseg/toy``."""
    base = os.environ.get("GEMSEG_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "gemseg")
    return Path(base) / "toy"


def load_dataset(name: str, data_root: Optional[PathLike] = None) -> EvalDataset:
    """A dataset by the name the tools take: ``roxford5k`` | ``rparis6k`` (under ``data_root``,
    default ``data``), ``folder:DIR`` (class folders) or ``toy`` (generated under ``data_root``,
    default :func:`default_toy_root`)."""
    if name in REVISITED_NAMES:
        return load_revisited(name, data_root or "data")
    if name.startswith("folder:"):
        return load_class_folders(name[len("folder:"):])
    if name == "toy":
        return load_toy(data_root or default_toy_root())
    raise DataError(f"unknown dataset '{name}'; choose roxford5k, rparis6k, folder:DIR or toy")
