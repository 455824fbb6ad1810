"""Generated co-segmentation sets in the iCoseg layout (:func:`make_coseg_sets`): in each set one
object made of ``n_parts`` parts with distinct textures (or one real-photo object), at varied
positions and scales on varied backgrounds, with object masks and part label maps.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Union

import numpy as np

from retrieval.core.errors import DataError
from retrieval.core.io import atomic_path
from retrieval.toy.backgrounds import _background
from retrieval.toy.objects import _jitter_creature, _render_creature, _sample_creature
from retrieval.toy.output import _GT_VERSION, _check_size, _prepare_root, _save
from retrieval.toy.photos import _check_source, _object_sources, _photo_object, photo_object_names
from retrieval.toy.render import _render_view, _ViewSpec
from retrieval.toy.streams import _S_COSEG, _S_COSEG_IMG

PathLike = Union[str, Path]

__all__ = ["COSEG_FILE", "make_coseg_sets"]

COSEG_FILE = "coseg.json"


def make_coseg_sets(root: PathLike, n_sets: int = 3, images_per_set: int = 6, image_size: int = 96,
                    n_parts: int = 3, seed: int = 0, source: str = "synthetic") -> List[str]:
    """Generate co-segmentation sets in the iCoseg layout under ``root``; returns the set names.

    ``root/images/<set>/<set>_<i>.jpg``, ``root/masks/<set>/<set>_<i>.png`` (0/255 object mask) and
    ``root/parts/<set>/<set>_<i>.png`` (0 = background, 1..P = part), plus ``root/coseg.json``
    (sets, their part names and images). Synthetic sets (named ``set00``, ``set01``, ...): one
    object class per set made of ``n_parts`` parts (body, head, legs, tail, ears, fin, then spots),
    each with its own texture and colour, re-drawn per image with small changes of shape, placed at
    varied positions and scales (15–45 % of the image), mildly rotated, sometimes mirrored, on
    varied backgrounds. ``source="photos"``: each set is one real-photo object (``cat_face``,
    ``coffee_cup``, ...; its own hand-drawn parts, ``n_parts`` does not apply) on real textures.
    """
    photos = _check_source(source)
    _check_size(image_size)
    if n_sets < 1 or images_per_set < 1 or n_parts < 1:
        raise DataError(f"need n_sets, images_per_set, n_parts ≥ 1 (got {n_sets}, {images_per_set}, {n_parts})")
    S = int(image_size)
    root = Path(root).resolve()
    if photos:
        names = photo_object_names()
        if n_sets > len(names):
            raise DataError(f"source='photos' has {len(names)} objects; asked for {n_sets} sets")
        set_names = names[:n_sets]
    else:
        set_names = [f"set{i:02d}" for i in range(n_sets)]
    _prepare_root(root, COSEG_FILE)
    exclude = _object_sources(set_names) if photos else ()
    doc: Dict[str, Any] = {"version": _GT_VERSION, "source": source, "image_size": S, "seed": seed,
                           "n_parts": n_parts, "sets": {}}
    for si, sname in enumerate(set_names):
        srng = np.random.default_rng([seed, _S_COSEG, si])
        params = None if photos else _sample_creature(srng, n_parts, varied=False)
        images = []
        part_names: List[str] = []
        for i in range(images_per_set):
            rng = np.random.default_rng([seed, _S_COSEG_IMG, si, i])
            if photos:
                obj = _photo_object(sname, max(2 * S, 96))
            else:
                obj = _render_creature(_jitter_creature(params, rng, 0.08), max(S, 64), sname)
            part_names = obj.part_names
            spec = _ViewSpec(area=rng.uniform(0.15, 0.45), rotation=rng.uniform(-20, 20),
                             perspective=rng.uniform(0, 0.08), colour=rng.uniform(0, 0.4),
                             blur=rng.uniform(0, 0.6), flip=bool(rng.random() < 0.5))
            bg = _background(rng, S, busy=rng.uniform(0.0, 0.4), photos=photos, exclude=exclude)
            r = _render_view(obj, spec, S, bg, rng, photos, exclude=exclude)
            rel = f"images/{sname}/{sname}_{i:02d}.jpg"
            _save(root, rel, r.image, r.labels)
            images.append(rel)
        doc["sets"][sname] = {"part_names": part_names, "images": images}
    with atomic_path(root / COSEG_FILE) as tmp:
        tmp.write_text(json.dumps(doc, indent=1))
    return list(set_names)
