#!/usr/bin/env python
"""Duplicates: gemseg dedup against perceptual hashes on planted real photos, and range search at scale.

1. **Quality** (``--only quality``). A planted collection (:mod:`retrieval.dedup.planted`):
   ``--originals`` photos of scikit-image / scikit-learn at 480 px, one edit of each kind per
   original (byte copy, resize 0.35–0.75, JPEG q30–90, crop 5–30 %, brightness/contrast ×0.7–1.3,
   rotation 2–6°, a caption), extra crops losing 10/20/30/40 % of the area, ``--distinct`` photos
   that are copies of nothing, and the other frame of the stereo motorcycle pair (the same scene
   from another viewpoint: similar, not a copy). Per kind of edit, precision / recall / F1 of the
   pairs (edit, photo) each method calls duplicates (:func:`retrieval.dedup.planted.edit_metrics`),
   and seconds for the whole folder (gemseg: describing with the default model included).
   Methods: ``gemseg`` (default model; thresholds calibrated on the built-in photos that are *not*
   in the collection; exact + near tiers, near pairs spatially verified), ``gemseg, no verify``,
   imagededup PHash and DHash (their default ``max_distance_threshold`` 10 of 64 bits) and
   imagehash ``phash`` (Hamming distance ≤ 10 of 64, the same rule).
2. **Scale** (``--only scale``). ``--n`` synthetic unit descriptors of ``--dim`` dimensions (10⁴
   random centres + Gaussian noise of norm ≈ 0.6, normalised, as bench_scale.py makes them), 1 %
   of them planted copies at cosine ≈ 0.95, saved as .npy and memory-mapped; a child process runs
   :func:`retrieval.dedup.pairs.range_pairs` at 0.9 (IVF-SQ8 beyond 5·10⁴): seconds, its own peak
   RSS (``VmHWM``; in brackets, a process that only imports the modules), pairs found, recall of
   the planted pairs, and the same for the exact search on a 5·10⁴ subset as the baseline.

    python benchmarks/bench_dedup.py                       # what docs/benchmarks.md reports
    python benchmarks/bench_dedup.py --only scale --n 1000000 --dim 128
"""
from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from common import markdown_table  # noqa: E402

KINDS = ("copy", "resize", "jpeg", "crop≤20%", "crop>20%", "tone", "rotate", "text")


def _sorted_pairs(groups) -> set:
    return {tuple(sorted(p)) for g in groups for p in itertools.combinations(g, 2)}


def gemseg_pairs(folder: Path, thresholds_file: Path, verify: bool, index: Path) -> tuple:
    """Pairs in gemseg's exact and near groups, and seconds (the folder is described into
    ``index`` by the first call; a second call reuses the descriptors)."""
    from retrieval.jobs import run_dedup
    t0 = time.perf_counter()
    out = run_dedup(folder, index, thresholds=thresholds_file, verify=verify, progress=False)
    sec = time.perf_counter() - t0
    groups = [[str(Path(i["path"]).relative_to(folder.resolve())) for i in g["images"]]
              for g in out["groups"] if g["kind"] in ("exact", "near")]
    return _sorted_pairs(groups), sec


def imagededup_pairs(folder: Path, method: str) -> tuple:
    from imagededup import methods
    hasher = getattr(methods, method)(verbose=False)
    t0 = time.perf_counter()
    dups = hasher.find_duplicates(image_dir=folder, max_distance_threshold=10, num_enc_workers=1, num_dist_workers=1)
    sec = time.perf_counter() - t0
    return {tuple(sorted((a, b))) for a, bs in dups.items() for b in bs}, sec


def imagehash_pairs(folder: Path, files) -> tuple:
    import imagehash
    from PIL import Image
    t0 = time.perf_counter()
    h = {}
    for f in files:
        with Image.open(folder / f) as im:
            h[f] = imagehash.phash(im)
    pairs = {tuple(sorted((a, b))) for a, b in itertools.combinations(files, 2) if h[a] - h[b] <= 10}
    return pairs, time.perf_counter() - t0


