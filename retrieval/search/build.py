"""An index folder built from descriptor shards, within a memory budget, optionally on disk.

1. The factory: given, or ``auto`` (:func:`retrieval.search.factory.auto_factory` from N, D and
   the budget).
2. Training: rank 0 trains an empty index on a seeded sample drawn across all shards (at most a
   quarter of the budget) and writes it to a work folder beside the output.
3. Adding: each rank adds its shards (shard ``k`` to rank ``k mod world``; every shard to rank 0
   for indexes that are not IVF, which cannot be merged) into copies of the trained index, with
   the shard's global ids; a copy is written out as a *part* whenever its codes reach an eighth
   of the budget, so memory stays bounded.
4. Merging (rank 0): the parts' inverted lists are merged into one segment, in memory or, with
   ``on_disk``, into an on-disk lists file memory-mapped at search time
   (:mod:`retrieval.search.ondisk`); the descriptors are copied shard by shard into the index's
   growable descriptor file and the paths into its SQLite store. The folder is written to a
   temporary folder and renamed.

Under ``torchrun`` / ``srun`` every rank runs this function; ranks wait for each other with
:func:`retrieval.core.ranks.barrier`, and the work folder must be on a file system all ranks see.
"""
from __future__ import annotations

import shutil
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Union

import faiss
import numpy as np
from tqdm import tqdm

from retrieval.core.errors import ConfigError, DataError
from retrieval.core.ranks import Ranks, barrier, current_ranks
from retrieval.search.factory import (
    auto_factory,
    is_auto,
    is_exact,
    ivf_of,
    make_faiss_index,
    n_lists,
    parse_bytes,
    resolve_factory,
    train_size,
)
from retrieval.search.index_config import IndexConfig
from retrieval.search.index_folder import TRAINED, IndexInfo, check_index_target, read_segment, write_faiss, write_index
from retrieval.search.ivf_training import train_index
from retrieval.search.ondisk import merge_parts
from retrieval.search.shards import ShardDir

PathLike = Union[str, Path]


@dataclass
class BuildReport:
    """What :func:`build_index_from_shards` built (returned on every rank; rank 0 wrote it)."""

    out: str
    factory: str
    count: int
    dim: int
    shards: int
    on_disk: bool
    train_seconds: float
    add_seconds: float
    seconds: float
    bytes_per_vector: Optional[float]
    fingerprint: str
    rank: int = 0
    world: int = 1

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)


def _sample(sd: ShardDir, counts: List[int], n: int, seed: int) -> np.ndarray:
    """``n`` rows drawn without replacement across all shards: (n, D) float32."""
    total = sum(counts)
    pick = np.sort(np.random.default_rng(seed).choice(total, n, replace=False)) if n < total else np.arange(total)
    starts = np.cumsum([0] + counts)
    out = []
    for k in range(len(counts)):
        a, b = np.searchsorted(pick, [starts[k], starts[k + 1]])
        if b > a:
            out.append(np.asarray(sd.read_shard(k).descriptors[pick[a:b] - starts[k]]))
    return np.ascontiguousarray(np.concatenate(out), dtype=np.float32)


def _add_parts(sd: ShardDir, shards: List[int], starts: List[int], trained: Any, work: Path, rank: int,
               flush_bytes: int, progress: bool) -> None:
    """Add ``shards`` into copies of ``trained``, written to ``work/part-<rank>-<j>.index``."""
    ivf = ivf_of(trained) is not None
    part, j = faiss.clone_index(trained), 0
    per_vector = (ivf_of(trained).code_size + 8) if ivf else 4 * trained.d
    for k in tqdm(shards, desc=f"add (rank {rank})", unit="shard", disable=not progress, leave=False):
        X = np.ascontiguousarray(sd.read_shard(k).descriptors, dtype=np.float32)
        if ivf:
            part.add_with_ids(X, np.arange(starts[k], starts[k] + X.shape[0], dtype=np.int64))
        else:
            part.add(X)
        if ivf and part.ntotal * per_vector >= flush_bytes:
            write_faiss(part, work / f"part-{rank:04d}-{j:04d}.index")
            part, j = faiss.clone_index(trained), j + 1
    if part.ntotal or j == 0:
        write_faiss(part, work / f"part-{rank:04d}-{j:04d}.index")


