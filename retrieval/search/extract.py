"""Batched, multi-scale descriptor extraction: image files → (N, D) float32 descriptors.

Images are decoded in DataLoader workers, ordered by aspect ratio so that images of equal size
share a batch (batches larger than one without padding, which would change the pooled values), and
forwarded once per batch at scale 1; other scales are made by resizing the batch tensor. Per-scale
pooled descriptors (L2-normalised, non-negative) are combined by a generalised mean with GeM's p
(arithmetic mean for other poolings), L2-normalised, then whitened and L2-normalised again.
On CUDA the forward runs under bf16 autocast in channels_last layout.

Bad files never abort an extraction: they are skipped and returned in :attr:`Extracted.failures`.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from retrieval.core.backbone import resolve_device
from retrieval.core.errors import ImageError
from retrieval.core.images import ImageDataset, load_image, resize_long_side, to_tensor, upright_size
from retrieval.model.network import DescriptorNet
from retrieval.model.pooling import GeM

PathLike = Union[str, Path]


@dataclass
class Extracted:
    """Result of :func:`extract_descriptors`.

    descriptors: (N, D) float32 row-major, one per loaded image, in input order.
    paths: the N paths that loaded. failures: (path, reason) for each skipped file.
    seconds: wall time; images_per_second: N / seconds.
    """

    descriptors: np.ndarray
    paths: List[str]
    failures: List[Tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def images_per_second(self) -> float:
        return len(self.paths) / self.seconds if self.seconds > 0 else float("nan")


def _aspect(path: str) -> float:
    """Height/width from the file header (EXIF rotation applied); 1.0 when unreadable."""
    try:
        w, h = upright_size(path)
    except ImageError:
        return 1.0
    return h / w


def _batches(order: Sequence[int], batch_size: int) -> List[List[int]]:
    return [list(order[i:i + batch_size]) for i in range(0, len(order), batch_size)]


def _collate(items: List[Tuple[int, Optional[torch.Tensor], Optional[str]]]):
    return items


def _gem_p(net: DescriptorNet) -> float:
    return float(net.pool.p.detach()) if isinstance(net.pool, GeM) else 1.0


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


@torch.inference_mode()
def describe_batch(net: DescriptorNet, x: torch.Tensor, scales: Sequence[float] = (1.0,),
                   mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Descriptors of a batch of equal-size images.

    Args:
        x: (B, 3, H, W) float32, normalised, on the network's device.
        scales: resize factors; scale 1 is ``x`` itself.
    Returns:
        (B, D) float32, unit L2 rows.
    """
    device = x.device
    if hasattr(net, "describe_scales"):  # a network with its own multi-scale rule (retrieval.model.cirtorch)
        return net.describe_scales(x, scales)
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    pooled = []
    for s in scales:
        xs = rescale(x, s)
        with _autocast(device):
            pooled.append(net.pooled(xs).float())
    return combine_scales(net, pooled)


def rescale(x: torch.Tensor, s: float) -> torch.Tensor:
    """A batch (B, 3, H, W) float32 resized by ``s`` (bilinear, antialiased); ``s = 1``: ``x`` itself."""
    if abs(s - 1.0) <= 1e-6:
        return x
    h, w = max(1, round(x.shape[-2] * s)), max(1, round(x.shape[-1] * s))
    return F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True)