def bench_quality(args, work: Path) -> None:
    from retrieval.dedup.calibration import calibrate_model
    from retrieval.dedup.planted import PHOTO_NAMES, edit_metrics, write_planted
    from retrieval.dedup.thresholds import save_thresholds
    from retrieval.loading import load_model
    folder = work / "photos"
    planted = write_planted(folder, n_originals=args.originals, n_distinct=args.distinct, crops=(0.1, 0.2, 0.3, 0.4),
                            seed=args.seed)
    held_out = PHOTO_NAMES[args.originals + args.distinct:]
    net = load_model()
    t0 = time.perf_counter()
    thr = calibrate_model(net, held_out, seed=args.seed + 1)
    cal = time.perf_counter() - t0
    save_thresholds(work / "thresholds.json", net.fingerprint(), thr)
    print(f"calibrated in {cal:.0f} s on {len(held_out)} held-out photos: near {thr.near}, similar {thr.similar}, "
          f"slack {thr.slack}", file=sys.stderr)
    methods = {
        "gemseg": lambda: gemseg_pairs(folder, work / "thresholds.json", True, work / "ix"),
        "gemseg, no verify (descriptors reused)": lambda: gemseg_pairs(folder, work / "thresholds.json", False, work / "ix"),
        "imagededup PHash": lambda: imagededup_pairs(folder, "PHash"),
        "imagededup DHash": lambda: imagededup_pairs(folder, "DHash"),
        "imagehash phash": lambda: imagehash_pairs(folder, planted.files),
    }
    results = {}
    for name, fn in methods.items():
        pairs, sec = fn()
        twin = [f for f in planted.files if f.startswith("twin_")]
        twin_fp = sum(1 for p in pairs if any(t in p for t in twin))
        results[name] = (edit_metrics(planted, pairs), sec, twin_fp)
        print(f"{name}: {sec:.1f} s", file=sys.stderr)
    print(f"\n{len(planted.files)} images ({args.originals} originals, {args.distinct} distinct photos, 1 stereo twin); "
          f"thresholds near {thr.near}, similar {thr.similar} (calibrated on {len(held_out)} other photos)\n")
    rows = []
    for name, (m, sec, twin_fp) in results.items():
        rows.append([name] + [f"{m[k][0]:.2f} / {m[k][1]:.2f} / {m[k][2]:.2f}" if k in m else "–" for k in KINDS]
                    + [twin_fp, f"{sec:.1f}"])
    print(markdown_table(["method (P / R / F1)"] + list(KINDS) + ["twin called a copy", "seconds"], rows))
    shares(planted, folder)
    best_hash = {k: max(results[n][0][k][2] for n in results if not n.startswith("gemseg")) for k in KINDS}
    ratio = [["F1 gemseg / best hash"] + [f"{results['gemseg'][0][k][2] / best_hash[k]:.2f}" if best_hash[k] else "∞"
                                          for k in KINDS]]
    print()
    print(markdown_table(["", *KINDS], ratio))


def shares(planted, folder: Path) -> None:
    """Share of tentative matches that are homography inliers (2 px at 640, what confirms a near
    pair) for each (original, edit) pair and for the stereo twin against its family."""
    from retrieval.dedup.confirm import NearVerifier
    v = NearVerifier()
    by: dict = {}
    for a, b in itertools.combinations(planted.files, 2):
        kind = planted.kind(a, b)
        if kind is None:
            continue
        label = "stereo twin vs its family" if "twin_" in a + b else (planted.edit_kind(a, b) or "two edits")
        if label == "two edits":
            continue
        r = v(folder / a, folder / b)
        by.setdefault(label, []).append((r.inliers / max(1, r.tentative), r.inliers))
    rows = [[k, len(x), f"{min(s for s, _ in x):.3f}", f"{np.median([s for s, _ in x]):.3f}",
             f"{max(s for s, _ in x):.3f}", min(i for _, i in x)] for k, x in sorted(by.items())]
    print()
    print(markdown_table(["pairs", "n", "inlier share min", "median", "max", "fewest inliers"], rows))


