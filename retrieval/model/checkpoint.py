"""Model checkpoints: a :class:`~retrieval.model.network.DescriptorNet` as a plain dict on disk.

A checkpoint is ``{"format": "gemseg-model", "version", "config", "state_dict", "fingerprint",
"extra"}``: tensors and primitives only, written atomically and read with
``torch.load(weights_only=True)``, so loading a checkpoint never runs code.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Dict, Optional, Union

from retrieval.core.config import from_dict, to_dict
from retrieval.core.errors import WeightsError, first_line
from retrieval.core.io import torch_load, torch_save_atomic
from retrieval.model.concepts import ConceptMask
from retrieval.model.network import DescriptorNet, ModelConfig, build_network

CHECKPOINT_FORMAT = "gemseg-model"
CHECKPOINT_VERSION = 1


def save_checkpoint(net: DescriptorNet, path: Union[str, Path], extra: Optional[Dict[str, Any]] = None) -> None:
    """Write ``net`` (config, weights, whitening) and ``extra`` (e.g. optimizer state, epoch) to
    ``path`` atomically. Loadable with ``torch.load(path, weights_only=True)``."""
    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    obj = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "config": to_dict(net.config),
        "state_dict": state,
        "fingerprint": net.fingerprint(),
        "extra": extra or {},
    }
    torch_save_atomic(obj, path)


def read_checkpoint(path: Union[str, Path]) -> Dict[str, Any]:
    """Load a gemseg checkpoint dict (``weights_only=True``); a foreign file is a WeightsError."""
    p = Path(path)
    obj = torch_load(p, "model checkpoint", WeightsError)
    if not isinstance(obj, dict) or obj.get("format") != CHECKPOINT_FORMAT:
        raise WeightsError(f"{p} is not a gemseg model checkpoint (made by tools/train_gem.py)")
    return obj


def network_from_checkpoint(obj: Dict[str, Any], source: str = "checkpoint") -> DescriptorNet:
    """Rebuild a :class:`DescriptorNet` from a checkpoint dict (see :func:`read_checkpoint`)."""
    cfg = from_dict(ModelConfig, obj["config"], where=f"{source}:config")
    stored_weights = cfg.weights
    net = build_network(dataclasses.replace(cfg, weights="none", concepts=None))
    sd = obj["state_dict"]
    if sd.get("whiten_P") is not None and sd["whiten_P"].numel() > 0:
        net.set_whitening(sd["whiten_m"], sd["whiten_P"], kind=cfg.whitening)
    try:
        net.load_state_dict(sd)
    except RuntimeError as e:
        raise WeightsError(f"{source}: weights do not fit its config: {first_line(e, 160)}") from None
    net.config = dataclasses.replace(cfg, weights=stored_weights)
    if cfg.concepts:
        net.set_concepts(ConceptMask.from_file(cfg.concepts, net.backbone, cfg.object_factor))
    return net.eval()


def load_checkpoint(path: Union[str, Path]) -> DescriptorNet:
    """Load a model saved by :func:`save_checkpoint`."""
    return network_from_checkpoint(read_checkpoint(path), source=str(path))
