"""The input of co-segmentation: images → one backbone layer's activations.

``load_images`` decodes (any mode → RGB), resizes the long side and normalises for the backbone;
``extract_activations`` runs the backbone to one layer tap (:meth:`Backbone.forward_layers`),
batching images of equal size (``extract_layers``: several taps from the same pass); ``stack_activations`` stacks every position of every image into the
matrix DFF factorises, ``A: (Σ_i h_i·w_i, C)`` float32 ≥ 0.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch

from retrieval.core.backbone import Backbone, resolve_device
from retrieval.core.errors import DataError, ImageError
from retrieval.core.images import load_image, resize_long_side, to_tensor

PathLike = Union[str, Path]


@dataclass
class LoadedImages:
    """tensors: per image (3, h, w) float32, normalised for the backbone, long side = image_size;
    sizes: per image its original (H, W); paths: the files that loaded (input order);
    failures: (path, reason) for each file skipped."""

    tensors: List[torch.Tensor]
    sizes: List[Tuple[int, int]]
    paths: List[Path]
    failures: List[Tuple[str, str]] = field(default_factory=list)



def load_images(paths: Sequence[PathLike], image_size: int, mean: Sequence[float],
                std: Sequence[float]) -> LoadedImages:
    """Decode every image (any mode → RGB), resize its long side to ``image_size`` and normalise.

    Unreadable files are skipped and listed in ``failures`` (never an exception)."""
    out = LoadedImages([], [], [], [])
    for p in paths:
        try:
            img = load_image(p)
        except ImageError as e:
            out.failures.append((str(p), e.reason))
            continue
        out.sizes.append((img.height, img.width))
        out.tensors.append(to_tensor(resize_long_side(img, image_size), mean, std))
        out.paths.append(Path(p))
    return out



def extract_layers(backbone: Backbone, tensors: Sequence[torch.Tensor], layers: Sequence[str], *,
                   batch_size: int = 8, device: Optional[Union[str, torch.device]] = None
                   ) -> List[Dict[str, torch.Tensor]]:
    """Maps of several ``layers`` (see :meth:`Backbone.tap_names`) from one backbone pass per batch:
    per image ``{layer: (C_l, h_l, w_l) float32 ≥ 0}`` on the CPU. Images of equal size are batched
    (at most ``batch_size``); order kept."""
    for layer in layers:
        backbone.check_layer(layer)
    dev = resolve_device(device)
    backbone = backbone.to(dev).eval()
    groups: Dict[Tuple[int, int], List[int]] = {}
    for i, t in enumerate(tensors):
        groups.setdefault(tuple(t.shape[-2:]), []).append(i)
    out: List[Optional[Dict[str, torch.Tensor]]] = [None] * len(tensors)
    with torch.inference_mode():
        for idx in groups.values():
            for s in range(0, len(idx), max(1, batch_size)):
                chunk = idx[s:s + batch_size]
                x = torch.stack([tensors[i] for i in chunk]).to(dev)
                ys = {n: y.float().clamp_min(0).cpu() for n, y in backbone.forward_layers(x, list(layers)).items()}
                for j, i in enumerate(chunk):
                    out[i] = {n: y[j].contiguous() for n, y in ys.items()}
    return out  # type: ignore[return-value]


def extract_activations(backbone: Backbone, tensors: Sequence[torch.Tensor], layer: str, *,
                        batch_size: int = 8, device: Optional[Union[str, torch.device]] = None
                        ) -> List[torch.Tensor]:
    """Activations of ``layer`` (see :meth:`Backbone.tap_names`) for each image: list of (C, h_i, w_i)
    float32 ≥ 0 on the CPU. Images of equal size are batched (at most ``batch_size``); order kept."""
    return [m[layer] for m in extract_layers(backbone, tensors, [layer], batch_size=batch_size, device=device)]



def stack_activations(acts: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, List[Tuple[int, int]]]:
    """Per-image (C, h_i, w_i) → ``A: (Σ h_i·w_i, C)`` float32 (row-major positions of image 0,
    then image 1, …) and the list of (h_i, w_i)."""
    if not acts:
        raise DataError("no activations to factorise (no image loaded)")
    C = acts[0].shape[0]
    for a in acts:
        if a.shape[0] != C:
            raise DataError("activations of different layers cannot be stacked")
    shapes = [(int(a.shape[1]), int(a.shape[2])) for a in acts]
    A = torch.cat([a.reshape(C, -1).T for a in acts], 0).contiguous()
    return A, shapes