def make_descriptors(path: Path, n: int, d: int, seed: int = 0) -> np.ndarray:
    """``n`` clustered unit descriptors, the last 1 % planted copies of the first 1 %; saved to ``path``."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((10_000, d)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, d))
    for s in range(0, n, 100_000):
        e = min(n, s + 100_000)
        x = centres[rng.integers(0, len(centres), e - s)] + rng.standard_normal((e - s, d)).astype(np.float32) * (0.6 / np.sqrt(d))
        out[s:e] = x / np.linalg.norm(x, axis=1, keepdims=True)
    k = n // 100  # planted pairs (2m, 2m + 1), m < k: row 2m + 1 a noisy copy of row 2m
    src = out[0:2 * k:2].copy()
    cp = src + rng.standard_normal(src.shape).astype(np.float32) * (0.32 / np.sqrt(d))
    out[1:2 * k:2] = cp / np.linalg.norm(cp, axis=1, keepdims=True)
    out.flush()
    return np.arange(k)


_CHILD = """import json, sys, time, numpy as np
from retrieval.dedup.pairs import range_pairs
X = np.load(sys.argv[1], mmap_mode="r")
n = int(sys.argv[2]); X = X[:n] if n < X.shape[0] else X
t0 = time.perf_counter()
p = range_pairs(X, 0.9, exact_up_to=int(sys.argv[3]))
sec = time.perf_counter() - t0
k = min(int(sys.argv[4]) // 100, X.shape[0] // 2)
planted = {(2 * m, 2 * m + 1) for m in range(k)}
found = set(zip(p.i.tolist(), p.j.tolist()))
rec = len(planted & found) / len(planted) if planted else float("nan")
kib = next(int(ln.split()[1]) for ln in open('/proc/self/status') if ln.startswith('VmHWM'))
print(json.dumps({"seconds": sec, "pairs": len(p), "recall": rec, "rss_gib": kib / 2**20}))
"""
_FLOOR = """import numpy as np, faiss, retrieval.dedup.pairs
kib = next(int(ln.split()[1]) for ln in open('/proc/self/status') if ln.startswith('VmHWM'))
print(kib / 2**20)
"""


def bench_scale(args, work: Path) -> None:
    path = work / f"desc_{args.n}_{args.dim}.npy"
    t0 = time.perf_counter()
    make_descriptors(path, args.n, args.dim)
    print(f"generated {args.n}×{args.dim} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    env_run = lambda code, *a: json.loads(subprocess.run(  # noqa: E731
        [sys.executable, "-c", code, *map(str, a)], capture_output=True, text=True, check=True,
        cwd=HERE.parent).stdout.strip().splitlines()[-1])
    floor = env_run(_FLOOR)
    rows = []
    sub = min(args.n, 50_000)
    exact = env_run(_CHILD, path, sub, 10 ** 9, args.n)
    rows.append([f"{sub} (subset)", "exact (Flat)", f"{exact['seconds']:.1f}", f"{exact['rss_gib']:.2f} ({floor:.2f})",
                 exact["pairs"], f"{exact['recall']:.3f}"])
    full = env_run(_CHILD, path, args.n, 50_000, args.n)
    rows.append([args.n, "IVF-SQ8, re-scored", f"{full['seconds']:.1f}", f"{full['rss_gib']:.2f} ({floor:.2f})",
                 full["pairs"], f"{full['recall']:.3f}"])
    print(f"\n{args.n} descriptors of {args.dim} dimensions ({args.n * args.dim * 4 / 2 ** 30:.2f} GiB float32, "
          f"memory-mapped), threshold 0.9, 1 % planted copies at cosine ≈ 0.95\n")
    print(markdown_table(["N", "search", "seconds", "peak RSS GiB (importing)", "pairs ≥ 0.9", "recall of planted pairs"],
                         rows))
    extrapolated = exact["seconds"] * (args.n / sub) ** 2
    print(f"\nexact search of all {args.n} extrapolated from the subset (× (N / {sub})²): {extrapolated:.0f} s; "
          f"IVF-SQ8 takes {full['seconds'] / extrapolated:.3f} of it")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="quality,scale")
    ap.add_argument("--originals", type=int, default=8)
    ap.add_argument("--distinct", type=int, default=5)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", help="folder for generated files (default: a temporary one)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_dedup_") as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        if "quality" in args.only:
            bench_quality(args, work)
        if "scale" in args.only:
            bench_scale(args, work)


if __name__ == "__main__":
    main()
