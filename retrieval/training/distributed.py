"""Distributed training: the process group, each rank's device, and the few collectives training needs.

A run is distributed when the launcher says so in the environment (read by
:func:`retrieval.core.ranks.current_ranks`, the one reader for every tool):

* ``torchrun --nproc_per_node N ...`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``
  and ``MASTER_PORT``;
* Slurm's ``srun`` sets ``SLURM_PROCID``, ``SLURM_NTASKS`` and ``SLURM_LOCALID`` (read when
  ``RANK``/``WORLD_SIZE`` are absent); ``MASTER_ADDR`` and ``MASTER_PORT`` come from the sbatch
  script, else the node ``srun`` was launched from (``SLURM_LAUNCH_NODE_IPADDR``) and port 29500.

:func:`distributed_session` starts the process group for such a run (NCCL when the ranks use GPUs,
gloo on CPU), one GPU per local rank (``cuda:LOCAL_RANK``), and ends it; with one process it
starts nothing and every helper of :class:`DistContext` is the identity, so single-process
training runs exactly the code it ran before. :func:`current` is the context of whatever group
is running (a caller that started its own group with ``torch.distributed.init_process_group``
gets the same behaviour).

What training does with it (:mod:`retrieval.training.engine`, :mod:`retrieval.training.epoch`,
:mod:`retrieval.training.mining`): every rank draws the same queries and pool from the shared seed;
the images to describe (mining pool, validation set) are cut into contiguous parts, one per rank,
described and all-gathered (:func:`extract_in_parts`), so every rank mines from the whole pool and
mines the same tuples; the tuples of a step are split across the ranks and the network is wrapped
in ``DistributedDataParallel``; rank 0 alone writes checkpoints and the log.
"""
from __future__ import annotations

import datetime
import inspect
import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, List, Optional, Sequence, Union

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from retrieval.core.backbone import resolve_device
from retrieval.core.errors import ConfigError
from retrieval.core.ranks import Ranks, current_ranks, rank_device, rendezvous_defaults
from retrieval.search.extract import Extracted, extract_descriptors

#: Minutes a rank waits in a collective before the run fails (``$GEMSEG_DIST_TIMEOUT_MIN``): rank 0
#: alone learns the final whitening while the others wait.
DEFAULT_TIMEOUT_MIN = 60


def training_device(device: Optional[str], ranks: Ranks) -> torch.device:
    """The device of a training rank: :func:`~retrieval.core.ranks.rank_device` as a checked
    ``torch.device`` (``cuda:LOCAL_RANK`` for ``None`` on a GPU machine or ``cuda`` under several
    processes; the CPU for ``cpu``, or ``None`` without CUDA).

    Raises:
        ConfigError: ``cuda:N`` under several processes (each rank takes the GPU of its local rank;
            set ``device: cuda``).
        ResourceError: CUDA asked for without CUDA, or fewer GPUs than local ranks.
    """
    spec = None if device is None else str(device)
    if ranks.parallel and spec is not None and spec.startswith("cuda:"):
        raise ConfigError(f"train.device {spec}: under torchrun/srun each rank uses cuda:LOCAL_RANK; "
                          "set device: cuda (or leave it unset)")
    return resolve_device(rank_device(spec, ranks))


