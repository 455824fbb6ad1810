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
5. Tuning (rank 0, approximate indexes with a search knob, unless ``index.nprobe`` /
   ``index.ef_search`` is set or the target is 0): before the segment is written, recall@10 against
   exact search is measured on up to :data:`TUNE_QUERIES` held-out rows of the collection, and the
   cheapest ``efSearch`` (:data:`retrieval.search.tuning.EF_LADDER`) or ``nprobe``
   (:func:`retrieval.search.tuning.nprobe_ladder`) reaching the target recall
   (default :data:`DEFAULT_TARGET_RECALL`) is stored in ``meta.json``'s ``index_config``; the
   report (:class:`Tuning`) says which recall it reached, on which queries.
   The queries must not be in the index as they are measured, or an HNSW graph finds their
   neighbours through their own links (on 10⁵ clustered rows, recall 0.968 at efSearch 16 for
   rows in the graph with their own id taken out, 0.943 for fresh queries): for HNSW the last
   rows (by id) are held out of the graph and added after the tuning; IVF search of a row that is
   in its list is within ±0.01 of a fresh query's (±0.003 from nprobe 16 on), so for IVF a seeded
   random sample of rows is searched with its own id taken out of both lists. Indexes whose codes
   are lossless (``HNSW…Flat``, ``IVF…,Flat``) are stored without exact re-ranking (it changes no
   order there; it only asks for more candidates, which the tuned knob does more cheaply). The
   tuning's cost (an exact top-10 of the queries against the collection, then one search of them
   per ladder step, stopping at the first that reaches) is part of the build's time.

