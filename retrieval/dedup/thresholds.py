"""The tiers' thresholds: what they are, how ``--calibrate`` sets them, where they are kept.

A descriptor similarity (cosine, the inner product of L2-normalised descriptors) means something
only for one model, so thresholds are calibrated per model and stored under its fingerprint:

* **near** — the smallest similarity that 98 % of *edit pairs* reach (an image and its edits, and
  two edits of one image: resize, JPEG, crop ≤ 20 %, tone, small rotation, text), raised if needed
  so that at most 0.1 % of *distinct pairs* (two different images of the calibration set) reach it.
  It favours precision: on a collection of N images there are N²/2 distinct pairs.
* **similar** — the similarity that only 1 % of distinct pairs reach (the same scene or object
  again is rarer than that among unrelated photos), never above ``near``.
* **slack** — how far below its tier's threshold a pair inside one group may fall (the chain
  cap, :mod:`retrieval.dedup.groups`): the gap between ``near`` and the 0.5 % quantile of edit
  pairs, clipped to [0, 0.1].
* **min_inliers** — matches a spatial verification must keep to confirm a ``near`` pair, and
  **min_share** — the share of the tentative matches they must be (not calibrated: 0.8). A copy of
  one photo is one homography, every correct match obeys it to a pixel or two; a second shot of a
  scene with depth or motion is not, and a homography explains only part of its matches (measured
  in ``docs/benchmarks.md``: 0.93–1.0 for edits, 0.51–0.75 for the other frame of a stereo pair).

The file (``dedup_thresholds.json``, :data:`FILENAME`) maps model fingerprints to thresholds; it
sits in the index folder (``--index``) or beside the checkpoint (``<checkpoint>.dedup.json``), or
where ``--thresholds`` says. Flags override single values. Without a calibration the defaults of
:class:`Thresholds` hold: those ``--calibrate`` measured for the default model (fingerprint
:data:`DEFAULT_FINGERPRINT`) on the built-in photos (``docs/dedup.md``); for another model they
are a guess, and the result says so.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Dict, Optional, Union

import numpy as np

from retrieval.core.errors import ConfigError, DataError
from retrieval.core.io import atomic_path, read_json

PathLike = Union[str, Path]
FILENAME = "dedup_thresholds.json"
#: The model the defaults were calibrated for (EfficientNet-Lite0 + GeM, 320 px, 3 scales).
DEFAULT_FINGERPRINT = "e2edc573d402e6fd"
#: quantiles of the calibration (see the module's docstring)
NEAR_RECALL = 0.98
NEAR_FPR = 0.001
SIMILAR_FPR = 0.01
SLACK_QUANTILE = 0.005
MAX_SLACK = 0.1


@dataclass
class Thresholds:
    """Thresholds of the tiers (cosine similarities in [-1, 1]).

    near: pairs at or above it are the same photo edited (confirmed by verification when it is on).
    similar: pairs at or above it (and below ``near``) are the same scene or object again.
    slack: how far below its tier's threshold a pair inside one group may fall (chain cap).
    min_inliers: verified matches that confirm a near pair; min_share: the least share of the
    tentative matches they must be.
    source: where they come from (``"default"``, ``"calibrated on ... pairs"``, a file).
    """

    near: float = 0.859
    similar: float = 0.612
    slack: float = 0.055
    min_inliers: int = 15
    source: str = "default"
    min_share: float = 0.8

    def __post_init__(self) -> None:
        if not -1.0 <= self.similar <= self.near <= 1.0:
            raise ConfigError(f"thresholds must satisfy -1 ≤ similar ≤ near ≤ 1, got similar={self.similar:g}, "
                              f"near={self.near:g}")
        if not 0.0 <= self.slack <= 1.0:
            raise ConfigError(f"slack must be in [0, 1], got {self.slack:g}")
        if self.min_inliers < 0:
            raise ConfigError(f"min_inliers must be ≥ 0, got {self.min_inliers}")
        if not 0.0 <= self.min_share <= 1.0:
            raise ConfigError(f"min_share must be in [0, 1], got {self.min_share:g}")

    def confirms(self, inliers: int, tentative: int) -> bool:
        """Whether a verification with ``inliers`` of ``tentative`` matches confirms a near pair."""
        return inliers >= self.min_inliers and inliers >= self.min_share * tentative

    def cap(self, tier: str) -> float:
        """The least similarity of any two members of one group of ``tier``."""
        return (self.near if tier == "near" else self.similar) - self.slack

    def with_overrides(self, **values: Optional[float]) -> "Thresholds":
        """A copy with the values that are not None replaced (the flags)."""
        given = {k: v for k, v in values.items() if v is not None}
        if not given:
            return self
        d = asdict(self)
        d.update(given)
        d["source"] = f"{self.source}, overridden: {', '.join(f'{k}={v:g}' for k, v in given.items())}"
        if "similar" in given and "near" not in given and d["similar"] > d["near"]:
            d["near"] = d["similar"]
        if "near" in given and "similar" not in given and d["similar"] > d["near"]:
            d["similar"] = d["near"]
        return Thresholds(**d)


def calibrate(positive: np.ndarray, negative: np.ndarray, *, min_inliers: int = 15,
              what: str = "") -> Thresholds:
    """Thresholds from the similarities of edit pairs (``positive``, (p,) float) and distinct pairs
    (``negative``, (q,) float), by the rules of the module's docstring."""
    positive = np.asarray(positive, np.float64)
    negative = np.asarray(negative, np.float64)
    if positive.size < 10 or negative.size < 10:
        raise DataError(f"calibration needs at least 10 edit pairs and 10 distinct pairs, got {positive.size} "
                        f"and {negative.size}: give more images")
    near = max(float(np.quantile(positive, 1 - NEAR_RECALL)), float(np.quantile(negative, 1 - NEAR_FPR)))
    near = min(near, 1.0)
    similar = min(float(np.quantile(negative, 1 - SIMILAR_FPR)), near)
    slack = float(np.clip(near - np.quantile(positive, SLACK_QUANTILE), 0.0, MAX_SLACK))
    src = f"calibrated on {positive.size} edit pairs and {negative.size} distinct pairs" + (f" ({what})" if what else "")
    up = lambda v: float(np.ceil(v * 1e4 - 1e-9) / 1e4)  # noqa: E731 - rounded up: never below the quantile
    return Thresholds(min(up(near), 1.0), min(up(similar), up(near), 1.0), round(slack, 4), min_inliers, src)


