"""Co-segmentation scores and ground-truth loaders.

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

Loaders: :func:`load_coseg_folder` reads the iCoseg layout (``images/<set>/*.jpg``,
``masks/<set>/<stem>.png``, optional ``parts/<set>/<stem>.png``), which is also the layout the toy
sets of :func:`retrieval.toydata.make_coseg_sets` are written in (:func:`load_toy_sets`); a flat
folder of images is one set. :func:`find_annotation` finds ``<dir>/<stem>.png`` (or in a sub-folder
named like the image's set) for a tool's ``--masks GT_DIR``; :func:`load_mask` and
:func:`load_labels` read object masks and part label maps (palette, grey or colour-coded PNGs).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image
from scipy.optimize import linear_sum_assignment

from retrieval.data import IMAGE_EXTENSIONS, list_images
from retrieval.errors import DataError

PathLike = Union[str, Path]
Box = Tuple[int, int, int, int]


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


def mask_box(mask: np.ndarray, largest_component: bool = False) -> Optional[Box]:
    """Tight box ``(x0, y0, x1, y1)`` (x1, y1 exclusive) of a mask's non-zero pixels, or of its
    largest 8-connected component; None for an empty mask."""
    m = np.asarray(mask).astype(bool)
    if largest_component and m.any():
        from scipy import ndimage

        lab, n = ndimage.label(m, structure=np.ones((3, 3), bool))
        if n > 1:
            sizes = np.bincount(lab.ravel())[1:]
            m = lab == (1 + int(np.argmax(sizes)))
    ys, xs = np.nonzero(m)
    if ys.size == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


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


# ----------------------------------------------------------------------------------------------
# Loaders
# ----------------------------------------------------------------------------------------------
def _open_png(path: PathLike) -> Image.Image:
    p = Path(path)
    if not p.is_file():
        raise DataError(f"annotation not found: {p}")
    try:
        im = Image.open(p)
        im.load()
    except Exception as e:  # noqa: BLE001
        raise DataError(f"{p}: cannot read annotation ({str(e).splitlines()[0][:100]})") from None
    return im


def load_mask(path: PathLike, size: Optional[Tuple[int, int]] = None) -> np.ndarray:
    """Object mask (H, W) bool, non-zero = object (any mode; colour masks: any channel non-zero;
    an alpha channel is ignored); ``size=(W, H)`` resizes with nearest neighbour."""
    im = _open_png(path)
    if im.mode in ("RGBA", "LA", "PA"):
        im = im.convert("RGB" if im.mode != "LA" else "L")
    if im.mode == "P":
        a = np.asarray(im)
    else:
        a = np.asarray(im.convert("RGB") if im.mode not in ("L", "1", "I", "I;16", "F") else im)
    m = a.any(axis=-1) if a.ndim == 3 else a != 0
    if size is not None and (m.shape[1], m.shape[0]) != tuple(size):
        m = np.asarray(Image.fromarray(m.astype(np.uint8) * 255).resize(tuple(size), Image.Resampling.NEAREST)) > 0
    return m


def load_labels(path: PathLike, size: Optional[Tuple[int, int]] = None) -> np.ndarray:
    """Part label map (H, W) int64: palette/grey PNGs give their indices; colour-coded PNGs give
    1…P for their distinct non-black colours in sorted order (black = 0). ``size=(W, H)``
    resizes with nearest neighbour."""
    im = _open_png(path)
    if im.mode in ("P", "L", "I", "I;16"):
        lab = np.asarray(im).astype(np.int64)
    else:
        rgb = np.asarray(im.convert("RGB")).astype(np.int64)
        code = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
        colours = np.unique(code)
        colours = colours[colours != 0]
        lab = np.zeros(code.shape, np.int64)
        for i, c in enumerate(colours, 1):
            lab[code == c] = i
    if size is not None and (lab.shape[1], lab.shape[0]) != tuple(size):
        lab = np.asarray(Image.fromarray(lab.astype(np.int32)).resize(tuple(size), Image.Resampling.NEAREST)).astype(np.int64)
    return lab


def find_annotation(image: PathLike, ann_dir: PathLike, images_root: Optional[PathLike] = None) -> Optional[Path]:
    """``ann_dir/<relative folder>/<stem>.png`` if it exists (relative to ``images_root``), else
    ``ann_dir/<set>/<stem>.png`` with <set> the image's parent folder name, else
    ``ann_dir/<stem>.png``; None if none exists."""
    image, ann_dir = Path(image), Path(ann_dir)
    cands = []
    if images_root is not None:
        try:
            rel = image.resolve().relative_to(Path(images_root).resolve()).parent
            cands.append(ann_dir / rel / f"{image.stem}.png")
        except ValueError:
            pass
    cands += [ann_dir / image.parent.name / f"{image.stem}.png", ann_dir / f"{image.stem}.png"]
    for c in cands:
        if c.is_file():
            return c
    return None


@dataclass
class CosegItem:
    """One image of a co-segmentation set with its annotations (None where absent)."""

    image: Path
    mask: Optional[Path] = None
    parts: Optional[Path] = None

    @property
    def stem(self) -> str:
        return self.image.stem


def load_coseg_folder(root: PathLike, masks: Optional[PathLike] = None,
                      parts: Optional[PathLike] = None) -> Dict[str, List[CosegItem]]:
    """Image sets of an iCoseg-style folder: ``{set name: [CosegItem, ...]}`` sorted by name.

    Layouts: ``root/images/<set>/*`` (+ ``root/masks/<set>/<stem>.png``, ``root/parts/<set>/<stem>.png``);
    ``root/<set>/*`` (sub-folders of images, each a set); or a flat folder of images (one set named
    after the folder). ``masks``/``parts`` override where annotations are looked up.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"not a folder: {root}")
    img_root = root / "images" if (root / "images").is_dir() else root
    masks = Path(masks) if masks is not None else (root / "masks" if (root / "masks").is_dir() else None)
    parts = Path(parts) if parts is not None else (root / "parts" if (root / "parts").is_dir() else None)
    subdirs = sorted(d for d in img_root.iterdir() if d.is_dir() and not d.name.startswith("."))
    direct = sorted(f for f in img_root.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS
                    and not f.name.startswith("."))
    groups: Dict[str, List[Path]] = {}
    if direct:
        groups[img_root.name if img_root.name != "images" else root.name] = direct
    for d in subdirs:
        if masks is not None and d.resolve() == masks.resolve() or parts is not None and d.resolve() == parts.resolve():
            continue
        imgs = list_images(d) if any(True for _ in d.rglob("*")) else []
        if imgs:
            groups[d.name] = imgs
    if not groups:
        raise DataError(f"no images in {root}")
    out: Dict[str, List[CosegItem]] = {}
    for name, imgs in groups.items():
        out[name] = [CosegItem(p,
                               find_annotation(p, masks, img_root) if masks is not None else None,
                               find_annotation(p, parts, img_root) if parts is not None else None)
                     for p in imgs]
    return out


def load_toy_sets(root: PathLike) -> Tuple[Dict[str, List[CosegItem]], Dict[str, List[str]]]:
    """The sets written by :func:`retrieval.toydata.make_coseg_sets`: ``(sets, part names per set)``
    (every image has its object mask and part map)."""
    root = Path(root)
    meta = root / "coseg.json"
    if not meta.is_file():
        raise DataError(f"{root} is not a toy co-segmentation folder (no coseg.json)")
    doc = json.loads(meta.read_text())
    sets: Dict[str, List[CosegItem]] = {}
    names: Dict[str, List[str]] = {}
    for sname, info in doc["sets"].items():
        items = []
        for rel in info["images"]:
            p = root / rel
            stem = Path(rel).stem
            items.append(CosegItem(p, root / "masks" / sname / f"{stem}.png", root / "parts" / sname / f"{stem}.png"))
        sets[sname] = items
        names[sname] = list(info.get("part_names", []))
    return sets, names
