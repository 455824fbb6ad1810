"""Sharded, resumable extraction: a source of any size → a folder of descriptor shards.

The source's paths are streamed in a fixed order and cut into shards of ``shard_size`` consecutive
paths; shard ``k`` belongs to rank ``k mod world``, so each rank of ``torchrun`` / ``srun`` (or the
one process of a plain run) describes its shards with no communication, holding one shard's paths
at a time. A shard is written atomically when done (:class:`~retrieval.search.shards.ShardDir`), so
a killed job re-run with the same arguments skips the complete shards. A shard's descriptors depend
on its images only (batches never pad; batched equals one-at-a-time to 1e-5), so they are the same
whatever the number of ranks.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

import numpy as np

from retrieval.core.config import to_dict
from retrieval.core.errors import DataError
from retrieval.core.image_listing import iter_image_paths
from retrieval.core.ranks import Ranks, current_ranks, rank_device
from retrieval.model.network import DescriptorNet
from retrieval.search.extract import extract_descriptors
from retrieval.search.shards import ShardDir

PathLike = Union[str, Path]
#: test-only hook: a rank exits (code 75, as if killed) after writing this many shards
STOP_AFTER_ENV = "GEMSEG_TEST_STOP_AFTER_SHARDS"


@dataclass
class ExtractReport:
    """What :func:`extract_shards` did on this rank."""

    out: str
    rank: int
    world: int
    shards_written: int
    shards_skipped: int
    images: int
    skipped_files: int
    seconds: float
    listed: int
    shards: int
    complete: bool
    fingerprint: str

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> Dict[str, Any]:
        return dict(asdict(self), images_per_second=round(self.images_per_second, 2), seconds=round(self.seconds, 3))


def _my_shards(source: PathLike, shard_size: int, ranks: Ranks,
               counter: List[int]) -> Iterator[Tuple[int, List[str]]]:
    """``(shard number, its paths)`` for this rank's shards, streaming ``source``; ``counter[0]``
    ends as the number of paths listed."""
    k, cur = 0, []
    n = 0
    for n, p in enumerate(iter_image_paths(source), 1):
        k_p = (n - 1) // shard_size
        if k_p != k:
            if cur:
                yield k, cur
            k, cur = k_p, []
        if k_p % ranks.world == ranks.rank:
            cur.append(os.path.realpath(p))  # as index_images resolves them: one path per file
    counter[0] = n
    if cur:
        yield k, cur


def _stat(p: str) -> Optional[Tuple[int, int]]:
    try:
        st = os.stat(p)
        return int(st.st_size), int(st.st_mtime_ns)
    except OSError:
        return None


def extract_shards(net: DescriptorNet, source: PathLike, out: PathLike, *, shard_size: int = 10000,
                   batch_size: int = 8, workers: Optional[int] = None, device: Optional[str] = None,
                   progress: bool = True, ranks: Optional[Ranks] = None) -> ExtractReport:
    """Describe this rank's shards of ``source`` (folder or ``.txt`` list) into the folder ``out``.

    Complete shards are skipped (after checking that they hold the same paths); another model's
    folder is refused. When the listing reaches the end, the manifest records the number of images
    and shards, and ``complete`` says whether every shard (of every rank) is now on disk.
    """
    if shard_size < 1:
        raise DataError(f"--shard-size must be ≥ 1, got {shard_size}")
    t0 = time.perf_counter()
    ranks = ranks or current_ranks()
    device = rank_device(device, ranks)
    sd = ShardDir(out)
    fp = net.fingerprint()
    sd.open_for(to_dict(net.config), fp, net.dim, shard_size, str(source))
    stop_after = int(os.environ.get(STOP_AFTER_ENV, "0") or 0)
    written = skipped_shards = images = bad = 0
    counter = [0]
    for k, paths in _my_shards(source, shard_size, ranks, counter):
        if sd.is_complete(k):
            old = sd.read_shard(k)
            if sorted(old.paths + [p for p, _ in old.skipped]) != sorted(paths):
                raise DataError(f"shard {k} of {out} was made from other files than the source lists now; "
                                f"use a new --out for a changed source")
            skipped_shards += 1
            continue
        stats = {p: _stat(p) for p in paths}
        ex = extract_descriptors(net, paths, batch_size=batch_size, workers=workers, device=device,
                                 progress=progress, desc=f"shard {k} (rank {ranks.rank})")
        st = np.array([stats[p] or (0, 0) for p in ex.paths], dtype=np.int64).reshape(-1, 2)
        sd.write_shard(k, ex.descriptors, ex.paths, st, ex.failures)
        written += 1
        images += len(ex.paths)
        bad += len(ex.failures)
        if stop_after and written >= stop_after:
            os._exit(75)
    listed = counter[0]
    n_shards = (listed + shard_size - 1) // shard_size
    m = sd.manifest()
    if m.get("images") != listed:
        sd.write_manifest(dict(m, images=listed, shards=n_shards))
    complete = all(sd.is_complete(k) for k in range(n_shards))
    return ExtractReport(str(out), ranks.rank, ranks.world, written, skipped_shards, images, bad,
                         time.perf_counter() - t0, listed, n_shards, complete, fp)
