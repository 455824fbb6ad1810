"""Weights for a backbone: a state-dict file, a gemseg checkpoint's ``backbone.*`` weights, and
torchvision classifiers with ImageNet weights that fail offline with a one-line hint; a cirtorch or
dirtorch checkpoint gives its backbone (:mod:`retrieval.core.foreign_weights`).

``weights`` is ``"imagenet"`` (torchvision downloads into ``torch.hub.get_dir()/checkpoints``; with
no network a one-line :class:`~retrieval.core.errors.WeightsError` names the file to download and
where to put it), ``"none"`` (random init, seeded by the caller), or a path to a checkpoint: a
torchvision state dict of the full model, or a gemseg checkpoint whose ``backbone.*`` weights are
taken (by :func:`retrieval.core.backbone.build_backbone`, after the builder).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional

import torch
import torch.nn as nn

from retrieval.core.errors import WeightsError
from retrieval.core.foreign_weights import foreign_loading, torchvision_state
from retrieval.core.io import torch_load


def offline_hint(url: str) -> str:
    """``download <url> and put it at <torch hub checkpoints>/<file>``."""
    fname = url.rsplit("/", 1)[-1]
    target = Path(torch.hub.get_dir()) / "checkpoints" / fname
    return f"download {url} and put it at {target}"


def read_weights_file(path: str) -> Any:
    """The object in the weights file ``path``, read with ``weights_only=True`` (cirtorch's and
    dirtorch's numpy arrays and PCA objects allowed: :mod:`retrieval.core.foreign_weights`).

    Raises:
        WeightsError: the file is missing or unreadable.
    """
    with foreign_loading():
        return torch_load(Path(path), "weights file", WeightsError,
                          hint=" (use 'imagenet', 'none' or a checkpoint path)")


def load_state_file(path: str, obj: Any = None) -> Dict[str, torch.Tensor]:
    """The state dict in the file ``path`` (a ``{"state_dict": …}`` wrapper is opened); ``obj``:
    the file's object when already read.

    Raises:
        WeightsError: the file is missing, unreadable or holds no state dict.
    """
    p = Path(path)
    obj = read_weights_file(path) if obj is None else obj
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise WeightsError(f"{p} does not hold a state dict")
    return obj


def gemseg_backbone_state(weights: str) -> Optional[Dict[str, torch.Tensor]]:
    """The ``backbone.*`` weights of the gemseg checkpoint ``weights`` (keys without the prefix),
    or ``None`` for ``imagenet`` / ``none`` and for a file that is not a gemseg checkpoint."""
    if weights in ("imagenet", "none", ""):
        return None
    sd = load_state_file(weights)
    sub = {k[len("backbone."):]: v for k, v in sd.items() if k.startswith("backbone.stages.")}
    return sub or None


def torchvision_classifier(name: str, weights: str) -> nn.Module:
    """The torchvision classifier ``name`` (``resnet50``, ``vgg16`` …) with ``weights``.

    Raises:
        WeightsError: ImageNet weights that cannot be downloaded (the message names the file and
            where to put it), or a checkpoint of another architecture.
    """
    import torchvision.models as tvm
    from torchvision.models import get_model_weights

    ctor = getattr(tvm, name)
    if weights == "imagenet":
        enum = get_model_weights(name).IMAGENET1K_V1
        try:
            return ctor(weights=enum, progress=False)
        except Exception as e:  # URLError, HTTPError, socket errors, partial downloads
            raise WeightsError(
                f"cannot load ImageNet weights for {name} ({type(e).__name__}: no network?): "
                f"{offline_hint(enum.url)}") from None
    model = ctor(weights=None)
    if weights not in ("none", ""):
        obj = read_weights_file(weights)
        sd = torchvision_state(obj, name)  # a cirtorch / dirtorch checkpoint: its backbone
        sd = load_state_file(weights, obj) if sd is None else sd
        if any(k.startswith("backbone.stages.") for k in sd):
            return model  # a gemseg checkpoint: loaded after the Backbone is built
        missing, unexpected = model.load_state_dict(sd, strict=False)
        core_missing = [k for k in missing if not k.startswith(("fc.", "classifier."))]
        if core_missing or len(unexpected) == len(sd):
            raise WeightsError(f"{weights} is not a {name} checkpoint "
                               f"(missing e.g. {core_missing[:1] or list(sd)[:1]})")
    return model
