"""One training epoch over mined tuples: images batched tuple by tuple, a loss, optimiser steps.

Each forward pass takes the images of ``cfg.batch`` tuples (``batch · (2 + n)`` images). Images
keep their aspect ratio (long side ``image_size``) and are zero-padded to a common size; the
padding is masked out of the pooling (masked GeM / MAC / SPoC), so a padded image pools like the
unpadded one up to the convolutions' border effects. ``resize: square`` squashes every image to
``image_size²`` instead. BatchNorm is frozen unless ``freeze_bn`` is off; the backbone runs under
bf16 autocast on CUDA (float32 on CPU); gradients accumulate over ``cfg.accumulate`` forwards.
The batch order of epoch ``e`` depends on ``cfg.seed`` and ``e`` only (:func:`epoch_seed`).

Under distributed training (:mod:`retrieval.training.distributed`) ``cfg.batch`` is per rank: step
``k`` takes the next ``batch · world_size`` tuples of the same shuffled order and rank ``r`` trains
on its contiguous ``r``-th part of them, through ``DistributedDataParallel``
(:class:`TrainingForward`), whose gradient average times the per-rank mean loss is the gradient of
the mean loss over the whole step: the step equals one process's step with ``batch · world_size``
tuples. A last step with fewer tuples than ranks is dropped.
"""
from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from retrieval.core.errors import ResourceError
from retrieval.core.images import ImageDataset
from retrieval.training.config import TrainConfig
from retrieval.training.distributed import DistContext
from retrieval.training.mining import Tuples
from retrieval.training.pairs import PairSet

PathLike = Union[str, Path]


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch ``epoch`` of a run seeded with ``seed`` (pairs, pool, batch order)."""
    return (int(seed) * 1_000_003 + int(epoch)) % (2 ** 63)


class TupleDataset(torch.utils.data.Dataset):
    """Training tuples as images: item ``t`` is ``(list of 2 + n tensors (3, H, W) float32, reason)``;
    a tuple with an unreadable image gives ``(None, reason)``."""

    def __init__(self, paths: Sequence[PathLike], tuples: np.ndarray, image_size: int,
                 mean: Sequence[float], std: Sequence[float], square: bool = False) -> None:
        self.tuples = np.asarray(tuples, dtype=np.int64)
        self.images = ImageDataset(paths, image_size, mean=mean, std=std)
        self.square = square
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.tuples)

    def __getitem__(self, t: int):
        out = []
        for i in self.tuples[t].tolist():
            _, x, reason = self.images[i]
            if x is None:
                return None, f"{self.images.paths[i]}: {reason}"
            if self.square and tuple(x.shape[-2:]) != (self.image_size, self.image_size):
                x = F.interpolate(x[None], size=(self.image_size, self.image_size), mode="bilinear",
                                  align_corners=False, antialias=True)[0]
            out.append(x)
        return out, None


def collate_tuples(items: List[Tuple[Optional[List[torch.Tensor]], Optional[str]]]):
    """Stack the images of several tuples: ``(x (B·S, 3, H, W), mask (B·S, H, W) bool or None,
    B, failures)``; images are zero-padded at the bottom/right to the largest H and W (``mask`` marks
    the real pixels, ``None`` when no padding was needed)."""
    good = [imgs for imgs, _ in items if imgs is not None]
    failures = [r for imgs, r in items if imgs is None]
    if not good:
        return None, None, 0, failures
    flat = [x for imgs in good for x in imgs]
    H = max(x.shape[-2] for x in flat)
    W = max(x.shape[-1] for x in flat)
    if all(x.shape[-2:] == (H, W) for x in flat):
        return torch.stack(flat), None, len(good), failures
    x = torch.zeros(len(flat), 3, H, W)
    mask = torch.zeros(len(flat), H, W, dtype=torch.bool)
    for i, t in enumerate(flat):
        h, w = t.shape[-2:]
        x[i, :, :h, :w] = t
        mask[i, :h, :w] = True
    return x, mask, len(good), failures


def freeze_batchnorm(net: nn.Module) -> None:
    """Put every BatchNorm layer in eval mode (running statistics frozen)."""
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def set_train_mode(net: nn.Module, freeze_bn: bool = True) -> None:
    """``net.train()``, with BatchNorm frozen unless ``freeze_bn`` is false."""
    net.train()
    if freeze_bn:
        freeze_batchnorm(net)


def gem_p(net: nn.Module) -> float:
    """The pooling's current p (NaN for a pooling without one)."""
    p = getattr(net.pool, "p", None)
    return float(p.detach()) if isinstance(p, torch.Tensor) else float("nan")


