#!/usr/bin/env python
"""Exact vs compressed vs graph faiss indexes on ≥ 1M descriptors made from real ones.

Protocol (one run, one machine; every speed is also given as a ratio against Flat in the same run):

1. **Real descriptors.** A toy collection (``retrieval.toydata``, synthetic objects in several views
   plus distractors, 128 px) is generated and described with the default backbone
   (EfficientNet-Lite0, ImageNet weights, GeM p=3, 1280-d) at its native 128 px, scale 1. Cached in
   ``bench_out/index/``.
2. **PCA to --dim (256).** Fitted on the real descriptors, then L2 (the usual "PCA-whitening to
   256-d" step; 1280-d would put HNSW's build out of reach of a 2-core run).
3. **1M database vectors.** The real descriptors are split: ``--queries`` of them are the queries
   (real, untouched), the rest are anchors. Each database vector is
   ``L2((1-λ)·a_i + λ·(u·a_j + (1-u)·a_k) + σ·ε/√d)`` with random anchors i, j, k,
   λ ~ U(0, 0.6), u ~ U(0, 1), σ ~ U(0.1, 0.6), ε ~ N(0, I): each vector leans on one real
   descriptor, mixed with two others, with varied noise, so the collection fills the space between
   real descriptors instead of stacking ~500 near-copies on each.
4. **Indexes** built through :class:`retrieval.index.ImageIndex` (training included in the build
   time; one build per factory, several search settings on it), searched for the top 100 in
   batches of 100 queries. Ground truth = Flat's top 100.
   recall@k = |top-k ∩ Flat's top-k| / k. Bytes per vector = serialized faiss index / N (the
   float32 descriptors kept for re-ranking, 4·d bytes per vector, stay on disk / mmap).

    python benchmarks/bench_index.py --only ivfpq,hnsw     # Flat, IVF-PQ (± re-rank), HNSW
    python benchmarks/bench_index.py --only fastscan,opq   # Flat, 4-bit fast-scan IVF-PQ, OPQ
    python benchmarks/bench_index.py --n 200000 --json bench_out/index/small.json
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import markdown_table  # noqa: E402
from retrieval.model.network import ModelConfig, build_network  # noqa: E402
from retrieval.search.extract import extract_descriptors  # noqa: E402
from retrieval.search.index import ImageIndex, IndexConfig  # noqa: E402
from retrieval.toy.collection import make_retrieval_collection  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "bench_out" / "index"

#: One build per factory, then one or more search settings on it. PQ codes use the ``np`` suffix
#: (no polysemous training: it only serves Hamming-filtered search, unused here, and costs minutes).
#: OPQ trains on 40960 vectors (40 per inverted list) instead of the default 51200: OPQ's 50
#: rotation/PQ iterations are the slowest step of the whole run on 2 cores.
BUILDS: List[Dict[str, Any]] = [
    {"key": "ivfpq", "factory": "IVF1024,PQ64np", "searches": [
        {"label": "IVF-PQ", "nprobe": 64, "rerank": False},
        {"label": "IVF-PQ + re-rank 500", "nprobe": 64, "rerank": True, "rerank_k": 500},
        {"label": "IVF-PQ + re-rank 1000", "nprobe": 64, "rerank": True, "rerank_k": 1000},
    ]},
    {"key": "fastscan", "factory": "IVF1024,PQ128x4fs", "searches": [
        {"label": "IVF-PQ fast-scan", "nprobe": 64, "rerank": False},
        {"label": "IVF-PQ fast-scan + re-rank 1000", "nprobe": 64, "rerank": True,
         "rerank_k": 1000},
        {"label": "IVF-PQ fast-scan nprobe 128 + re-rank 2000", "nprobe": 128, "rerank": True,
         "rerank_k": 2000},
        {"label": "IVF-PQ fast-scan nprobe 128 + re-rank 3000", "nprobe": 128, "rerank": True,
         "rerank_k": 3000},
    ]},
    {"key": "opq", "factory": "OPQ64,IVF1024,PQ64np", "train_size": 40960, "searches": [
        {"label": "OPQ+IVF-PQ", "nprobe": 64, "rerank": False},
        {"label": "OPQ+IVF-PQ + re-rank 500", "nprobe": 64, "rerank": True, "rerank_k": 500},
    ]},
    {"key": "hnsw", "factory": "HNSW32", "searches": [
        {"label": "HNSW32 efSearch 128", "ef_search": 128, "rerank": False},
        {"label": "HNSW32 efSearch 256", "ef_search": 256, "rerank": False},
    ]},
]


def real_descriptors(n_objects: int, views: int, distractors: int, seed: int,
                     workers: int) -> np.ndarray:
    """(M, 1280) float32 EfficientNet-Lite0 GeM descriptors of a generated toy collection."""
    f = OUT / f"real_{n_objects}_{views}_{distractors}_{seed}.npy"
    if f.is_file():
        return np.load(f)
    t0 = time.perf_counter()
    col = make_retrieval_collection(OUT / "toy", n_objects=n_objects, views=views,
                                    distractors=distractors, image_size=128, seed=seed, clutter=0.3)
    print(f"generated {len(col.db_paths) + len(col.query_paths)} toy images in "
          f"{time.perf_counter() - t0:.0f}s", file=sys.stderr)
    net = build_network(ModelConfig(image_size=128, scales=[1.0]))
    ex = extract_descriptors(net, col.query_paths + col.db_paths, batch_size=32, workers=workers,
                             progress=sys.stderr.isatty())
    print(f"described {len(ex.paths)} images in {ex.seconds:.0f}s "
          f"({ex.images_per_second:.1f} img/s)", file=sys.stderr)
    OUT.mkdir(parents=True, exist_ok=True)
    np.save(f, ex.descriptors)
    return ex.descriptors


def pca(X: np.ndarray, dim: int) -> np.ndarray:
    """Project (M, D) onto its top ``dim`` principal directions, then L2: (M, dim) float32."""
    Xc = X.astype(np.float64) - X.mean(axis=0)
    _, _, Vt = np.linalg.svd(Xc, full_matrices=False)
    Y = (Xc @ Vt[:dim].T).astype(np.float32)
    return Y / np.linalg.norm(Y, axis=1, keepdims=True)


def make_database(anchors: np.ndarray, n: int, seed: int, chunk: int = 100_000) -> np.ndarray:
    """(n, d) float32 unit rows: noisy mixtures of three random anchors (see the module docstring)."""
    rng = np.random.default_rng(seed)
    a, d = anchors.shape
    X = np.empty((n, d), np.float32)
    for s in range(0, n, chunk):
        b = min(chunk, n - s)
        i, j, k = (rng.integers(0, a, b) for _ in range(3))
        lam = rng.uniform(0.0, 0.6, (b, 1)).astype(np.float32)
        u = rng.uniform(0.0, 1.0, (b, 1)).astype(np.float32)
        sig = rng.uniform(0.1, 0.6, (b, 1)).astype(np.float32)
        x = (1 - lam) * anchors[i] + lam * (u * anchors[j] + (1 - u) * anchors[k])
        x += sig / np.sqrt(d) * rng.standard_normal((b, d), dtype=np.float32)
        X[s:s + b] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return X


def timed_search(index: Any, Q: np.ndarray, k: int, batch: int = 100, **kw: Any) -> tuple:
    """(Q, k) ids and the wall time of searching ``Q`` in batches of ``batch`` queries."""
    ids = []
    t0 = time.perf_counter()
    for s in range(0, Q.shape[0], batch):
        ids.append(index.search(Q[s:s + batch], k, **kw)[1])
    return np.concatenate(ids), time.perf_counter() - t0


def recall(ids: np.ndarray, ref: np.ndarray, k: int) -> float:
    return float(np.mean([len(set(a[:k].tolist()) & set(b[:k].tolist())) / k
                          for a, b in zip(ids, ref)]))


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000, help="database vectors (default 1M)")
    ap.add_argument("--dim", type=int, default=256, help="PCA dimension (default 256)")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--objects", type=int, default=150, help="toy objects (real descriptors)")
    ap.add_argument("--views", type=int, default=11)
    ap.add_argument("--distractors", type=int, default=1200)
    ap.add_argument("--threads", type=int, default=None, help="faiss/BLAS threads (default: all)")
    ap.add_argument("--workers", type=int, default=1, help="image decoding workers for extraction")
    ap.add_argument("--only", default=None, help="comma-separated keys of BUILDS to run: ivfpq, fastscan, opq, hnsw (default: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = ap.parse_args(argv)

    import faiss

    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    R = real_descriptors(args.objects, args.views, args.distractors, args.seed, args.workers)
    Rp = pca(R, args.dim)
    perm = np.random.default_rng(args.seed).permutation(Rp.shape[0])
    Q = np.ascontiguousarray(Rp[perm[:args.queries]])
    anchors = np.ascontiguousarray(Rp[perm[args.queries:]])
    t0 = time.perf_counter()
    X = make_database(anchors, args.n, args.seed + 1)
    print(f"{R.shape[0]} real {R.shape[1]}-d descriptors → PCA {args.dim}; {args.queries} queries, "
          f"{args.n} database vectors made in {time.perf_counter() - t0:.0f}s", file=sys.stderr)
    paths = [""] * args.n  # ImageIndex wants one path per vector; empty strings keep it cheap

    def build(factory: str, **cfg: Any) -> tuple:
        config = IndexConfig(factory=factory, **cfg)
        idx = ImageIndex(args.dim, factory, fingerprint="bench", config=config)
        t = time.perf_counter()
        idx.add(X, paths)
        return idx, time.perf_counter() - t

    rows: List[Dict[str, Any]] = []
    flat, t_build = build("Flat")
    ref, t_search = timed_search(flat, Q, 100, rerank=False)
    flat_qps = args.queries / t_search
    flat_bpv = flat.bytes_per_vector()
    rows.append({"label": "Flat", "factory": "Flat", "recall@10": 1.0, "recall@100": 1.0,
                 "qps": flat_qps, "build_s": t_build, "bytes_per_vector": flat_bpv})
    print(f"Flat: {flat_qps:.1f} q/s, build {t_build:.1f}s", file=sys.stderr)
    del flat
    gc.collect()
    only = set(args.only.split(",")) if args.only else None
    for b in BUILDS:
        if only and b["key"] not in only:
            continue
        idx, t_build = build(b["factory"], train_size=b.get("train_size"))
        print(f"{idx.factory}: built in {t_build:.0f}s", file=sys.stderr)
        for s in b["searches"]:
            kw = {k: v for k, v in s.items() if k != "label"}
            ids, t_search = timed_search(idx, Q, 100, **kw)
            row = {"label": s["label"], "factory": idx.factory, **kw,
                   "train_size": b.get("train_size"),
                   "recall@10": recall(ids, ref, 10), "recall@100": recall(ids, ref, 100),
                   "qps": args.queries / t_search, "build_s": t_build,
                   "bytes_per_vector": idx.bytes_per_vector()}
            rows.append(row)
            print(f"  {s['label']}: R@10 {row['recall@10']:.3f} R@100 {row['recall@100']:.3f} "
                  f"{row['qps']:.0f} q/s", file=sys.stderr)
        del idx
        gc.collect()

    for r in rows:
        r["qps_x_flat"] = r["qps"] / flat_qps
        r["build_x_flat"] = r["build_s"] / rows[0]["build_s"]
        r["bytes_x_flat"] = r["bytes_per_vector"] / flat_bpv
    setup = {"n": args.n, "dim": args.dim, "queries": args.queries, "real": int(R.shape[0]),
             "threads": faiss.omp_get_max_threads(), "cpu": os.cpu_count(),
             "faiss": faiss.__version__, "load_avg_1min_at_end": os.getloadavg()[0]}
    header = ["index", "factory", "recall@10", "recall@100", "queries/s", "× Flat q/s",
              "build s", "bytes/vector", "× Flat bytes"]
    table = [[r["label"], r["factory"], r["recall@10"], r["recall@100"], r["qps"],
              r["qps_x_flat"], r["build_s"], r["bytes_per_vector"], r["bytes_x_flat"]] for r in rows]
    print(f"{args.n} vectors, {args.dim}-d, {args.queries} queries, top-100 in batches of 100, "
          f"{setup['threads']} faiss threads on {setup['cpu']} CPUs, faiss {setup['faiss']}")
    print(markdown_table(header, table))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"setup": setup, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
