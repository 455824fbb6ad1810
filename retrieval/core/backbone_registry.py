"""The backbone registry: a name → builder table, so that adding a backbone edits one place.

A backbone is one builder ``(weights: str) -> Backbone`` decorated with :func:`register_backbone`,
which declares what the rest of gemseg needs to know before building it::

    @register_backbone("toy_cnn", stages=("conv1", "conv2"), concept_layer="conv2", coseg_image_size=128)
    def toy_cnn(weights: str) -> Backbone:
        ...

``weights`` is ``"imagenet"``, ``"none"`` (random init, seeded by the caller) or a checkpoint path;
:func:`retrieval.core.backbone.build_backbone` calls the builder, checks what it made against the
declaration and loads a gemseg checkpoint's ``backbone.*`` weights itself. The look-ups
(:func:`~retrieval.core.backbone.backbone_names`, :func:`~retrieval.core.backbone.backbone_spec`,
:func:`~retrieval.core.backbone.default_layer`, :func:`~retrieval.core.backbone.default_image_size`)
live in :mod:`retrieval.core.backbone`, which registers the built-in backbones
(:mod:`retrieval.core.backbone_builders`) first. The pattern is torchvision's ``get_model`` /
timm's ``register_model``.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Callable, Dict, Mapping, Optional, Sequence, Tuple, TypeVar

import torch.nn as nn

from retrieval.core.feature_extractor import INNER

#: Long side of the co-segmentation input of a backbone that declares none.
FALLBACK_CONCEPT_SIZE = 448
#: What a builder is: weights (``imagenet`` | ``none`` | a checkpoint path) → a Backbone.
Builder = Callable[[str], nn.Module]
B = TypeVar("B", bound=Callable[[str], nn.Module])

_REGISTRY: Dict[str, "BackboneSpec"] = {}


@dataclass(frozen=True)
class BackboneSpec:
    """What a registered backbone declares.

    name: the registry name (``model.backbone`` of a config; lower case).
    builder: ``(weights) -> Backbone``.
    stages: the built :class:`~retrieval.core.feature_extractor.Backbone`'s stage names, shallow to
        deep (its ``layer_names()``; the last is the output).
    concept_layer: the layer co-segmentation (DFF), concept learning, concept masks and
        co-segmentation re-ranking factorise by default (a stage, or ``<stage>.inner``).
    coseg_image_size: the long side co-segmentation and concept learning resize images to by
        default (``cosegment.cosegment``, ``cosegment.learn_concepts``, the server's
        co-segmentation); descriptors use ``ModelConfig.image_size`` instead.
    """

    name: str
    builder: Builder
    stages: Tuple[str, ...]
    concept_layer: str
    coseg_image_size: int = FALLBACK_CONCEPT_SIZE


def register_backbone(name: str, *, stages: Sequence[str], concept_layer: Optional[str] = None,
                      coseg_image_size: int = FALLBACK_CONCEPT_SIZE) -> Callable[[B], B]:
    """Decorator: register the builder it decorates as backbone ``name`` (see :class:`BackboneSpec`;
    ``concept_layer`` defaults to the last stage). Returns the builder unchanged.

    Raises:
        ValueError: ``name`` is taken or not lower case, ``stages`` is empty or repeats a name, the
            concept layer is not one of the stages (or ``<stage>.inner``), or the size is below 32.
    """
    stages = tuple(str(s) for s in stages)
    layer = stages[-1] if concept_layer is None and stages else str(concept_layer)
    if name in _REGISTRY:
        raise ValueError(f"backbone '{name}' is already registered")
    if not name or name != name.lower():
        raise ValueError(f"backbone name '{name}' must be lower case and not empty")
    if not stages or len(set(stages)) != len(stages):
        raise ValueError(f"backbone '{name}': stages must be distinct names, got {stages}")
    if layer.removesuffix(INNER) not in stages:
        raise ValueError(f"backbone '{name}': concept layer '{layer}' is not one of its stages")
    if int(coseg_image_size) < 32:
        raise ValueError(f"backbone '{name}': coseg_image_size {coseg_image_size} is below 32")

    def register(builder: B) -> B:
        if name in _REGISTRY:
            raise ValueError(f"backbone '{name}' is already registered")
        _REGISTRY[name] = BackboneSpec(name, builder, stages, layer, int(coseg_image_size))
        return builder

    return register


def unregister_backbone(name: str) -> Optional[BackboneSpec]:
    """Remove backbone ``name`` from the registry (a test's toy backbone); returns its spec, or
    ``None`` when it was not registered."""
    return _REGISTRY.pop(name, None)


def registered_backbones() -> Mapping[str, BackboneSpec]:
    """A read-only view of the registry, in registration order (only what has been registered so
    far: use :mod:`retrieval.core.backbone`'s look-ups, which register the built-ins first)."""
    return MappingProxyType(_REGISTRY)
