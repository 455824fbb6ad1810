"""Which model a tool uses: the default, a YAML config's ``model:`` section, a checkpoint, or the
model an index was built with.

This stands above :mod:`retrieval.settings` (which reads the whole YAML file) and the model, so the
model package itself never needs to know the configuration file.

A checkpoint is read once with ``torch.load(weights_only=True)`` (numpy arrays and PCA objects of
other toolkits allowed: :mod:`retrieval.core.foreign_weights`) and opened by its layout: gemseg's
(:mod:`retrieval.model.checkpoint`), cirtorch's (:mod:`retrieval.model.cirtorch`) or dirtorch's
(:mod:`retrieval.model.dirtorch`); any other file is one line.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

from retrieval.core.config import from_dict
from retrieval.core.errors import ConfigError, WeightsError
from retrieval.core.foreign_weights import foreign_layout, foreign_loading
from retrieval.core.io import torch_load
from retrieval.model.checkpoint import CHECKPOINT_FORMAT, network_from_checkpoint
from retrieval.model.cirtorch import cirtorch_network
from retrieval.model.dirtorch import dirtorch_network
from retrieval.model.concepts import attach_concepts
from retrieval.model.network import DescriptorNet, ModelConfig, build_network
from retrieval.search.index import ImageIndex
from retrieval.search.onnx_extract import OnnxNetwork
from retrieval.settings import load_settings

PathLike = Union[str, Path]


def load_checkpoint_file(path: PathLike) -> DescriptorNet:
    """The network in checkpoint ``path``: gemseg's (``tools/train_gem.py``), cirtorch's
    (``retrievalSfM120k-resnet101-gem-b80fb85.pth`` …) or dirtorch's (``Resnet-101-AP-GeM.pt``).

    Raises:
        WeightsError: a missing or unreadable file, or one of another layout (one line).
    """
    src = str(path)
    with foreign_loading():
        obj = torch_load(Path(path), "model checkpoint", WeightsError)
    if isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT:
        return network_from_checkpoint(obj, source=src)
    layout = foreign_layout(obj)
    if layout == "cirtorch":
        return cirtorch_network(obj, source=src)
    if layout == "dirtorch":
        return dirtorch_network(obj, source=src)
    raise WeightsError(f"{src} is not a gemseg, cirtorch or dirtorch model checkpoint "
                       f"(gemseg: tools/train_gem.py; cirtorch: {{'meta', 'state_dict'}}; "
                       f"dirtorch: {{'model_options', 'state_dict'}})")


def load_model(spec: Optional[PathLike] = None) -> DescriptorNet:
    """The model a tool uses: ``None`` → the default config; a ``.yaml``/``.yml`` → its ``model:``
    section; a ``.onnx`` → the exported model on onnxruntime
    (:class:`retrieval.search.onnx_extract.OnnxNetwork`); anything else → a checkpoint
    (:func:`load_checkpoint_file`: gemseg, cirtorch or dirtorch)."""
    if spec is None:
        return build_network(ModelConfig())
    s = str(spec)
    if s.endswith((".yaml", ".yml")):
        return build_network(load_settings(s).model)
    if s.endswith(".onnx"):
        return OnnxNetwork(s)  # type: ignore[return-value]
    return load_checkpoint_file(s)


def with_input(net: DescriptorNet, image_size: Optional[int] = None,
               scales: Optional[Sequence[float]] = None) -> DescriptorNet:
    """Describe at ``image_size`` (long side at scale 1) and ``scales`` instead of the model's own
    (``--image-size`` / ``--scales`` of the tools; ``None`` keeps them). Recorded in
    ``net.config``, so the fingerprint says which were used; a cirtorch network switches to its
    single- or multi-scale Lw. Returns ``net``.

    Raises:
        ConfigError: a size below 16 px or a scale that is not positive.
    """
    if image_size is not None:
        if int(image_size) < 16:
            raise ConfigError(f"--image-size: {image_size} is too small (at least 16)")
        net.config.image_size = int(image_size)
    if scales is not None:
        scales = [float(x) for x in scales]
        if not scales or any(x <= 0 for x in scales):
            raise ConfigError(f"--scales: need one or more positive scales, got {scales}")
        net.config.scales = scales
    if hasattr(net, "use_lw_for"):
        net.use_lw_for(len(net.config.scales))
    return net


def model_for_index(index: ImageIndex, spec: Optional[PathLike] = None) -> DescriptorNet:
    """The model that built ``index``: ``spec`` when given (a checkpoint or YAML), else the
    checkpoint the index records, else its stored model config."""
    if spec is not None:
        return load_model(spec)
    src = index.model_source
    if src and not str(src).endswith((".yaml", ".yml")):
        mc = index.model_config or {}  # the size and scales the index was described at
        return with_input(load_model(src), mc.get("image_size"), mc.get("scales"))
    return build_network(from_dict(ModelConfig, index.model_config, where="index meta.json: model"))


def search_model(index: ImageIndex, spec: Optional[PathLike] = None, concepts: Optional[PathLike] = None,
                 object_factor: Optional[int] = None) -> DescriptorNet:
    """The model that searches ``index``: :func:`model_for_index`, pooling with ``concepts`` (a
    concept file; default: the one the index records, if any) unless the model already has them."""
    net = model_for_index(index, spec)
    if net.concepts is None:
        mc = index.model_config or {}
        attach_concepts(net, concepts or mc.get("concepts"), object_factor if concepts else mc.get("object_factor"))
    return net