def _rows(sd: ShardDir, n_shards: int) -> Iterator[np.ndarray]:
    for k in range(n_shards):
        yield np.asarray(sd.read_shard(k).descriptors)


def build_index_from_shards(descriptors: PathLike, out: PathLike, *, factory: Optional[str] = "auto",
                            memory_budget: Union[str, int] = "4G", on_disk: bool = False,
                            index_config: Optional[IndexConfig] = None, progress: bool = True,
                            ranks: Optional[Ranks] = None) -> BuildReport:
    """Build the index folder ``out`` from the descriptor folder ``descriptors`` (see the module
    doc). ``factory``: a faiss factory string, template, alias or ``auto``."""
    t0 = time.perf_counter()
    ranks = ranks or current_ranks()
    sd = ShardDir(descriptors)
    man = sd.manifest()
    n_shards = sd.check_complete()
    out = Path(out)
    check_index_target(out)
    counts = [sd.shard_rows(k) for k in range(n_shards)]
    starts = [int(s) for s in np.cumsum([0] + counts)]
    N, D = starts[-1], int(man["dim"])
    if N == 0:
        raise DataError(f"{descriptors} holds no descriptors (every image was skipped)")
    budget = parse_bytes(memory_budget)
    cfg = index_config or IndexConfig()
    wanted = factory or cfg.factory
    fac = auto_factory(N, D, budget, on_disk) if is_auto(wanted) else resolve_factory(wanted, N, D)
    if is_exact(fac) and on_disk:
        raise ConfigError(f"--on-disk needs an IVF factory, not '{fac}' (exact search reads the descriptors anyway)")
    cfg.factory = fac
    if cfg.nprobe is None and "IVF" in fac:
        cfg.nprobe = max(1, min(n_lists(N), int(round(np.sqrt(n_lists(N))))))
    work = out.parent / f".{out.name}.build"
    trained, t_train, t_add = None, 0.0, 0.0
    if not is_exact(fac):
        trained = make_faiss_index(fac, D)  # every rank checks, so that none waits for a failed one
        if on_disk and ivf_of(trained) is None:
            raise ConfigError(f"--on-disk needs an IVF factory (IVF...,Flat / IVF...,PQ...), not '{fac}'")
        if ranks.is_main:
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            if not trained.is_trained:
                n = train_size(trained, N, cfg.train_size, budget, D)
                t = time.perf_counter()
                train_index(trained, _sample(sd, counts, n, cfg.seed), seed=cfg.seed, progress=progress)
                t_train = time.perf_counter() - t
            write_faiss(trained, work / TRAINED)
        barrier(ranks)
        trained = read_segment(work / TRAINED)
        t = time.perf_counter()
        mine = [k for k in range(n_shards) if k % ranks.world == ranks.rank] if ivf_of(trained) is not None else \
            (list(range(n_shards)) if ranks.is_main else [])
        if mine:
            _add_parts(sd, mine, starts, trained, work, ranks.rank, max(1 << 20, budget // 8), progress)
        t_add = time.perf_counter() - t
        barrier(ranks)
    bpv = None
    if ranks.is_main:
        segment: Any = None
        if trained is not None:  # the parts' lists merged into one segment (IVF), or the one part
            parts = sorted(work.glob("part-*.index"))
            segment = partial(merge_parts, read_segment(work / TRAINED), parts) if ivf_of(trained) is not None \
                else read_segment(parts[0])
        info = IndexInfo(D, fac, man.get("fingerprint"), man.get("model") or {}, None, cfg, on_disk)
        bpv = write_index(out, info, descriptors=_rows(sd, n_shards), paths=(p for s in sd.iter_shards() for p in s.paths),
                          stats=(tuple(int(v) for v in row) for s in sd.iter_shards() for row in s.stats),
                          segment=segment, ondisk=on_disk, trained=trained)["bytes_per_vector"]
        shutil.rmtree(work, ignore_errors=True)
    barrier(ranks)
    return BuildReport(str(out), fac, N, D, n_shards, on_disk, t_train, t_add, time.perf_counter() - t0,
                       bpv if bpv is not None else (4.0 * D if is_exact(fac) else None),
                       str(man.get("fingerprint")), ranks.rank, ranks.world)