def load_thresholds(path: PathLike, fingerprint: str) -> Optional[Thresholds]:
    """The thresholds stored for ``fingerprint`` in the file ``path``; None when the file or the
    entry is missing (a damaged file is a DataError)."""
    p = Path(path)
    if not p.is_file():
        return None
    doc = read_json(p, f"thresholds file {p}")
    entry = doc.get(fingerprint) if isinstance(doc, dict) else None
    if entry is None:
        return None
    known = {f.name for f in fields(Thresholds)}
    try:
        return Thresholds(**{k: v for k, v in entry.items() if k in known})
    except TypeError as e:
        raise DataError(f"thresholds file {p} is damaged: {e}") from None


def save_thresholds(path: PathLike, fingerprint: str, thresholds: Thresholds, meta: Optional[Dict[str, Any]] = None) -> Path:
    """Store ``thresholds`` under ``fingerprint`` in the file ``path`` (other models' entries kept),
    written to a temporary file and renamed."""
    p = Path(path)
    doc: Dict[str, Any] = {}
    if p.is_file():
        old = read_json(p, f"thresholds file {p}")
        doc = old if isinstance(old, dict) else {}
    doc[fingerprint] = {**asdict(thresholds), **(meta or {})}
    with atomic_path(p) as tmp:
        tmp.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    return p


def thresholds_file(explicit: Optional[PathLike] = None, index: Optional[PathLike] = None,
                    model: Optional[PathLike] = None) -> Optional[Path]:
    """Where the thresholds of a run are kept: ``explicit`` (``--thresholds``), else the index
    folder's :data:`FILENAME`, else ``<checkpoint>.dedup.json`` beside a checkpoint (not a YAML
    config); None for the default model without an index (its defaults are built in)."""
    if explicit is not None:
        return Path(explicit)
    if index is not None:
        return Path(index) / FILENAME
    if model is not None and not str(model).endswith((".yaml", ".yml")):
        return Path(f"{model}.dedup.json")
    return None
