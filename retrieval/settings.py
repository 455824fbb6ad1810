"""The YAML configuration file: one section per concern, each validated into its dataclass.

```yaml
model:   {backbone: efficientnet_lite0, pooling: gem, image_size: 320}   # retrieval.model.network.ModelConfig
extract: {batch_size: 8, workers: 2}                                      # ExtractConfig
index:   {factory: Flat}                                                  # retrieval.search.index.IndexConfig
train:   {...}        # retrieval.training.config.TrainConfig (read by tools/train_gem.py)
unsupervised: {...}   # retrieval.training.config.UnsupervisedConfig (training with no labels)
coseg:   {...}        # read by tools/coseg.py
```
An unknown section or key is a one-line :class:`~retrieval.core.errors.ConfigError` naming it and
the closest valid name. Sections a tool does not use are kept as raw dicts in :attr:`Settings.raw`
for the tool that does.

There is no ``cluster:`` section: it used to be listed here but nothing ever read it, so a value
set there was silently ignored. The clustering of unsupervised training is configured in the
``unsupervised:`` section (``ks``, ``kc``, ``merge_batch``, ``final_clusters``, ``eta``), and a
``cluster:`` section is refused with a pointer there.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Union

from retrieval.core.config import from_dict, read_yaml, suggest
from retrieval.core.errors import ConfigError
from retrieval.model.network import ModelConfig
from retrieval.search.index import IndexConfig

SECTIONS = ("model", "extract", "index", "train", "coseg", "unsupervised")
#: sections that are not (or no longer) read, and where their settings live
MOVED = {"cluster": ("unsupervised", "its ks, kc and merge_batch set the clustering")}


@dataclass
class ExtractConfig:
    """How descriptors are extracted (not what they are: that is :class:`ModelConfig`).

    batch_size: images per forward pass (images of equal size are batched together).
    workers: DataLoader worker processes decoding images (``None`` = automatic).
    device: ``cpu`` | ``cuda`` | ``cuda:N`` | ``None`` (CUDA when available).
    """

    batch_size: int = 8
    workers: Optional[int] = None
    device: Optional[str] = None

    def validate(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"extract.batch_size: must be ≥ 1, got {self.batch_size}")
        if self.workers is not None and self.workers < 0:
            raise ConfigError(f"extract.workers: must be ≥ 0, got {self.workers}")


@dataclass
class Settings:
    model: ModelConfig = field(default_factory=ModelConfig)
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    raw: Dict[str, Any] = field(default_factory=dict)
    source: Optional[str] = None


def settings_from_dict(data: Dict[str, Any], where: str = "config") -> Settings:
    for key in data:
        if key in MOVED:
            section, why = MOVED[key]
            raise ConfigError(f"{where}: unknown section '{key}' (did you mean '{section}'? {why})")
        if key not in SECTIONS:
            raise ConfigError(f"{where}: unknown section '{key}'{suggest(str(key), SECTIONS)}")
    return Settings(
        model=from_dict(ModelConfig, data.get("model") or {}, f"{where}: model"),
        extract=from_dict(ExtractConfig, data.get("extract") or {}, f"{where}: extract"),
        index=from_dict(IndexConfig, data.get("index") or {}, f"{where}: index"),
        raw=dict(data),
        source=where,
    )


def load_settings(path: Optional[Union[str, Path]] = None) -> Settings:
    """Read a YAML config (``None`` → all defaults, i.e. ``configs/default.yaml``)."""
    if path is None:
        return Settings()
    return settings_from_dict(read_yaml(path), where=str(path))
