"""Co-segmentation ground truth and image sets on disk.

:func:`load_coseg_folder` reads the iCoseg layout (``images/<set>/*.jpg``,
``masks/<set>/<stem>.png``, optional ``parts/<set>/<stem>.png``), which is also the layout the toy
sets of :func:`retrieval.toy.coseg_sets.make_coseg_sets` are written in (:func:`load_toy_sets`); a
flat folder of images is one set. :func:`find_annotation` finds ``<dir>/<stem>.png`` (or in a
sub-folder named like the image's set) for a tool's ``--masks GT_DIR``; :func:`load_mask` and
:func:`load_labels` read object masks and part label maps (palette, grey or colour-coded PNGs).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np
from PIL import Image

from retrieval.core.errors import DataError
from retrieval.core.image_listing import list_images
from retrieval.core.images import IMAGE_EXTENSIONS

PathLike = Union[str, Path]


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
    """The sets written by :func:`retrieval.toy.coseg_sets.make_coseg_sets`: ``(sets, part names per set)``
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
