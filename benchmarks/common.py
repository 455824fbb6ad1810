"""Helpers shared by the benchmarks: timing with warm-up, a markdown table printer, clustered
synthetic descriptors and the descriptor shards a build reads."""
from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Sequence

import numpy as np

from retrieval.search.shards import ShardDir


def best_time(fn: Callable[[], object], repeat: int = 3, warmup: int = 1) -> float:
    """Best wall time of ``repeat`` calls of ``fn`` after ``warmup`` calls (seconds)."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def markdown_table(header: Sequence[str], rows: List[Sequence[object]]) -> str:
    def fmt(v: object) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def unit(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` scaled to unit length: (n, D) float32."""
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def clustered(n: int, seed: int, dim: int = 128, centres_seed: int = 0, n_centres: int = 10_000,
              chunk: int = 100_000) -> np.ndarray:
    """(n, dim) float32 unit rows: a random one of ``n_centres`` random unit centres (drawn with
    ``centres_seed``) plus Gaussian noise of norm ≈ 0.6, normalised; rows drawn with ``seed``."""
    centres = unit(np.random.default_rng(centres_seed).normal(size=(n_centres, dim)))
    rng = np.random.default_rng(seed)
    X = np.empty((n, dim), np.float32)
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        X[a:b] = unit(centres[rng.integers(0, n_centres, b - a)] + 0.6 * rng.normal(size=(b - a, dim)) / np.sqrt(dim))
    return X


def write_shards(folder: Path, blocks: Iterable[np.ndarray], dim: int, shard_size: int, model: Dict[str, Any],
                 fingerprint: str, path_of: Callable[[int], str]) -> int:
    """``folder`` replaced by descriptor shards in ``tools/extract.py``'s format (what ``gemseg
    index --descriptors`` reads): one shard per block of ``blocks`` ((≤ shard_size, dim) float32,
    in order), row ``i`` named ``path_of(i)``, no file stats; returns the rows written."""
    shutil.rmtree(folder, ignore_errors=True)
    sd = ShardDir(folder)
    sd.open_for(model, fingerprint, dim, shard_size, "generated")
    n = k = 0
    for k, X in enumerate(blocks):
        sd.write_shard(k, X, [path_of(i) for i in range(n, n + X.shape[0])], np.zeros((X.shape[0], 2), np.int64), [])
        n += X.shape[0]
    sd.write_manifest(dict(sd.manifest(), images=n, shards=k + 1 if n else 0))
    return n
