"""Concept files: DFF concepts ``H (k, C)`` saved with the backbone and layer that made them.

A concept file is ``{"format": "gemseg-concepts", "version", "H", "fingerprint", "layer",
"backbone", "image_size", "object_factors", "method", "extra"}``, written atomically and read with
``torch.load(weights_only=True)``. ``fingerprint`` is :meth:`Backbone.fingerprint` of the backbone
the concepts were learned with; a file made with another backbone raises
:class:`~retrieval.core.errors.ModelMismatchError`. ``object_factors`` are 0-based rows of H, as
everywhere in gemseg (tools, configs and the Python API number factors from 0).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import torch

from retrieval.core.errors import DataError, ModelMismatchError
from retrieval.core.io import atomic_path

PathLike = Union[str, Path]
ArrayLike = Union[np.ndarray, torch.Tensor]


CONCEPTS_FORMAT = "gemseg-concepts"



CONCEPTS_VERSION = 1



def save_concepts(path: PathLike, H: ArrayLike, fingerprint: str, layer: str, *,
                  backbone: str = "", image_size: Optional[int] = None,
                  object_factors: Optional[Sequence[int]] = None, method: str = "nmf",
                  extra: Optional[Dict[str, Any]] = None) -> Path:
    """Write concepts ``H (k, C)`` with the backbone fingerprint and layer that made them,
    atomically (a temporary file beside ``path`` then ``os.replace``). ``object_factors``: the
    0-based rows of H whose union is the object. Loadable with ``torch.load(path, weights_only=True)``."""
    Ht = torch.as_tensor(np.asarray(H, np.float32) if not torch.is_tensor(H) else H).detach().float().cpu()
    if Ht.dim() != 2:
        raise DataError(f"concepts must be a (k, C) matrix, got shape {tuple(Ht.shape)}")
    obj = {
        "format": CONCEPTS_FORMAT, "version": CONCEPTS_VERSION, "H": Ht.contiguous(),
        "fingerprint": str(fingerprint), "layer": str(layer), "backbone": str(backbone),
        "image_size": None if image_size is None else int(image_size),
        "object_factors": None if object_factors is None else [int(j) for j in object_factors],
        "method": str(method), "extra": dict(extra or {}),
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return path



@dataclass
class Concepts:
    """A concept file's content: H (k, C) float32 numpy; fingerprint (of the backbone, see
    :meth:`Backbone.fingerprint`), layer, backbone name, image_size (long side the concepts were
    learned at), object_factors (0-based rows of H forming the object, or None), method, extra."""

    H: np.ndarray
    fingerprint: str
    layer: str
    backbone: str = ""
    image_size: Optional[int] = None
    object_factors: Optional[List[int]] = None
    method: str = "nmf"
    extra: Dict[str, Any] = field(default_factory=dict)



def load_concepts(path: PathLike, expected_fingerprint: Optional[str] = None) -> Concepts:
    """Read a concept file; a file of another backbone (fingerprint differs from
    ``expected_fingerprint``) raises :class:`ModelMismatchError`; an unreadable or foreign file
    raises :class:`DataError`."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"concept file not found: {p}")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise DataError(f"cannot read concept file {p}: {str(e).splitlines()[0][:160]}") from None
    if not isinstance(obj, dict) or obj.get("format") != CONCEPTS_FORMAT:
        raise DataError(f"{p} is not a gemseg concept file (made by tools/coseg.py --save-concepts)")
    fp = str(obj.get("fingerprint", ""))
    if expected_fingerprint is not None and fp != str(expected_fingerprint):
        raise ModelMismatchError(
            f"concept file {p} was learned with another backbone (fingerprint {fp}, "
            f"layer {obj.get('layer')}); this model's is {expected_fingerprint}: re-run tools/coseg.py "
            "--save-concepts with this model")
    H = obj["H"]
    return Concepts(H.numpy().astype(np.float32), fp, str(obj.get("layer", "")), str(obj.get("backbone", "")),
                    obj.get("image_size"), obj.get("object_factors"), str(obj.get("method", "nmf")),
                    dict(obj.get("extra") or {}))
