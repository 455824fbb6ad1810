"""Describing the images of an index run so that an interrupted run resumes where it stopped.

:func:`retrieval.search.collection.index_images` writes its index once, at the end (a new index to a
temporary folder renamed into place), so an interruption (Ctrl-C, a kill, a crash) leaves no
half-written index — and, before this module, lost every description. Here the images are
described in chunks, each written as an atomic shard of a work folder beside the index
(``.<index name>.describing/``, the :class:`~retrieval.search.shards.ShardDir` format of
``tools/extract.py``, tied to the model by its fingerprint). A re-run reuses every described
image whose file has the same size and modification time and describes only the rest; once the
index is written the work folder is deleted (:func:`discard_work`).

Chunks start at :data:`FIRST_CHUNK` images and then grow so that each takes about
:data:`CHUNK_SECONDS` (at most doubling): an interruption loses at most about that much work, and
the cost of a chunk (a new image loader, a shard written) stays a few percent of it. A file that
failed to load is tried again by the next run.
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from tqdm import tqdm

from retrieval.core.config import to_dict
from retrieval.core.errors import DataError, GemsegError
from retrieval.model.network import DescriptorNet
from retrieval.search.extract import Extracted, extract_descriptors
from retrieval.search.shards import ShardDir

PathLike = Union[str, Path]
Stat = Optional[Tuple[int, int]]

#: images in the first chunk; later chunks aim at CHUNK_SECONDS each
FIRST_CHUNK = 32
CHUNK_SECONDS = 30.0
MAX_CHUNK = 100_000
#: test-only hook: after writing this many chunks, pause (sleep) so that a test can interrupt the run
PAUSE_AFTER_ENV = "GEMSEG_TEST_PAUSE_AFTER_CHUNKS"


def work_dir(index_folder: PathLike) -> Path:
    """The work folder of the index at ``index_folder``: ``.<name>.describing`` beside it."""
    out = Path(index_folder)
    return out.parent / f".{out.name}.describing"


def discard_work(index_folder: PathLike) -> None:
    """Delete the work folder of ``index_folder`` (its index has been written)."""
    shutil.rmtree(work_dir(index_folder), ignore_errors=True)


def next_chunk(size: int, seconds: float) -> int:
    """The next chunk's size after a chunk of ``size`` images took ``seconds``: about
    :data:`CHUNK_SECONDS` worth, at most twice ``size``, within FIRST_CHUNK … MAX_CHUNK."""
    want = size * CHUNK_SECONDS / seconds if seconds > 0 else 2 * size
    return int(max(FIRST_CHUNK, min(MAX_CHUNK, 2 * size, want)))


def _open(sd: ShardDir, net: DescriptorNet, source: str) -> None:
    """Open the work folder for ``net``; one of another model (or damaged) is started afresh."""
    try:
        sd.open_for(to_dict(net.config), net.fingerprint(), net.dim, 0, source)
    except GemsegError:
        shutil.rmtree(sd.folder, ignore_errors=True)
        sd.open_for(to_dict(net.config), net.fingerprint(), net.dim, 0, source)


def _described(sd: ShardDir, wanted: Dict[str, Stat]) -> Tuple[Dict[str, np.ndarray], int]:
    """Rows already described for the paths of ``wanted`` whose file is unchanged (same stat),
    and the next free shard number."""
    rows: Dict[str, np.ndarray] = {}
    shards = sorted(int(d.name) for d in (sd.folder / "shards").glob("[0-9]*") if d.name.isdigit()) \
        if (sd.folder / "shards").is_dir() else []
    for k in shards:
        if not sd.is_complete(k):
            continue
        try:
            sh = sd.read_shard(k)
        except DataError:
            continue  # a damaged shard: its images are described again
        for p, row, st in zip(sh.paths, np.asarray(sh.descriptors), sh.stats):
            if p in wanted and wanted[p] is not None and tuple(int(v) for v in st) == tuple(wanted[p]):
                rows[p] = np.array(row, dtype=np.float32)
    return rows, (max(shards) + 1 if shards else 0)


def _pause(written: int) -> None:
    """The test hook: say so, then wait (at most 2 minutes) to be interrupted or killed."""
    print(f"paused after {written} chunks", flush=True)
    for _ in range(2400):
        time.sleep(0.05)
    os._exit(75)


def extract_resumably(net: DescriptorNet, paths: Sequence[str], stats: Dict[str, Stat], index_folder: PathLike, *,
                      batch_size: int = 8, workers: Optional[int] = None, device: Optional[str] = None,
                      progress: bool = True, desc: str = "index") -> Tuple[Extracted, int]:
    """Describe ``paths`` (their ``stats``: (size, mtime_ns) or None) for the index at
    ``index_folder``, reusing what an interrupted run described (module docstring).

    Returns:
        (:class:`~retrieval.search.extract.Extracted` of ``paths`` in their order — (N, D) float32
        descriptors of those that loaded, the failures — and how many of them were reused).
    """
    t0 = time.perf_counter()
    paths = [str(p) for p in paths]
    if not paths:
        return Extracted(np.zeros((0, net.dim), np.float32), [], [], 0.0), 0
    sd = ShardDir(work_dir(index_folder))
    _open(sd, net, str(index_folder))
    rows, k = _described(sd, {p: stats.get(p) for p in paths})
    resumed = len(rows)
    rest = [p for p in paths if p not in rows]
    failures: List[Tuple[str, str]] = []
    pause_after = int(os.environ.get(PAUSE_AFTER_ENV, "0") or 0)
    size, written = FIRST_CHUNK, 0
    with tqdm(total=len(paths), initial=resumed, desc=desc, unit="img", disable=not progress, leave=False) as bar:
        i = 0
        while i < len(rest):
            chunk = rest[i:i + size]
            t = time.perf_counter()
            ex = extract_descriptors(net, chunk, batch_size=batch_size, workers=workers, device=device,
                                     progress=False)
            st = np.array([stats.get(p) or (0, 0) for p in ex.paths], dtype=np.int64).reshape(-1, 2)
            sd.write_shard(k, ex.descriptors, ex.paths, st, ex.failures)
            k, written, i = k + 1, written + 1, i + len(chunk)
            rows.update(zip(ex.paths, np.asarray(ex.descriptors)))
            failures.extend(ex.failures)
            bar.update(len(chunk))
            size = next_chunk(len(chunk), time.perf_counter() - t)
            if pause_after and written >= pause_after:
                _pause(written)
    ok = [p for p in paths if p in rows]
    X = np.stack([rows[p] for p in ok]).astype(np.float32) if ok else np.zeros((0, net.dim), np.float32)
    bad = dict(failures)
    return Extracted(np.ascontiguousarray(X), ok, [(p, bad[p]) for p in paths if p in bad],
                     time.perf_counter() - t0), resumed
