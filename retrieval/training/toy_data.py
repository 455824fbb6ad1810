"""The generated toy collection as training data (``train.data: toy``).

:class:`ToyData` is the ``train.toy:`` section; :func:`prepare_toy_data` makes the collection once
(:mod:`retrieval.toy.collection`) and exports it as class folders ``root/classes/<object>/*``, the
layout every pairs source reads. Both training drivers (supervised and unsupervised) use it.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from retrieval.core.errors import ConfigError
from retrieval.core.io import atomic_path
from retrieval.toy.collection import export_class_folders, make_retrieval_collection

Log = Callable[[str], None]


@dataclass
class ToyData:
    """The generated collection used when ``train.data`` is ``toy`` (:mod:`retrieval.toy.collection`):
    ``n_objects`` objects × ``views`` views of ``image_size``² pixels, exported as class folders
    under ``root/classes`` (made once, remade when these settings change). ``include_junk`` keeps
    the views where the object is barely visible (off by default: they are not real matches)."""

    root: str = "runs/toy_train_data"
    n_objects: int = 40
    views: int = 6
    image_size: int = 96
    source: str = "synthetic"
    clutter: float = 0.0
    seed: int = 0
    include_junk: bool = False

    def validate(self) -> None:
        if self.source not in ("synthetic", "photos"):
            raise ConfigError(f"train.toy.source: '{self.source}' is not one of synthetic, photos")
        if self.n_objects < 2 or self.views < 2:
            raise ConfigError("train.toy: need n_objects ≥ 2 and views ≥ 2")


def prepare_toy_data(toy: ToyData, log: Log = print) -> Path:
    """Generate the toy collection of ``toy`` (unless already there with the same settings) and
    export it as class folders; returns ``root/classes``."""
    root = Path(toy.root)
    classes = root / "classes"
    params = dict(n_objects=toy.n_objects, views=toy.views, image_size=toy.image_size, seed=toy.seed,
                  clutter=float(toy.clutter), source=toy.source, distractors=0,
                  include_junk=toy.include_junk)
    stamp = root / "params.json"
    if classes.is_dir() and stamp.is_file() and json.loads(stamp.read_text()) == params:
        return classes
    log(f"generating the toy collection in {root} ({toy.n_objects} objects x {toy.views} views, "
        f"{toy.image_size} px, {toy.source})")
    col = make_retrieval_collection(root / "collection", n_objects=toy.n_objects, views=toy.views,
                                    distractors=0, image_size=toy.image_size, seed=toy.seed,
                                    clutter=toy.clutter, source=toy.source)
    if classes.exists():
        shutil.rmtree(classes)
    export_class_folders(col, classes, include_junk=toy.include_junk)
    with atomic_path(stamp) as tmp:
        tmp.write_text(json.dumps(params))
    return classes
