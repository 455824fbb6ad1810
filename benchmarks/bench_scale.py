#!/usr/bin/env python
"""Past one machine: an index built from descriptor shards under a memory budget, on disk; sharded
extraction on 2 ranks vs 1; the memory of opening an index of N paths.

1. **Build.** N generated 128-d unit descriptors (10⁴ random unit centres plus Gaussian noise of
   norm ≈ 0.6, normalised: clusters with structure, as real descriptors have), written as descriptor shards of --shard-size, one shard in memory at a time.
   ``tools/index.py --descriptors ... --factory auto --memory-budget B --on-disk`` runs in a child
   process: build time and its peak RSS (the child's own ``VmHWM``; in brackets, the RSS of a
   process that only imports the tool's modules, torch included). Bytes per vector = faiss
   segment files / N (the float32 descriptors for re-ranking, 512 B/vector, are memory-mapped).
2. **Search.** 1,000 queries (noisy copies of random database vectors); ground truth = exact
   top-10 over the shards. recall@10 = |top-10 ∩ exact top-10| / 10, with the index's default
   nprobe and exact re-ranking of 100 candidates. Queries/s of the on-disk index vs the same index
   with its lists copied into RAM (same run, same queries, best of 3).
3. **Extraction.** ``tools/extract.py`` on --images 96×128 images (random-init ResNet-18, 64 px):
   one process with 1 and with 2 threads vs ``torchrun --nproc_per_node 2`` with 1 thread per
   rank; images/s = images / the slowest rank's own extraction time (listing, decoding, forward,
   writing shards), and the wall time of the whole command (interpreter, torch and model start-up
   included).
4. **Trade-off** (``--only tradeoff``, on the built index): recall@10 and queries/s for nprobe ×
   re-ranked candidates. **Compaction** (``--only compact``): 1 % of the ids removed, searched
   (removed ids skipped inside faiss), then ``tools/index.py --compact`` in a child process.
5. **Opening an index of N paths**: RSS growth of ``ImageIndex.load`` on a version-1 folder
   (paths.json) vs the SQLite path store, same N paths (8-d descriptors, to isolate the paths).

    python benchmarks/bench_scale.py --n 1000000            # what docs/benchmarks.md reports
    python benchmarks/bench_scale.py --n 10000000 --memory-budget 4G --only build,tradeoff,compact
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import best_time, markdown_table  # noqa: E402
from retrieval.search.index import ImageIndex  # noqa: E402
from retrieval.search.ondisk import lists_in_memory  # noqa: E402
from retrieval.search.shards import ShardDir  # noqa: E402
from retrieval.search.topk import exact_knn  # noqa: E402

D = 128
TINY = "model:\n  backbone: resnet18\n  weights: none\n  image_size: 64\n  scales: [1.0]\nextract:\n  batch_size: 8\n  workers: 0\n"


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def make_shards(folder: Path, n: int, shard_size: int, seed: int = 0) -> None:
    centres = unit(np.random.default_rng(seed).normal(size=(10_000, D)))
    sd = ShardDir(folder)
    sd.open_for({"generated": True}, "bench", D, shard_size, "generated")
    for k, a in enumerate(range(0, n, shard_size)):
        b = min(n, a + shard_size)
        if sd.is_complete(k):
            continue
        rng = np.random.default_rng(seed + 1 + k)
        X = unit(centres[rng.integers(0, len(centres), b - a)] + 0.6 * rng.normal(size=(b - a, D)) / np.sqrt(D))
        sd.write_shard(k, X, [f"/gen/{i}.jpg" for i in range(a, b)], np.zeros((b - a, 2), np.int64), [])
    sd.write_manifest(dict(sd.manifest(), images=n, shards=k + 1))


def queries_and_truth(folder: Path, n: int, nq: int = 1000, seed: int = 7, removed=None):
    """1,000 noisy copies of database vectors, and their exact top-10 (``removed`` ids excluded)."""
    sd = ShardDir(folder)
    ss = sd.manifest()["shard_size"]
    pick = np.random.default_rng(seed).choice(n, nq, replace=False)
    base = np.stack([np.asarray(sd.read_shard(i // ss).descriptors[i % ss]) for i in pick])
    Q = unit(base + 0.2 * np.random.default_rng(seed + 1).normal(size=base.shape) / np.sqrt(D))
    blocks = ((np.asarray(s.descriptors), k * ss) for k, s in enumerate(sd.iter_shards()))
    return Q, exact_knn(Q, blocks, 10, removed)[1]


def recall10(ids: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, truth)]))


def run(cmd, env=None) -> tuple:
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT), **(env or {})),
                       capture_output=True, text=True)
    if p.returncode:
        raise SystemExit(f"{cmd} failed:\n{p.stderr[-3000:]}")
    return time.perf_counter() - t0, p.stdout


# Runs a script and writes its own peak RSS (VmHWM, KiB) to a file. Not ru_maxrss: a child started
# with vfork (as subprocess does) inherits its parent's peak at exec, which made a 2.9 GiB
# compaction read 11.2 GiB when the benchmark itself held a 10⁷ index.
_PEAK = """import atexit, runpy, sys
out = sys.argv.pop(1)
def peak():
    kib = next(int(ln.split()[1]) for ln in open('/proc/self/status') if ln.startswith('VmHWM'))
    open(out, 'w').write(str(kib))
