"""A photo folder with planted duplicates and known truth: the originals, one edit of each kind
per original (:mod:`retrieval.dedup.edits`), and distinct photos that are copies of nothing.

Built from the photographs that scikit-image and scikit-learn ship (no download); the tests, the
benchmark and ``--calibrate --builtin`` use it. Which pairs are duplicates is known by
construction: an edit and its original, and two edits of the same original.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Set, Tuple, Union

import numpy as np
from PIL import Image

from retrieval.core.errors import DataError
from retrieval.dedup.edits import EDIT_KINDS, NEAR_CROP, edit_plan, write_edit

PathLike = Union[str, Path]
#: Colour photographs shipped with scikit-image (name → loader) and scikit-learn.
PHOTO_NAMES: Tuple[str, ...] = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle_left", "hubble_deep_field",
                                "immunohistochemistry", "retina", "china", "flower", "camera", "moon", "coins",
                                "clock", "brick", "grass", "gravel", "cell", "page", "text", "colorwheel")
#: A second shot of the same scene (the other frame of a stereo pair): ``similar`` to its twin, not a copy.
SCENE_TWINS: Dict[str, str] = {"motorcycle_right": "motorcycle_left"}


def photo(name: str) -> np.ndarray:
    """One of :data:`PHOTO_NAMES` as (H, W, 3) uint8 (gray photos repeated on three channels)."""
    try:
        if name in ("china", "flower"):
            from sklearn.datasets import load_sample_image
            img = load_sample_image(f"{name}.jpg")
        else:
            import skimage.data as skd
            if name.startswith("motorcycle"):
                img = skd.stereo_motorcycle()[0 if name.endswith("left") else 1]
            else:
                img = getattr(skd, name)()
    except ImportError as e:
        raise DataError(f"the planted collection needs scikit-image and scikit-learn ({e.name} is missing): "
                        "pip install scikit-image scikit-learn") from None
    img = np.asarray(img)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    return np.ascontiguousarray(img[:, :, :3]).astype(np.uint8)


@dataclass
class Planted:
    """A planted collection. ``folder``: where the files are; ``files``: every image, relative to
    the folder; ``origin``: file → (original's number, kind) (``"original"`` for an original,
    ``"distinct"`` for a photo that is a copy of nothing, ``"twin"`` for another shot of an
    original's scene); ``lost``: crop file → share of area lost."""

    folder: Path
    files: List[str] = field(default_factory=list)
    origin: Dict[str, Tuple[int, str]] = field(default_factory=dict)
    lost: Dict[str, float] = field(default_factory=dict)

    def kind(self, a: str, b: str) -> Optional[str]:
        """The truth for files ``a`` and ``b``: ``"exact"`` (byte copy of each other), ``"near"``
        (the same photo edited), ``"similar"`` (the same photo, a crop beyond
        :data:`~retrieval.dedup.edits.NEAR_CROP`), or ``None`` (different photos)."""
        (ia, ka), (ib, kb) = self.origin[a], self.origin[b]
        if ka == "distinct" or kb == "distinct" or ia != ib:
            return None
        if "twin" in (ka, kb):
            return "similar" if ka != kb else None
        if {ka, kb} <= {"original", "copy"}:
            return "exact"
        if self.lost.get(a, 0.0) > NEAR_CROP or self.lost.get(b, 0.0) > NEAR_CROP:
            return "similar"
        return "near"

    def truth_pairs(self, kind: str) -> Set[Tuple[str, str]]:
        """Every unordered pair (sorted) whose truth is ``kind``."""
        return {tuple(sorted(p)) for p in itertools.combinations(self.files, 2) if self.kind(*p) == kind}

    def edit_kind(self, a: str, b: str) -> Optional[str]:
        """The edit that relates a duplicate pair: the kind of the one that is not the original
        (``None`` for two edits of the same original, or no duplicate)."""
        (ia, ka), (ib, kb) = self.origin[a], self.origin[b]
        if ia != ib or "distinct" in (ka, kb) or "twin" in (ka, kb):
            return None
        if ka == "original":
            return kb
        if kb == "original":
            return ka
        return None


def _resized(img: np.ndarray, long_side: int) -> Image.Image:
    im = Image.fromarray(img)
    s = long_side / max(im.size)
    return im.resize((max(8, round(im.width * s)), max(8, round(im.height * s))), Image.LANCZOS) if s < 1 else im


def write_planted(folder: PathLike, n_originals: int = 8, n_distinct: int = 6,
                  kinds: Sequence[str] = EDIT_KINDS, seed: int = 0, long_side: int = 480,
                  crops: Sequence[float] = (), twins: bool = True,
                  names: Optional[Sequence[str]] = None) -> Planted:
    """Write a planted collection to ``folder``: the first ``n_originals`` of ``names`` (default
    :data:`PHOTO_NAMES`; given, all of them are originals)
    (long side ``long_side``, JPEG q95) with one edit of each of ``kinds`` each, plus one extra crop
    per original for each share of area in ``crops`` (e.g. ``(0.1, 0.3)``), and the next
    ``n_distinct`` photos alone, and (``twins``) the second shot of each original that has one in
    :data:`SCENE_TWINS` (truth: ``similar``). Returns the truth."""
    folder = Path(folder)
    pool = list(names) if names is not None else list(PHOTO_NAMES)
    if names is not None:
        n_originals, n_distinct = len(pool), 0
    unknown = [n for n in pool if n not in PHOTO_NAMES and n not in SCENE_TWINS]
    if unknown:
        raise DataError(f"unknown photo '{unknown[0]}'; choose from {', '.join(PHOTO_NAMES)}")
    if n_originals + n_distinct > len(pool):
        raise DataError(f"at most {len(pool)} photos in all, asked for {n_originals + n_distinct}")
    out = Planted(folder)
    for i, name in enumerate(pool[:n_originals + n_distinct]):
        rel = f"{'orig' if i < n_originals else 'distinct'}_{i:02d}_{name}.jpg"
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        _resized(photo(name), long_side).save(folder / rel, "JPEG", quality=95)
        out.files.append(rel)
        out.origin[rel] = (i, "original" if i < n_originals else "distinct")
    if twins:
        for twin, of in SCENE_TWINS.items():
            if of in pool[:n_originals]:
                i = pool.index(of)
                rel = f"twin_{i:02d}_{twin}.jpg"
                _resized(photo(twin), long_side).save(folder / rel, "JPEG", quality=95)
                out.files.append(rel)
                out.origin[rel] = (i, "twin")
    for i, kind, s in edit_plan(n_originals, tuple(kinds), seed):
        src = folder / out.files[i]
        rel = f"edit_{i:02d}_{kind}.jpg"
        rng = np.random.default_rng(s)
        params = {}
        if kind == "crop":  # the drawn share, written down so the truth knows it
            params["lost"] = float(rng.uniform(0.05, 0.30))
            out.lost[rel] = params["lost"]
        write_edit(src, folder / rel, kind, rng, **params)
        out.files.append(rel)
        out.origin[rel] = (i, kind)
    for i in range(n_originals):
        for f in crops:
            rel = f"edit_{i:02d}_crop{round(f * 100):02d}.jpg"
            write_edit(folder / out.files[i], folder / rel, "crop", np.random.default_rng([seed, i, round(f * 100)]), lost=f)
            out.files.append(rel)
            out.origin[rel] = (i, "crop")
            out.lost[rel] = f
    return out


def prf(tp: int, n_pred: int, n_true: int) -> Tuple[float, float, float]:
    """Precision, recall and F1 from counts (1.0 for an empty prediction or an empty truth)."""
    p = tp / n_pred if n_pred else 1.0
    r = tp / n_true if n_true else 1.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def edit_metrics(planted: Planted, predicted: Set[Tuple[str, str]]) -> Dict[str, Tuple[float, float, float]]:
    """Precision, recall, F1 per edit kind of a set of predicted duplicate pairs (sorted file
    pairs): for kind k, the pairs of an edit of kind k with a photo that is no edit (an original, a
    distinct photo, a twin), true when the photo is the edit's original. Crops are split by the
    share of area lost: ``crop≤20%`` and ``crop>20%``."""
    photos = [f for f in planted.files if planted.origin[f][1] in ("original", "distinct", "twin")]
    out: Dict[str, Tuple[float, float, float]] = {}
    groups: Dict[str, List[str]] = {}
    for f in planted.files:
        i, k = planted.origin[f]
        if k in ("original", "distinct", "twin"):
            continue
        if k == "crop":
            k = "crop≤20%" if planted.lost.get(f, 0.0) <= NEAR_CROP else "crop>20%"
        groups.setdefault(k, []).append(f)
    for k, edits in groups.items():
        tp = n_pred = n_true = 0
        for e in edits:
            for x in photos:
                pair = tuple(sorted((e, x)))
                true = planted.origin[x] == (planted.origin[e][0], "original")
                hit = pair in predicted
                n_true += true
                n_pred += hit
                tp += hit and true
        out[k] = prf(tp, n_pred, n_true)
    return out