Under ``torchrun`` / ``srun`` every rank runs this function; ranks wait for each other with
:func:`retrieval.core.ranks.barrier`, and the work folder must be on a file system all ranks see.
"""
from __future__ import annotations

import shutil
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Union

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
    lossless_codes,
    make_faiss_index,
    n_lists,
    parse_bytes,
    resolve_factory,
    search_knob,
    train_size,
)
from retrieval.search.index_config import IndexConfig
from retrieval.search.index_folder import TRAINED, IndexInfo, check_index_target, read_segment, write_faiss, write_index
from retrieval.search.ivf_training import train_index
from retrieval.search.ondisk import merge_parts
from retrieval.search.shards import ShardDir
from retrieval.search.topk import exact_knn, rerank_exact
from retrieval.search.tuning import EF_LADDER, knn_recall, nprobe_ladder, smallest_reaching, without_self

PathLike = Union[str, Path]
#: held-out rows the tuning searches (recall's standard error on 1000 queries is about 0.002)
TUNE_QUERIES = 1000
#: recall@10 a build tunes for when the caller sets none (``--target-recall``)
DEFAULT_TARGET_RECALL = 0.98
TUNE_K = 10


@dataclass
class Tuning:
    """What a build's recall tuning measured (module doc, step 5).

    knob: ``"ef_search"`` or ``"nprobe"``; value: the setting stored; recall: recall@10 of the
    held-out queries at ``value``; reached: ``recall ≥ target`` (else ``value`` is the dearest on
    the ladder); queries / held_out: how many rows, held out how; rerank: whether the measured
    (and stored) search re-ranks candidates exactly; ladder: ``[value, recall]`` as measured, cheap
    → dear; seconds: the tuning's wall time (exact top-10 included).
    """

    knob: str
    value: int
    recall: float
    target: float
    reached: bool
    queries: int
    held_out: str
    rerank: bool
    seconds: float
    ladder: List[Tuple[int, float]]

    def describe(self) -> str:
        """One line: ``efSearch 256 reaches recall@10 0.981 (target 0.98) on 1000 held-out rows``."""
        name = "efSearch" if self.knob == "ef_search" else "nprobe"
        verb = "reaches" if self.reached else "falls short of the target at"
        return (f"{name} {self.value} {verb} recall@10 {self.recall:.3f} (target {self.target:g}) on "
                f"{self.queries} held-out rows ({self.held_out}), tuned in {self.seconds:.1f}s")


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
    tuning: Optional[Tuning] = None

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)


def _sample(sd: ShardDir, counts: List[int], n: int, seed: int) -> np.ndarray:
    """``n`` rows drawn without replacement across all shards: (n, D) float32."""
    total = sum(counts)
    pick = np.sort(np.random.default_rng(seed).choice(total, n, replace=False)) if n < total else np.arange(total)
    return _gather(sd, [int(s) for s in np.cumsum([0] + counts)], pick)


def _add_parts(sd: ShardDir, shards: List[int], starts: List[int], trained: Any, work: Path, rank: int,
               flush_bytes: int, progress: bool, end: Optional[int] = None) -> None:
    """Add ``shards`` into copies of ``trained``, written to ``work/part-<rank>-<j>.index``;
    ``end`` (an index without ids, HNSW): rows from this id on are left out (held out for tuning)."""
    ivf = ivf_of(trained) is not None
    part, j = faiss.clone_index(trained), 0
    per_vector = (ivf_of(trained).code_size + 8) if ivf else 4 * trained.d
    for k in tqdm(shards, desc=f"add (rank {rank})", unit="shard", disable=not progress, leave=False):
        X = sd.read_shard(k).descriptors
        if end is not None:
            X = X[:max(0, end - starts[k])]
        X = np.ascontiguousarray(X, dtype=np.float32)
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


def _gather(sd: ShardDir, starts: List[int], ids: np.ndarray) -> np.ndarray:
    """The descriptors of the global ``ids`` ((n,) int64, any order, each in range): (n, D) float32."""
    ids = np.asarray(ids, np.int64).reshape(-1)
    out = np.empty((ids.size, int(sd.manifest()["dim"])), np.float32)
    shard_of = np.searchsorted(starts, ids, side="right") - 1
    for k in np.unique(shard_of):
        at = np.flatnonzero(shard_of == k)
        out[at] = sd.read_shard(int(k)).descriptors[ids[at] - starts[k]]
    return out


def _blocks(sd: ShardDir, starts: List[int], end: int) -> Iterator[Tuple[np.ndarray, int]]:
    """``(rows, id of the first)`` of every shard, the rows below id ``end`` only."""
    for k in range(len(starts) - 1):
        if starts[k] < end:
            yield sd.read_shard(k).descriptors[:end - starts[k]], starts[k]


def _search_as_stored(index: Any, Q: np.ndarray, k: int, candidates: int,
                      rows: Optional[Callable[[np.ndarray], np.ndarray]]) -> np.ndarray:
    """The top-``k`` ids (Q, k) int64 that :meth:`retrieval.search.index.ImageIndex.search` returns
    for (Q, D) float32 queries: ``candidates`` asked of faiss, re-ranked by their exact inner
    products with ``rows(ids)`` when re-ranking (``rows`` not ``None``)."""
    _, cand = index.search(Q, candidates)
    if rows is None:
        return cand[:, :k]
    return rerank_exact(Q, cand, rows, k)[1]


class _TunedSegment:
    """A :data:`~retrieval.search.index_folder.SegmentSource` that makes the segment with
    ``make(lists file)``, tunes its knob for ``target`` (module doc, step 5), records the setting
    in ``cfg`` (before :func:`~retrieval.search.index_folder.write_index` writes ``meta.json``)
    and, for HNSW, adds the held-out rows ``held`` (ids ``N - len(held)`` …) afterwards."""

    def __init__(self, make: Callable[[Optional[Path]], Any], knob: str, target: float, cfg: IndexConfig,
                 sd: ShardDir, starts: List[int], held: Optional[np.ndarray], sample: Optional[np.ndarray]) -> None:
        self.make, self.knob, self.target, self.cfg = make, knob, target, cfg
        self.sd, self.starts, self.held, self.sample = sd, starts, held, sample
        self.tuning: Optional[Tuning] = None

    def __call__(self, lists: Optional[Path]) -> Any:
        index = self.make(lists)
        t0 = time.perf_counter()
        N, k = self.starts[-1], TUNE_K
        rerank = not lossless_codes(index) if self.cfg.rerank is None else bool(self.cfg.rerank)
        rows = partial(_gather, self.sd, self.starts) if rerank else None
        if self.held is not None:  # HNSW: the last rows, not in the graph yet
            Q, own, end = self.held, None, N - self.held.shape[0]
            how = f"ids {end}–{N - 1}, added after"
        else:  # IVF: a seeded sample of rows, their own ids taken out
            own, end = self.sample, N
            Q = _gather(self.sd, self.starts, own)
            how = "a seeded sample, each row's own id taken out"
        extra = 0 if own is None else 1
        truth = exact_knn(Q, _blocks(self.sd, self.starts, end), k + extra)[1]
        truth = truth if own is None else without_self(truth, own, k)
        candidates = max(k, self.cfg.rerank_k) if rerank else k
        candidates = min(candidates + extra, index.ntotal)
        ladder = list(EF_LADDER) if self.knob == "ef_search" else nprobe_ladder(int(ivf_of(index).nlist))
        if self.knob == "ef_search" and candidates > ladder[0]:  # faiss's beam is max(efSearch, k)
            ladder = [candidates] + [v for v in ladder if v > candidates]
        space = faiss.ParameterSpace()
        name = "efSearch" if self.knob == "ef_search" else "nprobe"

        def recall_of(v: int) -> float:
            space.set_index_parameter(index, name, int(v))
            ids = _search_as_stored(index, Q, k + extra, candidates, rows)
            return knn_recall(ids if own is None else without_self(ids, own, k), truth, k)

        value, seen = smallest_reaching(ladder, recall_of, self.target)
        reached = value is not None
        value = int(value if reached else seen[-1][0])
        space.set_index_parameter(index, name, value)
        setattr(self.cfg, self.knob, value)
        self.cfg.rerank = rerank
        if self.held is not None:
            index.add(self.held)
        self.tuning = Tuning(self.knob, value, dict(seen)[value], self.target, reached, int(Q.shape[0]), how,
                             rerank, time.perf_counter() - t0, [(int(v), float(r)) for v, r in seen])
        return index


def build_index_from_shards(descriptors: PathLike, out: PathLike, *, factory: Optional[str] = "auto",
                            memory_budget: Union[str, int] = "4G", on_disk: bool = False,
                            index_config: Optional[IndexConfig] = None, progress: bool = True,
                            ranks: Optional[Ranks] = None, target_recall: Optional[float] = None) -> BuildReport:
    """Build the index folder ``out`` from the descriptor folder ``descriptors`` (see the module
    doc). ``factory``: a faiss factory string, template, alias or ``auto``. ``target_recall``:
    the recall@10 the stored ``efSearch`` / ``nprobe`` is tuned to reach (default
    :data:`DEFAULT_TARGET_RECALL`; 0: no tuning, :mod:`retrieval.search.factory`'s fixed
    defaults); not tuned either when ``index_config`` sets ``nprobe`` or ``ef_search``."""
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
    target = _target(target_recall)
    user_knob = cfg.nprobe is not None or cfg.ef_search is not None
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
        knob = None if user_knob or not target else search_knob(trained)
        n_tune = min(TUNE_QUERIES, max(1, N // 10))
        held = N - n_tune if knob == "ef_search" else None
        mine = [k for k in range(n_shards) if k % ranks.world == ranks.rank] if ivf_of(trained) is not None else \
            (list(range(n_shards)) if ranks.is_main else [])
        if mine:
            _add_parts(sd, mine, starts, trained, work, ranks.rank, max(1 << 20, budget // 8), progress, held)
        t_add = time.perf_counter() - t
        barrier(ranks)
    bpv, tuned = None, None
    if ranks.is_main:
        segment: Any = None
        if trained is not None:  # the parts' lists merged into one segment (IVF), or the one part
            parts = sorted(work.glob("part-*.index"))
            segment = partial(merge_parts, read_segment(work / TRAINED), parts) if ivf_of(trained) is not None \
                else read_segment(parts[0])
            if knob is not None:
                make = segment if callable(segment) else (lambda _lists, index=segment: index)
                tail = _gather(sd, starts, np.arange(held, N)) if held is not None else None
                sample = None if held is not None else \
                    np.sort(np.random.default_rng(cfg.seed).choice(N, n_tune, replace=False))
                segment = tuned = _TunedSegment(make, knob, target, cfg, sd, starts, tail, sample)
        info = IndexInfo(D, fac, man.get("fingerprint"), man.get("model") or {}, None, cfg, on_disk)
        bpv = write_index(out, info, descriptors=_rows(sd, n_shards), paths=(p for s in sd.iter_shards() for p in s.paths),
                          stats=(tuple(int(v) for v in row) for s in sd.iter_shards() for row in s.stats),
                          segment=segment, ondisk=on_disk, trained=trained)["bytes_per_vector"]
        shutil.rmtree(work, ignore_errors=True)
    barrier(ranks)
    return BuildReport(str(out), fac, N, D, n_shards, on_disk, t_train, t_add, time.perf_counter() - t0,
                       bpv if bpv is not None else (4.0 * D if is_exact(fac) else None),
                       str(man.get("fingerprint")), ranks.rank, ranks.world, tuned.tuning if tuned else None)


def _target(target_recall: Optional[float]) -> float:
    """The recall@10 to tune for: ``target_recall``, else :data:`DEFAULT_TARGET_RECALL`; 0 means
    no tuning. Outside [0, 1]: a ConfigError."""
    t = DEFAULT_TARGET_RECALL if target_recall is None else float(target_recall)
    if not 0.0 <= t <= 1.0:
        raise ConfigError(f"target recall {t:g}: expected a recall@10 in (0, 1], or 0 for no tuning")
    return t
