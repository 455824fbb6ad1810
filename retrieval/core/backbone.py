"""CNN backbones with the classifier removed: image batch → non-negative feature map.

The front door of the backbones: :func:`build_backbone` builds a registered backbone by name, and
the registry's look-ups say what exists before anything is built: :func:`backbone_names`,
:func:`backbone_spec` (stages, concept layer, co-segmentation size), :func:`default_layer`,
:func:`default_image_size`. Importing this module registers the built-in backbones
(:mod:`retrieval.core.backbone_builders`: ``efficientnet_lite0``, the default, ``resnet18`` …
``resnet152``, ``vgg16``, ``vgg19``); a new one is one builder decorated with
:func:`register_backbone` (:mod:`retrieval.core.backbone_registry`), in one place.

The module itself, its layer taps and fingerprint: :class:`Backbone`
(:mod:`retrieval.core.feature_extractor`). Weights: :mod:`retrieval.core.backbone_weights`. Also
here: :func:`resolve_device` and :func:`set_threads`, what a tool checks and sets before it builds
one.
"""
from __future__ import annotations

import os
from typing import Optional, Tuple, Union

import torch

from retrieval.core.backbone_builders import lite0_weights_path
from retrieval.core.backbone_registry import (
    FALLBACK_CONCEPT_SIZE,
    BackboneSpec,
    register_backbone,
    registered_backbones,
    unregister_backbone,
)
from retrieval.core.backbone_weights import gemseg_backbone_state
from retrieval.core.errors import ConfigError, ResourceError, WeightsError, did_you_mean, first_line
from retrieval.core.feature_extractor import INNER, Backbone, hash_state

__all__ = ["Backbone", "BackboneSpec", "FALLBACK_CONCEPT_SIZE", "INNER", "backbone_names", "backbone_spec",
           "build_backbone", "default_image_size", "default_layer", "hash_state", "lite0_weights_path",
           "register_backbone", "resolve_device", "set_threads", "unregister_backbone"]


def backbone_names() -> Tuple[str, ...]:
    """The registered backbones' names, in registration order (the built-ins first)."""
    return tuple(registered_backbones())


def backbone_spec(name: str) -> BackboneSpec:
    """What backbone ``name`` declares (:class:`BackboneSpec`).

    Raises:
        ConfigError: ``name`` is not registered (one line, with the closest name and the choices).
    """
    spec = registered_backbones().get(name)
    if spec is None:
        names = backbone_names()
        raise ConfigError(f"unknown backbone '{name}'{did_you_mean(name, names)}; choose from: {', '.join(names)}")
    return spec


def default_layer(backbone_name: str) -> str:
    """The layer DFF factorises for ``backbone_name`` when none is given (``""`` if none is known)."""
    spec = registered_backbones().get(backbone_name)
    return spec.concept_layer if spec is not None else ""


def default_image_size(backbone_name: str) -> int:
    """The long side DFF resizes images to for ``backbone_name`` when none is given (its declared
    ``coseg_image_size``; :data:`FALLBACK_CONCEPT_SIZE` for a name not registered)."""
    spec = registered_backbones().get(backbone_name)
    return spec.coseg_image_size if spec is not None else FALLBACK_CONCEPT_SIZE


def build_backbone(name: str, weights: str = "imagenet") -> Backbone:
    """Build backbone ``name`` with ``weights`` (``imagenet`` | ``none`` | checkpoint path).

    The registered builder makes it; the stages it made must be the declared ones. A gemseg
    checkpoint's ``backbone.*`` weights are then loaded into it.

    Raises:
        ConfigError: unknown name (one line, with the closest name and the choices).
        WeightsError: weights that cannot be downloaded offline (the message names the file and
            where to put it), or a checkpoint of another architecture.
    """
    name = name.lower()
    weights = str(weights)
    spec = backbone_spec(name)
    bb = spec.builder(weights)
    if bb.name != name or tuple(bb.layer_names()) != spec.stages:
        raise ConfigError(f"backbone '{name}': its builder made '{bb.name}' with stages "
                          f"{', '.join(bb.layer_names())}, not the registered {', '.join(spec.stages)}")
    sub = gemseg_backbone_state(weights)
    if sub is not None:
        try:
            bb.load_state_dict(sub)
        except RuntimeError as e:
            raise WeightsError(f"{weights} holds weights of another backbone than {name}: "
                               f"{first_line(e, 160)}") from None
    return bb


def resolve_device(device: Optional[Union[str, torch.device]] = None) -> torch.device:
    """The torch device a tool's ``--device`` names, checked before any work is done.

    ``None`` (or ``""``) → CUDA when available, else CPU. A string torch does not know (``gpu``)
    is a :class:`ConfigError`; ``cuda`` / ``cuda:N`` on a machine without that CUDA device is a
    :class:`ResourceError` (``no CUDA device: <why>; use --device cpu``), never torch's traceback.
    """
    if device is None or (isinstance(device, str) and not device.strip()):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = device if isinstance(device, torch.device) else torch.device(str(device).strip())
    except (RuntimeError, ValueError):
        raise ConfigError(f"unknown device '{device}'; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = ("this PyTorch build has no CUDA support" if torch.version.cuda is None
                   else "no NVIDIA GPU or driver found")
            raise ResourceError(f"no CUDA device: {why}; use --device cpu")
        n = torch.cuda.device_count()
        if dev.index is not None and dev.index >= n:
            raise ResourceError(f"no CUDA device {dev}: this machine has {n} (cuda:0"
                                f"{f' … cuda:{n - 1}' if n > 1 else ''}); use one of them or --device cpu")
    return dev


def set_threads(n: Optional[int] = None) -> None:
    """Use ``n`` intra-op threads (default: all cores, or ``$GEMSEG_THREADS``)."""
    n = n or int(os.environ.get("GEMSEG_THREADS", "0")) or (os.cpu_count() or 1)
    torch.set_num_threads(n)
