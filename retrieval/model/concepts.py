"""Concept-masked pooling: pool the shared object, not the clutter around it.

Concept factors ``H (k, C)`` learned by Deep Feature Factorization over a collection
(:func:`cosegment.learn_concepts`, ``tools/coseg.py --save-concepts``) say what the recurring object
looks like in the activations of one backbone layer. For every image the descriptor network computes

1. the layer's activations ``A (h·w, C) ≥ 0`` (the same forward pass as the pooled feature map:
   :meth:`ConceptMask.features_and_mask` asks the backbone for both layers at once);
2. the heat maps ``W (h·w, k) ≥ 0`` minimising ``‖A − W H‖`` with H fixed (fixed-H NMF, i.e.
   non-negative least squares per position, :func:`cosegment.factorizers.project`);
3. the object heat ``o(x) = Σ_{j∈object} W[x, j]``, resized to the pooled map's h×w if the concept
   layer has another resolution, and divided by its maximum over the image (values in [0, 1]);
4. the mask ``m(x) = floor + (1 − floor)·o(x)`` (``floor`` keeps a little of the context),
   pooled by masked GeM ``f_c = (Σ_x m(x) X_c(x)^p / Σ_x m(x))^(1/p)``
   (:func:`retrieval.model.pooling.masked_gem`).

**Fallback to plain GeM** (the mask becomes all ones), per image, when the object heat is

* *empty*: the object factors explain less than ``min_share`` (default 2 %) of the image's
  activation mass, ``Σ_x Σ_j∈obj W[x, j]·‖H_j‖₁ / Σ_x ‖A(x)‖₁ < min_share`` (the object is not
  there, so a mask would only pick noise), or
* *near-uniform*: the normalised heat's mean over the image is ≥ ``uniform_above`` (default 0.8:
  the object fills the frame, so there is nothing to mask away).

Concept files carry the fingerprint of the backbone they were learned with
(:meth:`Backbone.fingerprint`); :meth:`ConceptMask.from_file` refuses another
backbone's file with a one-line :class:`~retrieval.core.errors.ModelMismatchError`.

Object factors are numbered from 0 (rows of H) here as everywhere: in concept files, in
``tools/coseg.py`` (printed and ``--object-factor``), in ``coseg.object_factors`` of a config and in
``ModelConfig.object_factor`` / ``--object-factor`` of ``tools/index.py`` and ``tools/search.py``.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from cosegment.concept_file import load_concepts
from cosegment.factorizers import project
from retrieval.core.backbone import Backbone
from retrieval.core.errors import DataError, ModelMismatchError

PathLike = Union[str, Path]

__all__ = ["ConceptMask", "ConceptOptions", "attach_concepts", "object_heat", "mask_from_heat"]


@dataclass
class ConceptOptions:
    """How a heat map becomes a pooling mask (see the module docstring).

    floor: weight of the positions where the object heat is 0 (0 = pure object pooling).
    min_share: below this share of the activation mass explained by the object → plain GeM.
    uniform_above: normalised heat with a mean at least this → plain GeM.
    max_iter: fixed-H NMF iterations per batch.
    """

    floor: float = 0.0
    min_share: float = 0.02
    uniform_above: float = 0.8
    max_iter: int = 50

    def validate(self) -> None:
        if not 0.0 <= self.floor <= 1.0:
            raise DataError(f"concepts.floor must be in [0, 1], got {self.floor}")
        if not 0.0 <= self.min_share < 1.0:
            raise DataError(f"concepts.min_share must be in [0, 1), got {self.min_share}")
        if not 0.0 < self.uniform_above <= 1.0:
            raise DataError(f"concepts.uniform_above must be in (0, 1], got {self.uniform_above}")
        if self.max_iter < 1:
            raise DataError(f"concepts.max_iter must be ≥ 1, got {self.max_iter}")


def object_heat(acts: torch.Tensor, H: torch.Tensor, factors: Sequence[int],
                max_iter: int = 50) -> Tuple[torch.Tensor, torch.Tensor]:
    """Object heat maps by fixed-H projection.

    Args:
        acts: (N, C, h, w) float32 ≥ 0 activations of the concept layer.
        H: (k, C) float32 concepts; factors: the object factors (rows of H, numbered from 0).
    Returns:
        ``(heat (N, h, w) float32 ≥ 0, share (N,) float32)``: heat = Σ_j∈factors W[:, j]; share =
        the fraction of each image's activation mass (L1) that the object factors reconstruct.
    """
    N, C, h, w = acts.shape
    if H.dim() != 2 or H.shape[1] != C:
        raise ModelMismatchError(f"concepts have {H.shape[-1]} channels, the concept layer gives {C}")
    A = acts.detach().float().permute(0, 2, 3, 1).reshape(-1, C).contiguous()
    Hd = H.to(A.device, torch.float32)
    W = project(A, Hd, max_iter=max_iter)  # (N·h·w, k) ≥ 0
    idx = torch.as_tensor(list(factors), device=A.device, dtype=torch.long)
    Wobj = W[:, idx]  # (N·h·w, f)
    heat = Wobj.sum(1).reshape(N, h, w)
    obj_mass = (Wobj * Hd[idx].abs().sum(1)[None]).sum(1).reshape(N, -1).sum(1)
    total = A.abs().sum(1).reshape(N, -1).sum(1)
    share = torch.where(total > 0, obj_mass / total.clamp_min(1e-30), torch.zeros_like(total))
    return heat, share


def mask_from_heat(heat: torch.Tensor, share: torch.Tensor, opts: ConceptOptions
                   ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Pooling mask from object heat (rule in the module docstring).

    heat: (N, h, w) float32 ≥ 0; share: (N,) float32. Returns ``(mask (N, h, w) float32 in
    [floor, 1], fallback (N,) bool)`` where fallback rows are all ones (plain GeM).
    """
    N = heat.shape[0]
    peak = heat.reshape(N, -1).amax(1)
    norm = heat / peak.clamp_min(1e-30)[:, None, None]
    mean = norm.reshape(N, -1).mean(1)
    fallback = (peak <= 0) | (share < opts.min_share) | (mean >= opts.uniform_above)
    m = opts.floor + (1.0 - opts.floor) * norm
    m = torch.where(fallback[:, None, None], torch.ones_like(m), m)
    return m, fallback


