"""The shared core both heads stand on; it imports nothing else of the project.

* :mod:`~retrieval.core.backbone` — the backbones' front door: build one by name, its default concept layer and size;
* :mod:`~retrieval.core.backbone_registry` — the name → builder table (``@register_backbone``);
* :mod:`~retrieval.core.backbone_builders` — the built-in backbones (EfficientNet-Lite0, ResNets, VGGs), one builder each;
* :mod:`~retrieval.core.backbone_weights` — weights: ImageNet, a state-dict file, a gemseg checkpoint's backbone;
* :mod:`~retrieval.core.foreign_weights` — cirtorch / dirtorch checkpoints: safe reading (numpy, PCA), their weights under torchvision's names;
* :mod:`~retrieval.core.feature_extractor` — :class:`Backbone`: named stages, layer taps, fingerprint;
* :mod:`~retrieval.core.images` — decoding any image a user has (EXIF, modes, HEIC) into a tensor;
* :mod:`~retrieval.core.image_listing` — which image files a folder or a list names, streamed or with what was left out;
* :mod:`~retrieval.core.config` — YAML → dataclasses, unknown keys refused by name;
* :mod:`~retrieval.core.io` — atomic writes, safe ``torch.load``;
* :mod:`~retrieval.core.errors` — one-line user errors;
* :mod:`~retrieval.core.ranks` — which process of a parallel job this is (torchrun, srun) and its barrier;
* :mod:`~retrieval.core.fonts` — the TrueType font (with CJK fallbacks) of every PNG the project writes;
* :mod:`~retrieval.core.cli` — the tools' plumbing: one-line errors, exit codes, ``--json``.
"""
