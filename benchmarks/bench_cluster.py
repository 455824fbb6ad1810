"""Benchmark: `retrieval.cluster.agglomerative` time and peak memory at 10k, 100k and 1M points (CPU),
against scipy's average linkage where it fits in memory, with NMI on generated data.

Data: ``classes`` Gaussian classes in ``dim`` dims (unit-normal centres, noise σ), L2-normalised,
float32 — descriptor-like. Each (method, N) runs in a fresh child process so that its peak resident
memory (``ru_maxrss``) is its own; "peak MB" is the child's peak RSS minus its RSS after the data
was generated (the interpreter, numpy, scipy, faiss and the points are excluded).

    .venv/bin/python benchmarks/bench_cluster.py            # 10k, 100k, 1M (a few minutes on 2 cores)
    .venv/bin/python benchmarks/bench_cluster.py --sizes 10000 100000 --json
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from retrieval.training.cluster import agglomerative, average_linkage, nmi  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _data(n: int, dim: int, classes: int, noise: float, seed: int):
    import numpy as np

    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim)).astype(np.float32)
    y = rng.integers(0, classes, n)
    X = centres[y] + rng.normal(scale=noise, size=(n, dim)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X, y


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child(method: str, n: int, args: argparse.Namespace) -> dict:
    X, y = _data(n, args.dim, args.classes, args.noise, args.seed)
    base = _rss_mb()
    t = time.perf_counter()
    if method == "agglomerative":
        labels, info = agglomerative(X, args.classes, ks=args.ks, kc=args.kc, return_info=True)
    else:
        labels, info = average_linkage(X, args.classes), {}
    secs = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB → MiB on Linux
    return {"method": method, "n": n, "seconds": secs, "peak_mb": peak - base,
            "nmi": nmi(labels, y), "rounds": info.get("rounds"),
            "initial_clusters": info.get("initial_clusters"),
            "centroid_merges": info.get("centroid_merges")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--dim", type=int, default=32)
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--noise", type=float, default=1.0)
    ap.add_argument("--ks", type=int, default=10)
    ap.add_argument("--kc", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scipy-max", type=int, default=20_000,
                    help="largest N given to scipy's average linkage (it needs N²/2 float64)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--child", nargs=2, metavar=("METHOD", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]), args)))
        return 0

    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    rows = []
    for n in args.sizes:
        for method in ("agglomerative", "average_linkage"):
            if method == "average_linkage" and n > args.scipy_max:
                need = n * (n - 1) / 2 * 8 / 1e9
                rows.append({"method": method, "n": n, "skipped":
                             f"needs ≥ {need:.0f} GB for the condensed distances ({mem_gb:.0f} GB here)"
                             if need > mem_gb else f"above --scipy-max ({need:.1f} GB, O(N²) time)"})
                continue
            cmd = [sys.executable, __file__, "--child", method, str(n), "--dim", str(args.dim),
                   "--classes", str(args.classes), "--noise", str(args.noise), "--ks", str(args.ks),
                   "--kc", str(args.kc), "--seed", str(args.seed)]
            out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
            if out.returncode != 0:
                rows.append({"method": method, "n": n, "skipped": out.stderr.strip().splitlines()[-1]})
                continue
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            if not args.json:
                r = rows[-1]
                print(f"  {method:16s} N={n:>9,d}  {r['seconds']:8.1f} s  {r['peak_mb']:8.0f} MB  "
                      f"NMI {r['nmi']:.4f}", file=sys.stderr)
    by = {(r["method"], r["n"]): r for r in rows}
    for n in args.sizes:
        a, s = by.get(("agglomerative", n)), by.get(("average_linkage", n))
        if a and s and "seconds" in a and "seconds" in s:
            a["speedup_vs_scipy"] = s["seconds"] / a["seconds"]
            a["memory_ratio_vs_scipy"] = s["peak_mb"] / max(a["peak_mb"], 1e-9)
    if args.json:
        print(json.dumps({"config": vars(args) | {"child": None}, "rows": rows}, indent=2))
        return 0
    print(f"data: {args.classes} Gaussian classes, {args.dim}-d, noise σ={args.noise}, L2-normalised; "
          f"ks={args.ks}, kc={args.kc}; {os.cpu_count()} CPU cores")
    print("| method | N | time (s) | peak memory (MB) | NMI | vs scipy |")
    print("|---|---:|---:|---:|---:|---|")
    for r in rows:
        if "skipped" in r:
            print(f"| {r['method']} | {r['n']:,} | — | — | — | not run: {r['skipped']} |")
            continue
        ratio = ""
        if "speedup_vs_scipy" in r:
            ratio = f"{r['speedup_vs_scipy']:.1f}× faster, {r['memory_ratio_vs_scipy']:.0f}× less memory"
        print(f"| {r['method']} | {r['n']:,} | {r['seconds']:.1f} | {r['peak_mb']:.0f} | "
              f"{r['nmi']:.4f} | {ratio} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
