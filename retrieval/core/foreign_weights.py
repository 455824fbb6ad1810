"""Checkpoints of other retrieval toolkits: reading them safely, and their weights under torchvision's names.

Two layouts are known (their own code defines them; docs/interop.md):

* **cirtorch** (filipradenovic/cnnimageretrieval-pytorch): ``{"meta": {"architecture", "pooling",
  "whitening", "local_whitening", "regional", "mean", "std", ["Lw"], …}, "state_dict": {…}}`` with
  the backbone's children up to the pooling as ``features.<i>.…`` (ResNet: conv1, bn1, relu,
  maxpool, layer1 … layer4 = ``features.0`` … ``features.7``; VGG: torchvision's ``features``
  indices, the last max-pool dropped), ``pool.p`` and ``whiten.weight/bias``.
* **dirtorch** (naver/deep-image-retrieval): ``{"model_options": {"arch": "resnet101_rmac", …},
  "state_dict": {"module.conv1.weight", …, "adpool.p", "fc.weight", "fc.bias"}, ["preprocess"],
  ["pca": {name: sklearn PCA}]}``.

Their files hold numpy arrays (cirtorch's precomputed Lw) and, for dirtorch, pickled scikit-learn
``PCA`` objects. :func:`foreign_safe_globals` allows exactly what that needs under
``torch.load(weights_only=True)``: numpy's array and scalar reconstruction (under their numpy 1
and numpy 2 module names), the numeric dtype classes, and :class:`PCAState` standing in for
scikit-learn's ``PCA`` (a plain attribute holder: nothing of scikit-learn is imported or run).
``weights_only=False`` is never used.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Mapping, Optional

import numpy as np
import torch

from retrieval.core.errors import WeightsError

#: Where scikit-learn's PCA class has lived (pickles name the one of the version that wrote them).
SKLEARN_PCA_NAMES = ("sklearn.decomposition.pca.PCA", "sklearn.decomposition._pca.PCA")
#: cirtorch's ResNet ``features.<i>`` → torchvision module (ReLU and max-pool hold no weights).
CIRTORCH_RESNET_CHILDREN = {0: "conv1", 1: "bn1", 4: "layer1", 5: "layer2", 6: "layer3", 7: "layer4"}


class PCAState:
    """Stands in for a pickled ``sklearn.decomposition.PCA``: its attributes (``mean_``,
    ``components_``, ``explained_variance_``, ``whiten`` …) land in ``__dict__``; no method runs."""

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.__dict__.update(state)


def _numpy_globals() -> List[Any]:
    from numpy._core import multiarray
    import numpy.dtypes as nd

    dtypes = [getattr(nd, n) for n in ("BoolDType", "Float16DType", "Float32DType", "Float64DType",
                                       "Int8DType", "Int16DType", "Int32DType", "Int64DType",
                                       "UInt8DType", "UInt16DType", "UInt32DType", "UInt64DType",
                                       "LongDType", "ULongDType", "LongLongDType", "ULongLongDType")
              if hasattr(nd, n)]
    return [multiarray._reconstruct, multiarray.scalar, np.ndarray, np.dtype, *dtypes,
            (multiarray._reconstruct, "numpy.core.multiarray._reconstruct"),
            (multiarray.scalar, "numpy.core.multiarray.scalar")]


def foreign_safe_globals() -> List[Any]:
    """What ``torch.serialization.safe_globals`` gets to read cirtorch and dirtorch files."""
    return _numpy_globals() + [(PCAState, name) for name in SKLEARN_PCA_NAMES]


@contextmanager
def foreign_loading() -> Iterator[None]:
    """Within: ``torch.load(weights_only=True)`` also reads the numpy arrays and PCA objects of
    cirtorch / dirtorch files (and nothing else)."""
    with torch.serialization.safe_globals(foreign_safe_globals()):
        yield


def foreign_layout(obj: Any) -> Optional[str]:
    """``"cirtorch"``, ``"dirtorch"`` or ``None`` for a loaded checkpoint object."""
    if not isinstance(obj, Mapping) or not isinstance(obj.get("state_dict"), Mapping):
        return None
    if isinstance(obj.get("meta"), Mapping) and "architecture" in obj["meta"]:
        return "cirtorch"
    if isinstance(obj.get("model_options"), Mapping) and "arch" in obj["model_options"]:
        return "dirtorch"
    return None


def cirtorch_torchvision_state(state_dict: Mapping[str, torch.Tensor], arch: str) -> Dict[str, torch.Tensor]:
    """cirtorch ``features.<i>.…`` weights under torchvision's names for ``arch``
    (``resnet*`` or ``vgg*``); ``pool.*`` and ``whiten.*`` are left out.

    Raises:
        WeightsError: an architecture other than ResNet / VGG, or a ``features.<i>`` that does
            not exist in it.
    """
    out: Dict[str, torch.Tensor] = {}
    for k, v in state_dict.items():
        if not k.startswith("features."):
            continue
        _, idx, rest = k.split(".", 2)
        if arch.startswith("resnet"):
            child = CIRTORCH_RESNET_CHILDREN.get(int(idx))
            if child is None:
                raise WeightsError(f"cirtorch {arch} checkpoint: unexpected weight {k}")
            out[f"{child}.{rest}"] = v
        elif arch.startswith("vgg"):
            out[f"features.{idx}.{rest}"] = v
        else:
            raise WeightsError(f"cirtorch architecture '{arch}' is not supported (ResNet-50/101/152, VGG-16)")
    return out


def dirtorch_torchvision_state(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """dirtorch weights (``module.`` prefix of DataParallel dropped) under torchvision's ResNet
    names; the pooling ``adpool.*`` and the projection ``fc.*`` are left out."""
    out: Dict[str, torch.Tensor] = {}
    for k, v in state_dict.items():
        k = k[len("module."):] if k.startswith("module.") else k
        if k.startswith(("adpool.", "fc.")):
            continue
        out[k] = v
    return out


def torchvision_state(obj: Any, arch: str) -> Optional[Dict[str, torch.Tensor]]:
    """The backbone weights of a cirtorch / dirtorch checkpoint under torchvision's names, or
    ``None`` when ``obj`` is neither."""
    layout = foreign_layout(obj)
    if layout == "cirtorch":
        return cirtorch_torchvision_state(obj["state_dict"], arch)
    if layout == "dirtorch":
        return dirtorch_torchvision_state(obj["state_dict"])
    return None