def describe_training_batch(net: nn.Module, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Descriptors with gradients: ``x (B, 3, H, W)`` float32 (+ optional ``mask (B, H, W)`` bool of
    real pixels) → ``(B, D)`` float32, L2 rows. bf16 autocast for the backbone on CUDA."""
    if x.device.type == "cuda":
        with torch.autocast("cuda", dtype=torch.bfloat16):
            fmap = net.features(x)
    else:
        fmap = net.features(x)
    fmap = fmap.float()
    if mask is None:
        f = net.pool(fmap)
    else:
        m = F.interpolate(mask[:, None].to(fmap.dtype), size=fmap.shape[-2:], mode="area")[:, 0]
        f = net.pool(fmap, m)
    return net.head(F.normalize(f, dim=-1))


class TrainingForward(nn.Module):
    """:func:`describe_training_batch` of ``net`` as a module's forward: what
    ``DistributedDataParallel`` wraps (its gradient hooks need the forward to run through it)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        return describe_training_batch(self.net, x, mask)


class RankBatches(torch.utils.data.Sampler):
    """The tuples of each step for one rank: ``torch.randperm(n, generator)`` (the order a shuffling
    ``DataLoader`` with that generator draws), cut into steps of ``batch · world_size`` tuples, each
    step cut into ``world_size`` contiguous parts (sizes differing by at most one); yields this
    rank's part. A last step with fewer tuples than ranks is dropped, so every rank runs the same
    number of steps."""

    def __init__(self, n: int, batch: int, ctx: DistContext, generator: torch.Generator) -> None:
        self.n, self.batch, self.ctx, self.generator = n, batch, ctx, generator
        step = batch * ctx.world_size
        self.sizes = [min(step, n - s) for s in range(0, n, step) if n - s >= ctx.world_size]

    def __len__(self) -> int:
        return len(self.sizes)

    def __iter__(self) -> Iterator[List[int]]:
        order = torch.randperm(self.n, generator=self.generator).tolist()
        start = 0
        for size in self.sizes:
            yield order[start:start + size][self.ctx.part(size)]
            start += size


def _oom_hint(cfg: TrainConfig, n_images: int, size: int) -> ResourceError:
    return ResourceError(
        f"out of GPU memory with train.batch {cfg.batch} ({n_images} images of {size} px per forward); "
        f"lower train.batch (raise train.accumulate to keep the effective batch) or train.image_size")


def train_epoch(net: nn.Module, pairs: PairSet, tuples: Tuples, optimizer: torch.optim.Optimizer,
                loss_fn: nn.Module, cfg: TrainConfig, epoch: int, *, image_size: int,
                device: torch.device, progress: bool = True, dist: Optional[DistContext] = None,
                model: Optional[nn.Module] = None) -> Tuple[float, int, List[str]]:
    """One pass over ``tuples``: ``batch`` tuples per forward, a step every ``accumulate`` forwards.

    Args:
        dist, model: under distributed training, this rank's context and ``net`` wrapped for it
            (``dist.wrap(TrainingForward(net))``); each rank trains on its part of every step
            (module docstring). ``None``: one process.

    Returns ``(mean loss per tuple, tuples used, failures)`` (over every rank).
    """
    if dist is not None and dist.parallel:
        if model is None:
            raise ValueError("distributed train_epoch needs the wrapped model (dist.wrap(TrainingForward(net)))")
        return _train_epoch_ranks(net, pairs, tuples, optimizer, loss_fn, cfg, epoch, image_size=image_size,
                                  device=device, progress=progress, dist=dist, model=model)
    S = tuples.size
    ds = TupleDataset(pairs.paths, tuples.images(), image_size, net.backbone.mean, net.backbone.std,
                      square=cfg.resize == "square")
    g = torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch))
    loader = torch.utils.data.DataLoader(ds, batch_size=cfg.batch, shuffle=True, generator=g,
                                         num_workers=cfg.workers, collate_fn=collate_tuples,
                                         pin_memory=device.type == "cuda")
    set_train_mode(net, cfg.freeze_bn)
    optimizer.zero_grad(set_to_none=True)
    total, used, pending = 0.0, 0, 0
    failures: List[str] = []
    with tqdm(total=len(ds), desc=f"epoch {epoch}", unit="tuple", disable=not progress, leave=False) as bar:
        for x, mask, b, bad in loader:
            failures += bad
            bar.update(b + len(bad))
            if b == 0:
                continue
            x = x.to(device, non_blocking=True)
            mask = mask.to(device) if mask is not None else None
            try:
                d = describe_training_batch(net, x, mask).view(b, S, -1)
                loss = loss_fn(d)
                (loss / cfg.accumulate).backward()
            except torch.cuda.OutOfMemoryError:
                optimizer.zero_grad(set_to_none=True)
                torch.cuda.empty_cache()
                raise _oom_hint(cfg, b * S, image_size) from None
            total += float(loss.detach()) * b
            used += b
            pending += 1
            if pending == cfg.accumulate:
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                pending = 0
            bar.set_postfix(loss=f"{total / used:.4f}")
    if pending:
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    net.eval()
    return (total / used if used else float("nan")), used, failures


