#!/usr/bin/env python
"""What an index run pays for being resumable, and what an interruption then costs.

:func:`retrieval.search.collection.index_images` describes its images in chunks written as shards
beside the index (:mod:`retrieval.search.resumable_extract`) instead of in one call. Protocol (one
run, one machine; every time is a ratio against the baseline of the same run):

* **baseline**: ``index_images`` with the description done in one ``extract_descriptors`` call
  (what it did before issue 27: the chunking replaced by a single call, nothing else changed);
* **chunked**: ``index_images`` as it is (chunks of 32, then doubling towards 30 s each);
* **interrupted + resumed**: the run stopped (``KeyboardInterrupt``) once half of the images are
  described, then run again: the two runs' total time.

Each on a new index folder, ``--images`` smooth random JPEGs (96×128), a random-init ResNet-18 at
``--size`` px, one scale, batch 8; decoding in the main process (``--workers 0``, what 1–2 cores
choose) and with worker processes (``--workers 2``, started again for every chunk). Best of
``--repeat`` runs, as wall time and as CPU time (this process and its loader workers: less
sensitive to other work on a shared machine).

    python benchmarks/bench_resume.py                 # 320 images at 128 px
    python benchmarks/bench_resume.py --images 1000 --json bench_out/resume.json
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import retrieval.search.collection as collection  # noqa: E402
import retrieval.search.resumable_extract as rx  # noqa: E402
from benchmarks.common import markdown_table  # noqa: E402
from retrieval.model.network import ModelConfig, build_network  # noqa: E402
from retrieval.search.extract import extract_descriptors  # noqa: E402


def _images(folder: Path, n: int) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        small = rng.random((6, 8, 3))
        a = np.asarray(Image.fromarray((small * 255).astype(np.uint8)).resize((128, 96), Image.Resampling.BICUBIC))
        Image.fromarray(a).save(folder / f"img{i:05d}.jpg", quality=90)


def _one_call(net, paths, stats, out, **kw):
    """The description as index_images did it before issue 27: one call, nothing kept."""
    kw.pop("desc", None)
    return extract_descriptors(net, paths, desc="index", **kw), 0


class _Stop(KeyboardInterrupt):
    pass


def _stop_after(n: int):
    """An extract_descriptors that interrupts the run once ``n`` images are described."""
    done = [0]

    def fn(net, paths, **kw):
        if done[0] >= n:
            raise _Stop
        ex = extract_descriptors(net, paths, **kw)
        done[0] += len(paths)
        return ex
    return fn


def _cpu() -> float:
    """CPU seconds of this process and its reaped children (the loader's workers)."""
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


def run(n_images: int, size: int, repeat: int) -> List[Dict[str, Any]]:
    net = build_network(ModelConfig(backbone="resnet18", weights="none", image_size=size, scales=[1.0]))
    root = Path(tempfile.mkdtemp(prefix="bench_resume_"))
    rows = []
    try:
        _images(root / "img", n_images)
        k = [0]

        def index(mode: str, workers: int) -> tuple:
            k[0] += 1
            out = root / f"ix{k[0]}"
            t0, c0 = time.perf_counter(), _cpu()
            if mode == "baseline":
                saved = collection.extract_resumably
                collection.extract_resumably = _one_call
                try:
                    collection.index_images(net, root / "img", out, workers=workers, progress=False)
                finally:
                    collection.extract_resumably = saved
            elif mode == "chunked":
                collection.index_images(net, root / "img", out, workers=workers, progress=False)
            else:
                saved = rx.extract_descriptors
                rx.extract_descriptors = _stop_after(n_images // 2)
                try:
                    collection.index_images(net, root / "img", out, workers=workers, progress=False)
                except _Stop:
                    pass
                finally:
                    rx.extract_descriptors = saved
                rep = collection.index_images(net, root / "img", out, workers=workers, progress=False)
                assert rep.resumed >= n_images // 2 - 1 and rep.total == n_images, rep
            return time.perf_counter() - t0, _cpu() - c0

        index("chunked", 0)  # warm-up (thread pools, allocator)
        for workers in (0, 2):
            runs = {m: [index(m, workers) for _ in range(repeat)] for m in ("baseline", "chunked", "interrupted + resumed")}
            wall = {m: min(w for w, _ in r) for m, r in runs.items()}
            cpu = {m: min(c for _, c in r) for m, r in runs.items()}
            for m in runs:
                rows.append({"workers": workers, "mode": m, "seconds": round(wall[m], 3),
                             "vs_baseline": round(wall[m] / wall["baseline"], 3), "cpu_seconds": round(cpu[m], 3),
                             "cpu_vs_baseline": round(cpu[m] / cpu["baseline"], 3)})
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=320)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--json", help="also write the rows here")
    a = ap.parse_args()
    rows = run(a.images, a.size, a.repeat)
    print(f"{a.images} images, ResNet-18 (random) at {a.size} px, best of {a.repeat}\n")
    print(markdown_table(["workers", "mode", "wall s", "wall vs baseline", "CPU s", "CPU vs baseline"],
                         [[r["workers"], r["mode"], r["seconds"], r["vs_baseline"], r["cpu_seconds"],
                           r["cpu_vs_baseline"]] for r in rows]))
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
