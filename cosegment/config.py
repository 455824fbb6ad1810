"""The ``coseg:`` section of a YAML config: :class:`CosegConfig`, read by :func:`load_coseg_config`.

Object factors are numbered from 0 everywhere in gemseg (the rows of the concepts ``H (k, C)``: in
this config, in ``tools/coseg.py --object-factor`` and its printed text, in concept files and in
the Python API); part label maps keep 0 for the background, so label ``j + 1`` is factor ``j``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from cosegment.factorizers import FACTORIZERS
from retrieval.core.config import from_dict, read_yaml
from retrieval.core.errors import ConfigError

PathLike = Union[str, Path]


@dataclass
class CosegConfig:
    """The ``coseg:`` section of a YAML config (command-line options override it).

    k: number of concepts. layer: backbone layer to factorise (default per backbone:
    :func:`retrieval.core.backbone.default_layer`). image_size: long side of the network input
    (default per backbone: :func:`retrieval.core.backbone.default_image_size`). factorizer:
    ``nmf`` | ``sigmoid-nmf`` | ``deep-semi-nmf``. threshold: ``otsu`` (pooled over the set) |
    ``otsu-image`` | a number in [0, 1]. object_factors: the
    factors forming the object, numbered from 0 (default: the rule of
    :func:`cosegment.dff.choose_object_factors`). max_border_ratio: that rule's border threshold.
    seed: factorisation seed. batch_size: images per forward pass.
    """

    k: int = 3
    layer: Optional[str] = None
    image_size: Optional[int] = None
    factorizer: str = "nmf"
    threshold: str = "otsu"
    object_factors: Optional[List[int]] = None
    max_border_ratio: float = 0.8
    seed: int = 0
    batch_size: int = 8

    def validate(self) -> None:
        """Raise a one-line :class:`ConfigError` for a value out of range."""
        if self.k < 1:
            raise ConfigError(f"coseg.k: must be ≥ 1, got {self.k}")
        if self.factorizer not in FACTORIZERS:
            raise ConfigError(f"coseg.factorizer: '{self.factorizer}' is not one of {', '.join(FACTORIZERS)}")
        if self.image_size is not None and self.image_size < 32:
            raise ConfigError(f"coseg.image_size: {self.image_size} is too small (at least 32)")
        parse_threshold(self.threshold)
        if self.object_factors is not None and any(j < 0 or j >= self.k for j in self.object_factors):
            raise ConfigError(f"coseg.object_factors: factors are numbered from 0 (0..{self.k - 1}), "
                              f"got {self.object_factors}")
        if self.batch_size < 1:
            raise ConfigError(f"coseg.batch_size: must be ≥ 1, got {self.batch_size}")


def parse_threshold(t: Union[str, float]) -> Union[str, float]:
    """``otsu`` | ``otsu-image`` | a number in [0, 1] (also as a string)."""
    if isinstance(t, str) and t in ("otsu", "otsu-image"):
        return t
    try:
        v = float(t)
    except (TypeError, ValueError):
        raise ConfigError(f"threshold must be 'otsu', 'otsu-image' or a number in [0, 1], got {t!r}") from None
    if not 0.0 <= v <= 1.0:
        raise ConfigError(f"threshold must be in [0, 1], got {v}")
    return v


def parse_factors(text: str, where: str = "object_factors") -> List[int]:
    """``"1"`` → [1], ``"0,2"`` → [0, 2]: object factors numbered from 0 (``where`` names the
    option in the error message)."""
    try:
        return [int(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"{where}: expected factor numbers (from 0) like 1 or 0,2, got {text!r}") from None


def load_coseg_config(config: Optional[PathLike] = None, **overrides: Any) -> CosegConfig:
    """The ``coseg:`` section of the YAML file ``config`` (None, or a model checkpoint: the
    defaults), with ``overrides`` (CosegConfig fields; None = keep) applied, validated."""
    raw: Dict[str, Any] = {}
    if config is not None and str(config).endswith((".yaml", ".yml")):
        raw = dict(read_yaml(config).get("coseg") or {})
    cfg = from_dict(CosegConfig, raw, where=f"{config}: coseg" if config else "coseg")
    unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(CosegConfig)})
    if unknown:
        raise ConfigError(f"coseg: unknown option(s) {', '.join(unknown)}")
    cfg = dataclasses.replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
    cfg.validate()
    return cfg
