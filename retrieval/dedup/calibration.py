"""``--calibrate``: the tiers' thresholds of one model, measured on edits it has never seen.

The held-out set is generated: the photos scikit-image and scikit-learn ship
(:mod:`retrieval.dedup.planted`; all of them, or the ``names`` given), each edited by every
``near`` edit of :mod:`retrieval.dedup.edits` (crops at most
:data:`~retrieval.dedup.edits.NEAR_CROP`), written to a temporary folder and described with the
model. Edit pairs (a photo and its edits, two edits of one photo) and distinct pairs (two
different photos, a photo and another's edit) give the similarities that
:func:`retrieval.dedup.thresholds.calibrate` turns into thresholds.

Why not the user's own images: a collection that needs deduplicating holds duplicates, and every
duplicate pair drawn as a "distinct" pair would raise the thresholds (in a test collection of
planted copies, by 0.1). Thresholds are a property of the model, which the generated set measures
without that bias; the photos are varied (people, animals, objects, landscapes, astronomy,
microscopy, gray scans) so that the numbers hold beyond them. A collection unlike any of them can
still override the thresholds by flag.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np

from retrieval.core.errors import DataError
from retrieval.dedup.edits import EDIT_KINDS, NEAR_CROP
from retrieval.dedup.planted import PHOTO_NAMES, write_planted
from retrieval.dedup.thresholds import Thresholds, calibrate
from retrieval.model.network import DescriptorNet
from retrieval.search.extract import extract_descriptors

#: Edits that make a ``near`` copy (a byte copy is ``exact``, not calibrated).
NEAR_KINDS: Tuple[str, ...] = tuple(k for k in EDIT_KINDS if k != "copy")


def edit_pair_scores(X: np.ndarray, family: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Similarities of the pairs of rows of ``X`` ((n, D) float32) in the same family (edit pairs)
    and in different families (distinct pairs); ``family`` (n,) int: the photo each row comes from."""
    S = X @ X.T
    iu = np.triu_indices(len(X), 1)
    same = family[iu[0]] == family[iu[1]]
    return S[iu][same], S[iu][~same]


def calibrate_model(net: DescriptorNet, names: Optional[Sequence[str]] = None, *, seed: int = 0,
                    min_inliers: int = 15, device: Optional[str] = None, progress: bool = False,
                    workers: Optional[int] = 0, batch_size: int = 8, long_side: int = 480) -> Thresholds:
    """The thresholds of ``net`` measured on edits of the built-in photos ``names`` (default: all
    of :data:`~retrieval.dedup.planted.PHOTO_NAMES`), as the module's docstring says."""
    names = list(names) if names is not None else list(PHOTO_NAMES)
    if len(names) < 4:
        raise DataError(f"calibration needs at least 4 photos, got {len(names)}")
    with tempfile.TemporaryDirectory(prefix="gemseg-calibrate-") as tmp:
        planted = write_planted(tmp, names=names, kinds=NEAR_KINDS, seed=seed, long_side=long_side, twins=False)
        files = [f for f in planted.files if planted.lost.get(f, 0.0) <= NEAR_CROP]
        ex = extract_descriptors(net, [str(Path(tmp) / f) for f in files], device=device, progress=progress,
                                 workers=workers, batch_size=batch_size, desc="dedup: calibrate")
        got = {Path(p).name: k for k, p in enumerate(ex.paths)}
        keep = [f for f in files if f in got]
        if len(keep) < 8:
            raise DataError("calibration: fewer than 8 generated images could be described")
        X = ex.descriptors[[got[f] for f in keep]]
        fam = np.array([planted.origin[f][0] for f in keep])
        pos, neg = edit_pair_scores(X, fam)
    return calibrate(pos, neg, min_inliers=min_inliers, what=f"edits of {len(names)} built-in photos")