atexit.register(peak)
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name='__main__')
"""


def run_peak(script_and_args: list, work: Path) -> tuple:
    """``run`` a Python script; returns (seconds, stdout, its own peak RSS in GiB)."""
    out = work / "peak_rss.txt"
    wall, stdout = run([sys.executable, "-c", _PEAK, str(out), *script_and_args])
    return wall, stdout, int(out.read_text()) / 2 ** 20


def import_floor(work: Path) -> float:
    """Peak RSS (GiB) of a process that only imports the tools' modules (torch and faiss)."""
    script = work / "imports.py"
    script.write_text("import retrieval.jobs, faiss\n")
    return run_peak([str(script)], work)[2]


def bench_build(args, work: Path) -> list:
    desc, ix = work / f"desc_{args.n}_{args.shard_size}", work / f"ix_{args.n}"
    t0 = time.perf_counter()
    make_shards(desc, args.n, args.shard_size)
    gen = time.perf_counter() - t0
    wall, out, rss = run_peak(["tools/index.py", "--descriptors", str(desc), "--out", str(ix), "--json",
                               "--memory-budget", args.memory_budget, "--on-disk"], work)
    floor = import_floor(work)
    rep = json.loads(out)
    Q, truth = queries_and_truth(desc, args.n)
    disk = ImageIndex.load(ix)
    ram = ImageIndex.load(ix)
    for seg in ram.segments:
        lists_in_memory(seg.index)
    recall = recall10(disk.search(Q, 10)[1], truth)
    q_disk = len(Q) / best_time(lambda: disk.search(Q, 10), repeat=3)
    q_ram = len(Q) / best_time(lambda: ram.search(Q, 10), repeat=3)
    raw_gb = args.n * D * 4 / 2 ** 30
    print(f"generated {args.n} descriptors in {gen:.0f}s; build: {json.dumps(rep)}", file=sys.stderr)
    return [args.n, f"{raw_gb:.2f} GiB", rep["factory"], f"nprobe {disk.config.nprobe}", f"{wall:.0f} s",
            f"{rss:.2f} GiB ({floor:.2f} importing)", f"{rep['bytes_per_vector']:.1f}", f"{recall:.3f}",
            f"{q_disk:.0f}", f"{q_ram:.0f}", f"{q_disk / q_ram:.2f}"]


def bench_tradeoff(args, work: Path) -> list:
    """recall@10 and queries/s of the built index (on disk) across nprobe × re-ranked candidates."""
    desc, ix = work / f"desc_{args.n}_{args.shard_size}", work / f"ix_{args.n}"
    Q, truth = queries_and_truth(desc, args.n)
    disk = ImageIndex.load(ix)
    rows = []
    for nprobe in (64, 256, 1024):
        for rerank_k in (0, 100, 1000):
            kw = dict(nprobe=nprobe, rerank=rerank_k > 0, rerank_k=rerank_k or None)
            rec = recall10(disk.search(Q, 10, **kw)[1], truth)
            qps = len(Q) / best_time(lambda: disk.search(Q, 10, **kw), repeat=2)
            rows.append([nprobe, rerank_k or "none", f"{rec:.3f}", f"{qps:.0f}"])
    return rows