def combine_scales(net: DescriptorNet, pooled: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per-scale pooled vectors (each (B, C) float32, L2-normalised, ≥ 0) → descriptors (B, D)
    float32: their generalised mean with GeM's p, L2, then the network's whitening and L2."""
    p = _gem_p(net)
    acc = sum(v.float().clamp(min=0).pow(p) for v in pooled)
    v = F.normalize((acc / len(pooled)).pow(1.0 / p), dim=-1)
    return net.head(v).float()


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one: a container's
    share, not the host's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _auto_workers(n: int, cores: Optional[int] = None) -> int:
    """Decoding processes for ``n`` images on ``cores`` cores (default :func:`usable_cores`).

    None (decoding in the main process, between forward passes) for fewer than 32 images, where
    starting a worker costs more than it saves, and on 1–2 cores, where a worker only competes
    with the forward pass's threads for the same cores (``benchmarks/bench_extract.py --photos``:
    docs/benchmarks.md). From 3 cores on, ``max(1, min(4, cores // 2))``, as before.
    """
    cores = usable_cores() if cores is None else int(cores)
    if n < 32 or cores <= 2:
        return 0
    return max(1, min(4, cores // 2))


def extract_descriptors(net: DescriptorNet, paths: Sequence[PathLike], *,
                        image_size: Optional[int] = None, scales: Optional[Sequence[float]] = None,
                        batch_size: int = 8, workers: Optional[int] = None,
                        device: Optional[Union[str, torch.device]] = None, progress: bool = True,
                        desc: str = "extract") -> Extracted:
    """Describe every image in ``paths``; unreadable ones are skipped and reported.

    Args:
        net: the descriptor network (moved to ``device`` and put in eval mode).
        paths: image files.
        image_size, scales: default to ``net.config``.
        batch_size: images per forward pass; workers: decoding processes (``None`` = automatic).
    Returns:
        :class:`Extracted` with (N, D) float32 descriptors for the N images that loaded.
    """
    t0 = time.perf_counter()
    dev = resolve_device(device)
    net.to(dev)
    was_training = net.training
    net.eval()
    image_size = image_size or net.config.image_size
    scales = list(scales or net.config.scales)
    paths = [str(p) for p in paths]
    ds = ImageDataset(paths, image_size, mean=net.backbone.mean, std=net.backbone.std)
    aspects = [_aspect(p) for p in paths]
    order = sorted(range(len(paths)), key=lambda i: (aspects[i], i))
    n_workers = _auto_workers(len(paths)) if workers is None else workers
    loader = torch.utils.data.DataLoader(
        ds, batch_sampler=_batches(order, max(1, batch_size)), num_workers=n_workers,
        collate_fn=_collate, pin_memory=dev.type == "cuda")
    out: Dict[int, np.ndarray] = {}
    failures: Dict[int, str] = {}
    with tqdm(total=len(paths), desc=desc, unit="img", disable=not progress, leave=False) as bar:
        for items in loader:
            groups: Dict[Tuple[int, int], List[Tuple[int, torch.Tensor]]] = {}
            for i, t, reason in items:
                if t is None:
                    failures[i] = reason or "unreadable"
                else:
                    groups.setdefault(tuple(t.shape[-2:]), []).append((i, t))
            for members in groups.values():
                x = torch.stack([t for _, t in members]).to(dev, non_blocking=True)
                v = describe_batch(net, x, scales).cpu().numpy()
                for (i, _), row in zip(members, v):
                    out[i] = row
            bar.update(len(items))
    net.train(was_training)
    ok = [i for i in range(len(paths)) if i in out]
    D = net.dim
    X = np.stack([out[i] for i in ok]).astype(np.float32) if ok else np.zeros((0, D), np.float32)
    return Extracted(np.ascontiguousarray(X), [paths[i] for i in ok],
                     [(paths[i], failures[i]) for i in sorted(failures)], time.perf_counter() - t0)


def describe_pil(net: DescriptorNet, image: Image.Image, *, image_size: Optional[int] = None,
                 scales: Optional[Sequence[float]] = None,
                 device: Optional[Union[str, torch.device]] = None) -> np.ndarray:
    """Descriptor of one RGB PIL image (e.g. a query cropped to its box): (D,) float32."""
    dev = resolve_device(device)
    net.to(dev).eval()
    img = resize_long_side(image.convert("RGB"), image_size or net.config.image_size)
    x = to_tensor(img, net.backbone.mean, net.backbone.std)[None].to(dev)
    return describe_batch(net, x, list(scales or net.config.scales))[0].cpu().numpy()


def describe_image(net: DescriptorNet, path: PathLike, **kwargs) -> np.ndarray:
    """Descriptor of one image file: (D,) float32. Raises ImageError for a bad file."""
    return describe_pil(net, load_image(path), **kwargs)
