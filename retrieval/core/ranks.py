"""Which process of a parallel job this is: rank, world size and local rank from the launcher.

The one description of a launch (:class:`Ranks`) and the one reader of the launcher's environment
(:func:`current_ranks`), for every tool: sharded extraction, index building and training
(:mod:`retrieval.training.distributed` starts its process group from them).
``torchrun`` sets ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK``; Slurm's ``srun`` sets
``SLURM_PROCID`` / ``SLURM_NTASKS`` / ``SLURM_LOCALID``; a plain ``python`` run is rank 0 of 1.
Each rank works on the GPU of its local rank (:func:`rank_device`).
Work that needs no communication (sharded extraction) only reads these; work that must wait for
the other ranks calls :func:`barrier`, which starts a ``torch.distributed`` process group (gloo)
on first use, from ``MASTER_ADDR`` / ``MASTER_PORT`` (set by torchrun; under srun, as exported in
the sbatch script, else the launch node and port 29500: :func:`rendezvous_defaults`).
torch is imported by the functions that use it, not at the top: a build from descriptor shards
(:mod:`retrieval.search.build`) reads its ranks without loading torch.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping, Optional

from retrieval.core.errors import ConfigError, ResourceError


@dataclass(frozen=True)
class Ranks:
    """rank: this process, 0 .. world-1; world: processes in the job; local_rank: on this node;
    launcher: ``"single"``, ``"torchrun"`` or ``"slurm"``."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    launcher: str = "single"

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes shared files and prints."""
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        """More than one process."""
        return self.world > 1


def _int(env: Mapping[str, str], key: str) -> int:
    try:
        return int(env[key])
    except ValueError:
        raise ConfigError(f"environment variable {key}={env[key]!r} is not an integer") from None


def current_ranks(env: Optional[Mapping[str, str]] = None) -> Ranks:
    """The ranks of this process (``env``, default ``os.environ``): from ``RANK`` / ``WORLD_SIZE`` /
    ``LOCAL_RANK`` (torchrun), else ``SLURM_PROCID`` / ``SLURM_NTASKS`` / ``SLURM_LOCALID`` (srun),
    else rank 0 of 1 (``launcher="single"``). A missing local rank is 0.

    Raises:
        ConfigError: a value that is not an integer, or a rank outside ``[0, world)``.
    """
    env = os.environ if env is None else env
    if "RANK" in env and "WORLD_SIZE" in env:
        r = Ranks(_int(env, "RANK"), _int(env, "WORLD_SIZE"), _int(env, "LOCAL_RANK") if "LOCAL_RANK" in env else 0,
                  "torchrun")
    elif "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
        r = Ranks(_int(env, "SLURM_PROCID"), _int(env, "SLURM_NTASKS"),
                  _int(env, "SLURM_LOCALID") if "SLURM_LOCALID" in env else 0, "slurm")
    else:
        return Ranks()
    if not 0 <= r.rank < r.world:
        raise ConfigError(f"rank {r.rank} is outside a world of {r.world} processes ({r.launcher})")
    return r


def rank_device(device: Optional[str], ranks: Ranks) -> Optional[str]:
    """The device of this rank (``--device`` / ``train.device``): with several processes, ``cuda``
    (asked for, or the default ``None`` on a GPU machine) becomes ``cuda:<local rank>``; anything
    else (``cpu``, ``cuda:N``, ``None`` without CUDA) is kept, as is every device of one process.
    Callers that need a ``torch.device`` convert it (``resolve_device`` or ``torch.device``).

    Raises:
        ResourceError: several processes on ``cuda`` and no GPU for this local rank (more processes
            on the node than GPUs).
    """
    if ranks.world == 1:
        return device
    import torch  # here, not at the top (module doc)

    if device == "cuda" or (device is None and torch.cuda.is_available()):
        n = torch.cuda.device_count()
        if n and ranks.local_rank >= n:
            raise ResourceError(f"local rank {ranks.local_rank} has no GPU: this node has {n}; "
                                "start at most that many processes per node")
        return f"cuda:{ranks.local_rank}"
    return device


def rendezvous_defaults(ranks: Ranks) -> None:
    """Where the ranks meet (``MASTER_ADDR`` / ``MASTER_PORT``): as exported; under srun without
    them, the node ``srun`` was launched from (``SLURM_LAUNCH_NODE_IPADDR``) and port 29500
    (set in ``os.environ``). Torchrun always sets them; ranks from ``RANK`` / ``WORLD_SIZE``
    without them are a ConfigError."""
    if ranks.launcher == "slurm":
        os.environ.setdefault("MASTER_ADDR", os.environ.get("SLURM_LAUNCH_NODE_IPADDR", "127.0.0.1"))
        os.environ.setdefault("MASTER_PORT", "29500")
    elif "MASTER_ADDR" not in os.environ or "MASTER_PORT" not in os.environ:
        raise ConfigError("RANK/WORLD_SIZE set without MASTER_ADDR/MASTER_PORT: launch with torchrun or srun")


def barrier(ranks: Ranks) -> None:
    """Wait for every rank (no-op for one process). Starts a gloo process group on first use."""
    if ranks.world == 1:
        return
    import torch.distributed as dist  # here, not at the top (module doc)

    if not dist.is_initialized():
        rendezvous_defaults(ranks)
        dist.init_process_group("gloo", rank=ranks.rank, world_size=ranks.world)
    dist.barrier()


def finish(ranks: Ranks) -> None:
    """Leave the process group, if :func:`barrier` started one."""
    if ranks.world == 1:
        return
    import torch.distributed as dist  # here, not at the top (module doc)

    if dist.is_initialized():
        dist.destroy_process_group()