def bench_compact(args, work: Path) -> list:
    """1 % of the ids removed: search before / with them removed / after ``tools/index.py
    --compact`` (a child process: its time and peak RSS); recall@10 against the exact top-10 of
    the live descriptors."""
    from retrieval.search.compaction import new_ids

    desc, ix = work / f"desc_{args.n}_{args.shard_size}", work / f"ix_{args.n}"
    removed = np.sort(np.random.default_rng(11).choice(args.n, args.n // 100, replace=False)).astype(np.int64)
    Q, truth = queries_and_truth(desc, args.n)
    _, truth_live = queries_and_truth(desc, args.n, removed=removed)
    rows = []

    def row(label, index, want, extra=""):
        rec = recall10(index.search(Q, 10)[1], want)
        qps = len(Q) / best_time(lambda: index.search(Q, 10), repeat=3)
        rows.append([label, f"{index.n_live:,}", len(index.segments), f"{rec:.3f}", f"{qps:.0f}", extra])

    index = ImageIndex.load(ix)
    row("as built", index, truth)
    t0 = time.perf_counter()
    index.remove(removed)
    index.save(ix)
    t_remove = time.perf_counter() - t0
    row(f"{removed.size:,} ids removed", ImageIndex.load(ix), truth_live, f"remove + save {t_remove:.1f} s")
    wall, out, rss = run_peak(["tools/index.py", "--compact", "--out", str(ix), "--json"], work)
    rep = json.loads(out)
    row("compacted", ImageIndex.load(ix), new_ids(truth_live, removed),
        f"--compact {wall:.0f} s, peak RSS {rss:.2f} GiB, "
        f"{rep['bytes_before'] / 2 ** 30:.2f} → {rep['bytes_after'] / 2 ** 30:.2f} GiB on disk")
    return rows


def bench_extract(args, work: Path) -> list:
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import random_images

    imgs = work / "imgs"
    if not imgs.is_dir():
        random_images(imgs, args.images, size=(96, 128))
    cfg = work / "tiny.yaml"
    cfg.write_text(TINY)
    base = ["--images", str(imgs), "--config", str(cfg), "--shard-size", str(max(1, args.images // 8)), "--json"]
    rows, first = [], None
    for label, ranks, threads in (("1 process, 1 thread", 1, "1"), ("1 process, 2 threads", 1, "2"),
                                  ("torchrun: 2 ranks × 1 thread", 2, "1")):
        out = work / f"x_{ranks}_{threads}"
        launch = [sys.executable] + (["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}"]
                                     if ranks > 1 else [])
        wall, o = run([*launch, "tools/extract.py", "--out", str(out), *base],
                      {"GEMSEG_THREADS": threads, "OMP_NUM_THREADS": threads})
        reps = [json.loads(x) for x in o.replace("}\n{", "}\x00{").split("\x00")]
        ips = sum(r["images"] for r in reps) / max(r["seconds"] for r in reps)
        first = first or (ips, wall)
        rows.append([label, f"{ips:.1f}", f"{ips / first[0]:.2f}", f"{wall:.1f} s", f"{first[1] / wall:.2f}"])
    return rows


def bench_open(args, work: Path) -> list:
    n = args.paths
    code = ("import resource,sys;from retrieval.search.index import ImageIndex;"
            "r0=int(open('/proc/self/statm').read().split()[1]);ix=ImageIndex.load(sys.argv[1]);"
            "r1=int(open('/proc/self/statm').read().split()[1]);print((r1-r0)*4096, ix.paths[len(ix)-1])")
    rows = []
    v2 = work / f"paths_v2_{n}"
    if not v2.is_dir():
        idx = ImageIndex(8, "Flat", fingerprint="bench")
        idx.add(np.zeros((n, 8), np.float32), [f"/photos/collection/2024/some_folder/IMG_{i:09d}.jpg" for i in range(n)])
        idx.save(v2)
    v1 = work / f"paths_v1_{n}"
    if not v1.is_dir():
        v1.mkdir()
        np.save(v1 / "descriptors.npy", np.zeros((n, 8), np.float32))
        (v1 / "paths.json").write_text(json.dumps([f"/photos/collection/2024/some_folder/IMG_{i:09d}.jpg"
                                                   for i in range(n)]))
        (v1 / "meta.json").write_text(json.dumps({"format": "gemseg-index", "version": 1, "factory": "Flat",
                                                  "dim": 8, "count": n, "fingerprint": "bench", "model": {}}))
    for label, folder in (("before: paths.json (version 1)", v1), ("after: paths.sqlite", v2)):
        t, out = run([sys.executable, "-c", code, str(folder)])
        rows.append([label, n, f"{int(out.split()[0]) / 2 ** 20:.1f} MiB", f"{t:.2f} s"])
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000, help="generated descriptors to index (default 1e6)")
    ap.add_argument("--shard-size", type=int, default=100_000)
    ap.add_argument("--memory-budget", default="4G")
    ap.add_argument("--images", type=int, default=64, help="images for the extraction rows")
    ap.add_argument("--paths", type=int, default=1_000_000, help="paths for the opening rows")
    ap.add_argument("--only", default="build,extract,open",
                    help="comma-separated: build, tradeoff, compact (these two reuse the built index; compact "
                         "rewrites it), extract, open")
    ap.add_argument("--work", default=str(ROOT / "bench_out" / "scale"))
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    only = args.only.split(",")
    if "build" in only:
        print(markdown_table(["N", "raw", "factory (auto)", "search", "build", "peak RSS", "B/vector", "recall@10",
                              "q/s on disk", "q/s in RAM", "ratio"], [bench_build(args, work)]), flush=True)
    if "tradeoff" in only:
        print(markdown_table(["nprobe", "re-ranked", "recall@10", "q/s on disk"], bench_tradeoff(args, work)), flush=True)
    if "compact" in only:  # rewrites the built index: last
        print(markdown_table(["index", "live ids", "segments", "recall@10", "q/s", "cost"], bench_compact(args, work)),
              flush=True)
    if "extract" in only:
        print(markdown_table(["run", "images/s (extraction)", "ratio", "wall (command)", "speed-up (wall)"],
                             bench_extract(args, work)), flush=True)
    if "open" in only:
        print(markdown_table(["index", "paths", "RSS growth of ImageIndex.load", "wall (process)"],
                             bench_open(args, work)), flush=True)


if __name__ == "__main__":
    main()
