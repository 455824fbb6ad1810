"""Distributed training: the process group, each rank's device, and the few collectives training needs.

A run is distributed when the launcher says so in the environment:

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
from typing import Any, Iterator, List, Mapping, Optional, Sequence, Union

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from retrieval.core.backbone import resolve_device
from retrieval.core.errors import ConfigError, ResourceError
from retrieval.core.ranks import current_ranks, rendezvous_defaults
from retrieval.search.extract import Extracted, extract_descriptors

#: Minutes a rank waits in a collective before the run fails (``$GEMSEG_DIST_TIMEOUT_MIN``): rank 0
#: alone learns the final whitening while the others wait.
DEFAULT_TIMEOUT_MIN = 60


@dataclass(frozen=True)
class LaunchEnv:
    """What the launcher put in the environment: ``rank``, ``world_size``, ``local_rank`` and
    ``launcher`` (``torchrun`` | ``slurm`` | ``none``)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    launcher: str = "none"


def launch_env(environ: Optional[Mapping[str, str]] = None) -> LaunchEnv:
    """The ranks of this process from ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` (torchrun), else
    ``SLURM_PROCID``/``SLURM_NTASKS``/``SLURM_LOCALID`` (srun), else a single process.

    Raises:
        ConfigError: a rank outside ``[0, world_size)`` or a non-integer value.
    """
    r = current_ranks(environ)
    return LaunchEnv(r.rank, r.world, r.local_rank, r.launcher if r.world > 1 else "none")


def rank_device(device: Optional[str], local_rank: int) -> torch.device:
    """The device of a rank: ``cuda:LOCAL_RANK`` for ``None`` (when CUDA is available) or ``cuda``,
    the CPU for ``cpu`` (or ``None`` without CUDA).

    Raises:
        ConfigError: ``cuda:N`` (each rank takes the GPU of its local rank; set ``device: cuda``).
        ResourceError: ``cuda`` without CUDA, or fewer GPUs than local ranks.
    """
    spec = None if device is None else str(device)
    if spec is not None and spec.startswith("cuda:"):
        raise ConfigError(f"train.device {spec}: under torchrun/srun each rank uses cuda:LOCAL_RANK; "
                          "set device: cuda (or leave it unset)")
    if spec == "cpu" or (spec is None and not torch.cuda.is_available()):
        return torch.device("cpu")
    if spec not in (None, "cuda"):
        return torch.device(spec)
    if not torch.cuda.is_available():
        raise ResourceError("train.device cuda: no CUDA device on this node")
    if local_rank >= torch.cuda.device_count():
        raise ResourceError(f"local rank {local_rank} has no GPU: this node has {torch.cuda.device_count()}; "
                            "start at most that many processes per node")
    return torch.device("cuda", local_rank)


@dataclass
class DistContext:
    """This process's place in a run: ``rank``, ``world_size``, ``local_rank``, ``device``.

    With ``world_size == 1`` every helper is the identity and nothing is communicated.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def parallel(self) -> bool:
        """More than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes files and logs."""
        return self.rank == 0

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
    """The context of the running process group (rank, world size, ``cuda:LOCAL_RANK`` or CPU), or a
    single-process context on ``device`` (:func:`~retrieval.core.backbone.resolve_device`) when no
    group is running."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        local = int(os.environ.get("LOCAL_RANK", os.environ.get("SLURM_LOCALID", "0")))
        return DistContext(dist.get_rank(), dist.get_world_size(), local,
                           rank_device(None if device is None else str(device), local))
    return DistContext(device=resolve_device(device))


@contextmanager
def distributed_session(device: Optional[str] = None) -> Iterator[DistContext]:
    """The run's :class:`DistContext`: starts the process group when the launcher asked for more
    than one process (:func:`launch_env`) and ends it on exit; one process: nothing started.

    Args:
        device: ``train.device`` (``None`` | ``cpu`` | ``cuda``), see :func:`rank_device`.
    """
    env = launch_env()
    if env.world_size == 1 or dist.is_initialized():
        yield current(device)
        return
    dev = rank_device(device, env.local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    rendezvous_defaults(current_ranks())
    minutes = float(os.environ.get("GEMSEG_DIST_TIMEOUT_MIN", DEFAULT_TIMEOUT_MIN))
    dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", rank=env.rank, world_size=env.world_size,
                            timeout=datetime.timedelta(minutes=minutes))
    try:
        yield DistContext(env.rank, env.world_size, env.local_rank, dev)
    finally:
        dist.destroy_process_group()


def is_main_process() -> bool:
    """Whether this process is rank 0 of its launch (or not launched in parallel): the one that prints."""
    return launch_env().rank == 0


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