class ConceptMask:
    """Concept factors + object factor(s) + layer → a spatial mask for the descriptor's pooling.

    Not an ``nn.Module`` on purpose: the concepts are not weights of the network (they do not enter
    its ``state_dict`` or checkpoints); the network's fingerprint includes :meth:`digest`.

    Args:
        H: (k, C_l) float32 concepts of ``layer``.
        object_factors: the factors that make up the object (numbered from 0; usually one).
        layer: backbone layer name (``Backbone.layer_names()``) the concepts were learned on.
        fingerprint: the backbone fingerprint stored with them.
        options: :class:`ConceptOptions`.
        source: where they came from (a file path), for messages.
    """

    def __init__(self, H: Union[np.ndarray, torch.Tensor], object_factors: Union[int, Sequence[int]],
                 layer: str, fingerprint: str = "", options: Optional[ConceptOptions] = None,
                 source: str = "") -> None:
        Ht = torch.as_tensor(np.asarray(H, np.float32) if not torch.is_tensor(H) else H).detach().float().cpu()
        if Ht.dim() != 2 or Ht.shape[0] < 1:
            raise DataError(f"concepts must be a (k, C) matrix, got shape {tuple(Ht.shape)}")
        facs = [int(object_factors)] if isinstance(object_factors, (int, np.integer)) else [int(f) for f in object_factors]
        if not facs or any(f < 0 or f >= Ht.shape[0] for f in facs):
            raise DataError(f"object factor(s) {facs} out of range for {Ht.shape[0]} concepts")
        self.H = Ht.contiguous()
        self.factors: List[int] = facs
        self.layer = str(layer)
        self.fingerprint = str(fingerprint)
        self.options = options or ConceptOptions()
        self.options.validate()
        self.source = source
        self.last_fallback: Optional[torch.Tensor] = None  # (N,) bool of the last call, for reports
        self.stats = {"images": 0, "fallback": 0}  # running counts over all calls (reset_stats())

    def reset_stats(self) -> None:
        self.stats = {"images": 0, "fallback": 0}

    # -------------------------------------------------------------------------------------
    @classmethod
    def from_file(cls, path: PathLike, backbone: Backbone,
                  object_factor: Optional[Union[int, Sequence[int]]] = None,
                  options: Optional[ConceptOptions] = None) -> "ConceptMask":
        """Load a concept file written by ``tools/coseg.py --save-concepts`` for ``backbone``.

        ``object_factor`` (numbered from 0, one or several) overrides the file's ``object_factors``; a file
        without them and with k > 1 needs it.
        Raises ModelMismatchError (one line) when the file was learned with another backbone, and
        DataError for a missing or foreign file.
        """
        c = load_concepts(path, expected_fingerprint=backbone.fingerprint())
        if c.layer not in backbone.tap_names():
            raise ModelMismatchError(f"concept file {path} was learned on layer '{c.layer}', which "
                                     f"{backbone.name} does not have")
        stored = getattr(c, "object_factors", None)
        if stored is None and getattr(c, "object_factor", None) is not None:  # older files
            stored = [c.object_factor]
        fac = object_factor if object_factor is not None else stored
        if fac is None:
            if c.H.shape[0] != 1:
                raise DataError(f"concept file {path} names no object factor; choose one of "
                                f"0..{c.H.shape[0] - 1} (object_factor / --object-factor)")
            fac = 0
        return cls(c.H, fac, c.layer, c.fingerprint, options, source=str(path))

    def digest(self) -> str:
        """16-hex-digit hash of everything that changes the masks (H, factors, layer, options)."""
        h = hashlib.sha1()
        h.update(json.dumps({"factors": self.factors, "layer": self.layer,
                             "options": vars(self.options)}, sort_keys=True).encode())
        h.update(self.H.numpy().tobytes())
        return h.hexdigest()[:16]

    def describe(self) -> Dict[str, Any]:
        """A JSON-able summary (for reports and index metadata)."""
        return {"source": self.source, "layer": self.layer, "k": int(self.H.shape[0]),
                "object_factors": self.factors, "fingerprint": self.fingerprint,
                "digest": self.digest(), **vars(self.options)}

    # -------------------------------------------------------------------------------------
    def mask(self, acts: torch.Tensor, size: Optional[Tuple[int, int]] = None) -> torch.Tensor:
        """Pooling mask from concept-layer activations.

        acts: (N, C_l, h_l, w_l) float32 ≥ 0; size: the pooled map's (h, w) (default h_l, w_l).
        Returns (N, h, w) float32 in [0, 1] (all ones where the fallback rule applies).
        """
        with torch.no_grad():
            heat, share = object_heat(acts, self.H, self.factors, self.options.max_iter)
            if size is not None and tuple(size) != tuple(heat.shape[-2:]):
                heat = F.interpolate(heat[:, None], size=tuple(size), mode="bilinear",
                                     align_corners=False)[:, 0].clamp_min(0)
            m, fb = mask_from_heat(heat, share, self.options)
        self.last_fallback = fb.detach().cpu()
        self.stats["images"] += int(fb.numel())
        self.stats["fallback"] += int(fb.sum())
        return m

    def features_and_mask(self, backbone: Backbone, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """One backbone pass: ``x (N, 3, H, W)`` → ``(fmap (N, C, h, w), mask (N, h, w))``; the mask
        carries no gradient."""
        last = backbone.layer_names()[-1]
        if self.layer == last:
            fmap = acts = backbone(x)
        else:
            outs = backbone.forward_layers(x, [self.layer, last])
            fmap, acts = outs[last], outs[self.layer]
        return fmap, self.mask(acts.float(), tuple(fmap.shape[-2:])).to(fmap.dtype)


def attach_concepts(net: Any, path: Optional[PathLike], object_factor: Optional[int] = None,
                    options: Optional[ConceptOptions] = None) -> Any:
    """Make ``net`` (a DescriptorNet) pool with the concept file at ``path`` (``None``: no change)
    and record it in ``net.config`` (so an index made with it knows). ``object_factor`` (numbered
    from 0; ``None``: the file's own) overrides the file's object factors. Returns ``net``.

    Raises ModelMismatchError (one line) for a file learned with another backbone."""
    if path is None:
        return net
    net.set_concepts(ConceptMask.from_file(path, net.backbone, object_factor, options))
    net.config.concepts = str(Path(path).resolve())
    net.config.object_factor = object_factor
    return net