@dataclass(frozen=True)
class DistContext(Ranks):
    """This process's place in a run: its :class:`~retrieval.core.ranks.Ranks` (``rank``,
    ``world``, ``local_rank``, ``launcher``, ``is_main``, ``parallel``) and its ``device``, with the
    collectives training needs.

    With one process every helper is the identity and nothing is communicated.
    """

    device: torch.device = torch.device("cpu")

    @classmethod
    def of(cls, ranks: Ranks, device: torch.device) -> "DistContext":
        """The context of ``ranks`` working on ``device``."""
        return cls(ranks.rank, ranks.world, ranks.local_rank, ranks.launcher, device)

    @property
    def world_size(self) -> int:
        """``world``, by the name ``torch.distributed`` gives it."""
        return self.world

    @property
    def _comm_device(self) -> torch.device:
        """Where collective tensors live: the GPU under NCCL, the CPU under gloo."""
        return self.device if dist.get_backend() == "nccl" else torch.device("cpu")

    def part(self, n: int) -> slice:
        """This rank's contiguous part of ``n`` items (``np.array_split`` bounds: parts differ by at
        most one item; the parts in rank order are the items in order)."""
        q, r = divmod(n, self.world_size)
        start = self.rank * q + min(self.rank, r)
        return slice(start, start + q + (1 if self.rank < r else 0))

    def barrier(self) -> None:
        """Wait for every rank."""
        if self.parallel:
            dist.barrier()

    def all_gather_rows(self, x: np.ndarray) -> np.ndarray:
        """Every rank's ``x`` (``(n_r, ...)``, same trailing shape and dtype on every rank, ``n_r``
        may differ) concatenated in rank order: ``(Σ n_r, ...)``."""
        if not self.parallel:
            return x
        dev = self._comm_device
        t = torch.from_numpy(np.ascontiguousarray(x)).to(dev)
        n = torch.tensor([t.shape[0]], dtype=torch.int64, device=dev)
        sizes = [torch.zeros_like(n) for _ in range(self.world_size)]
        dist.all_gather(sizes, n)
        counts = [int(s) for s in sizes]
        padded = torch.zeros((max(counts),) + tuple(t.shape[1:]), dtype=t.dtype, device=dev)
        padded[: t.shape[0]] = t
        bufs = [torch.empty_like(padded) for _ in range(self.world_size)]
        dist.all_gather(bufs, padded)
        return np.concatenate([b[:c].cpu().numpy() for b, c in zip(bufs, counts)], axis=0)

    def all_gather_objects(self, obj: Any) -> List[Any]:
        """Every rank's picklable ``obj``, in rank order."""
        if not self.parallel:
            return [obj]
        out: List[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def all_sum(self, values: Sequence[float]) -> List[float]:
        """Element-wise sums over the ranks (float64)."""
        if not self.parallel:
            return [float(v) for v in values]
        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self._comm_device)
        dist.all_reduce(t)
        return t.cpu().tolist()

    def average_gradients(self, module: nn.Module) -> None:
        """Average the gradients of ``module`` over the ranks in place (what DDP does in its backward;
        for gradients accumulated outside it)."""
        if not self.parallel:
            return
        for p in module.parameters():
            if p.grad is not None:
                dist.all_reduce(p.grad)
                p.grad.div_(self.world_size)

    def wrap(self, module: nn.Module, *, broadcast_buffers: bool = False) -> nn.Module:
        """``module`` in ``DistributedDataParallel`` (one device per process), or ``module`` itself
        with one process. The constructor broadcasts rank 0's weights (and buffers) to every rank;
        ``broadcast_buffers``: rank 0's buffers again before every forward (BatchNorm statistics
        that train)."""
        if not self.parallel:
            return module
        ids = [self.device.index] if self.device.type == "cuda" else None
        ddp = nn.parallel.DistributedDataParallel
        key = ("forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(ddp.__init__).parameters
               else "broadcast_buffers")  # renamed in torch 2.14
        return ddp(module, device_ids=ids, **{key: broadcast_buffers})

    @contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the block first (e.g. generating a data set on a shared disk), then the others."""
        if not self.is_main:
            self.barrier()
        try:
            yield
        finally:
            if self.is_main:
                self.barrier()


def current(device: Optional[Union[str, torch.device]] = None) -> DistContext:
    """The context of the running process group (rank and world size of the group, local rank from
    the launcher, :func:`training_device`), or a single-process context on ``device``
    (:func:`~retrieval.core.backbone.resolve_device`) when no group is running."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        launch = current_ranks()
        ranks = Ranks(dist.get_rank(), dist.get_world_size(), launch.local_rank, launch.launcher)
        return DistContext.of(ranks, training_device(None if device is None else str(device), ranks))
    return DistContext(device=resolve_device(device))


@contextmanager
def distributed_session(device: Optional[str] = None) -> Iterator[DistContext]:
    """The run's :class:`DistContext`: starts the process group when the launcher asked for more
    than one process (:func:`~retrieval.core.ranks.current_ranks`) and ends it on exit; one
    process: nothing started.

    Args:
        device: ``train.device`` (``None`` | ``cpu`` | ``cuda``), see :func:`training_device`.
    """
    ranks = current_ranks()
    if not ranks.parallel or dist.is_initialized():
        yield current(device)
        return
    dev = training_device(device, ranks)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    rendezvous_defaults(ranks)
    minutes = float(os.environ.get("GEMSEG_DIST_TIMEOUT_MIN", DEFAULT_TIMEOUT_MIN))
    dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", rank=ranks.rank, world_size=ranks.world,
                            timeout=datetime.timedelta(minutes=minutes))
    try:
        yield DistContext.of(ranks, dev)
    finally:
        dist.destroy_process_group()


def extract_in_parts(net: nn.Module, paths: Sequence[Any], ctx: DistContext, **kwargs: Any) -> Extracted:
    """:func:`~retrieval.search.extract.extract_descriptors` of ``paths`` with each rank describing
    its part (:meth:`DistContext.part`) and every rank receiving all of them: the same
    :class:`~retrieval.search.extract.Extracted` (descriptors ``(N, D)`` float32 in the order of
    ``paths``, failures, the slowest rank's seconds) on every rank. One process: a plain call."""
    if not ctx.parallel:
        return extract_descriptors(net, paths, **kwargs)
    kwargs["progress"] = bool(kwargs.get("progress", True)) and ctx.is_main
    ex = extract_descriptors(net, list(paths)[ctx.part(len(paths))], **kwargs)
    X = ctx.all_gather_rows(ex.descriptors.astype(np.float32))
    parts = ctx.all_gather_objects((ex.paths, ex.failures, ex.seconds))
    return Extracted(X, [p for ps, _, _ in parts for p in ps], [f for _, fs, _ in parts for f in fs],
                     max(s for _, _, s in parts))