def _train_epoch_ranks(net: nn.Module, pairs: PairSet, tuples: Tuples, optimizer: torch.optim.Optimizer,
                       loss_fn: nn.Module, cfg: TrainConfig, epoch: int, *, image_size: int,
                       device: torch.device, progress: bool, dist: DistContext,
                       model: nn.Module) -> Tuple[float, int, List[str]]:
    """:func:`train_epoch` on one rank of several. Every rank runs the same number of forwards (a
    rank whose tuples of a step were all unreadable runs a zero-weighted forward on a blank image),
    and scales its mean loss by ``world_size · b_r / B`` (``b_r`` its readable tuples, ``B`` the
    step's over all ranks), so the averaged gradient is that of the step's mean loss."""
    S = tuples.size
    ds = TupleDataset(pairs.paths, tuples.images(), image_size, net.backbone.mean, net.backbone.std,
                      square=cfg.resize == "square")
    g = torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch))
    sampler = RankBatches(len(ds), cfg.batch, dist, g)
    loader = torch.utils.data.DataLoader(ds, batch_sampler=sampler, generator=g, num_workers=cfg.workers,
                                         collate_fn=collate_tuples, pin_memory=device.type == "cuda")
    set_train_mode(model, cfg.freeze_bn)
    optimizer.zero_grad(set_to_none=True)
    total, used, pending = 0.0, 0, 0
    failures: List[str] = []
    last = len(sampler) - 1
    with tqdm(total=sum(sampler.sizes), desc=f"epoch {epoch}", unit="tuple", disable=not (progress and dist.is_main),
              leave=False) as bar:
        for k, (x, mask, b, bad) in enumerate(loader):
            failures += bad
            (step_total,) = dist.all_sum([b])
            bar.update(sampler.sizes[k])
            if step_total == 0:
                continue
            blank = b == 0
            if blank:
                x, mask = torch.zeros(S, 3, 64, 64), None
            x = x.to(device, non_blocking=True)
            mask = mask.to(device) if mask is not None else None
            sync = pending + 1 == cfg.accumulate or k == last
            try:
                with nullcontext() if sync else model.no_sync():
                    d = model(x, mask).view(max(b, 1), S, -1)
                    loss = loss_fn(d)
                    scale = 0.0 if blank else dist.world_size * b / step_total
                    (loss * (scale / cfg.accumulate)).backward()
            except torch.cuda.OutOfMemoryError:
                optimizer.zero_grad(set_to_none=True)
                torch.cuda.empty_cache()
                raise _oom_hint(cfg, b * S, image_size) from None
            if not blank:
                total += float(loss.detach()) * b
                used += b
            pending += 1
            if sync:
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                pending = 0
            if used:
                bar.set_postfix(loss=f"{total / used:.4f}")
    if pending:  # the last step was skipped (nothing readable): average what accumulated unsynced
        dist.average_gradients(net)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    net.eval()
    total, used_all = dist.all_sum([total, used])
    failures = [f for fs in dist.all_gather_objects(failures) for f in fs]
    return (total / used_all if used_all else float("nan")), int(used_all), failures
