#!/usr/bin/env python
"""Descriptor extraction speed, as ratios against the raw torchvision backbone forward in the
same run.

1. Single-scale extraction (``describe_batch``: forward + GeM + L2 + whitening slot) against the
   raw backbone forward on the same preloaded batch (goal ≥ 0.95×).
2. Files → descriptors end to end (``extract_descriptors``: JPEG decode in DataLoader workers,
   resize, batching by size, forward, pooling) against the raw forward, for ResNet-50/101 at 362
   and 1024 px and the default EfficientNet-Lite0.
3. ``--photos DIR``: the **default model** (ImageNet EfficientNet-Lite0, 320 px, three scales) on
   real photos, files → descriptors (``extract_descriptors`` with its automatic workers, and with
   0 / 1 / 2 workers) against a **plain loop** in one process (open → resize → forward → GeM, same
   scales, batch 1), with the plain loop's time split into decoding + resizing and the forward
   pass. Rounds are interleaved (plain, automatic, 0, 1, 2 workers, …) and the medians reported,
   so a passing load hits every side alike.

  python benchmarks/bench_extract.py            # CPU (here: 2 cores)
  python benchmarks/bench_extract.py --quick    # fewer images and sizes
  python benchmarks/bench_extract.py --photos /tmp/demo/collection/images --rounds 5   # part 3 only
On a GPU machine the same script runs with bf16 autocast + channels_last.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import best_time, markdown_table  # noqa: E402

from retrieval.core.image_listing import list_images  # noqa: E402
from retrieval.core.images import load_image, resize_long_side, to_tensor  # noqa: E402
from retrieval.model.network import ModelConfig, build_network  # noqa: E402
from retrieval.search.extract import _auto_workers, describe_batch, extract_descriptors, resolve_device  # noqa: E402


def raw_forward(name: str) -> nn.Module:
    """The torchvision backbone with its classifier cut off, random init (speed only)."""
    if name == "efficientnet_lite0":
        from efficientnet_lite_pytorch import EfficientNet

        m = EfficientNet.from_name("efficientnet-lite0", image_size=None)

        class Feat(nn.Module):
            def __init__(self):
                super().__init__()
                self.m = m

            def forward(self, x):
                return self.m.extract_features(x)

        return Feat().eval()
    import torchvision.models as tvm

    m = getattr(tvm, name)(weights=None)
    return nn.Sequential(*list(m.children())[:-2]).eval()


def make_jpegs(folder: Path, n: int, size: int, seed: int = 0) -> list:
    """Photo-like JPEGs at 4:3, long side 1.5×size (so decode + resize cost is real)."""
    from skimage import data as skd  # demo extra

    base = Image.fromarray(skd.astronaut())
    rng = np.random.default_rng(seed)
    w, h = int(size * 1.5), int(size * 1.5 * 3 / 4)
    paths = []
    for i in range(n):
        x0, y0 = rng.integers(0, 100, 2)
        img = base.crop((x0, y0, x0 + 400, y0 + 300)).resize((w, h), Image.BILINEAR)
        p = folder / f"im{i:03d}.jpg"
        img.save(p, quality=90)
        paths.append(p)
    return paths


def run(backbones, sizes, n_files, batch, device, repeat):
    dev = resolve_device(device)
    rows_a, rows_b = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name in backbones:
            for size in sizes:
                h, w = int(size * 3 / 4), size
                net = build_network(ModelConfig(backbone=name, weights="none", image_size=size, scales=[1.0])).to(dev)
                raw = raw_forward(name).to(dev)
                x = torch.randn(batch, 3, h, w, device=dev)
                ctx = (torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda"
                       else torch.autocast("cpu", enabled=False))
                if dev.type == "cuda":
                    raw = raw.to(memory_format=torch.channels_last)
                    net = net.to(memory_format=torch.channels_last)

                def do_raw():
                    with torch.inference_mode(), ctx:
                        raw(x.contiguous(memory_format=torch.channels_last) if dev.type == "cuda" else x)
                    if dev.type == "cuda":
                        torch.cuda.synchronize()

                def do_ours():
                    describe_batch(net, x, [1.0])
                    if dev.type == "cuda":
                        torch.cuda.synchronize()

                # interleaved rounds, best of each: load spikes hit both sides alike
                t_raw, t_ours = float("inf"), float("inf")
                for _ in range(repeat):
                    t_raw = min(t_raw, best_time(do_raw, 1, warmup=0 if t_raw < float("inf") else 1))
                    t_ours = min(t_ours, best_time(do_ours, 1, warmup=0 if t_ours < float("inf") else 1))
                raw_ips = batch / t_raw
                rows_a.append([name, f"{size}×{h}", batch, raw_ips, batch / t_ours, t_raw / t_ours])

                folder = Path(tmp) / f"{name}_{size}"
                folder.mkdir()
                paths = make_jpegs(folder, n_files, size)
                extract_descriptors(net, paths[:2], batch_size=batch, workers=0, device=dev, progress=False)
                ex = extract_descriptors(net, paths, batch_size=batch, device=dev, progress=False)
                rows_b.append([name, size, len(paths), raw_ips, ex.images_per_second, ex.images_per_second / raw_ips])
                print(f"  {name} {size}px: raw {raw_ips:.2f} img/s, batch {batch / t_ours:.2f}, files {ex.images_per_second:.2f}",
                      file=sys.stderr)
    print(f"\nDevice: {dev} ({torch.get_num_threads()} threads), torch {torch.__version__}\n")
    print("Single-scale extraction vs raw backbone forward, same preloaded batch:\n")
    print(markdown_table(["backbone", "input", "batch", "raw forward img/s", "describe_batch img/s", "ratio"], rows_a))
    print("\nFiles → descriptors end to end vs raw forward:\n")
    print(markdown_table(["backbone", "long side", "files", "raw forward img/s", "files→descriptors img/s", "ratio"], rows_b))


def plain_loop(net, paths, device) -> tuple:
    """The baseline: one process, one image at a time: open → resize → forward → GeM (the model's
    scales). Returns ``(total s, decode + resize s, forward s)``."""
    size, scales = net.config.image_size, list(net.config.scales)
    t_io = t_fwd = 0.0
    t0 = time.perf_counter()
    for p in paths:
        t1 = time.perf_counter()
        x = to_tensor(resize_long_side(load_image(p), size), net.backbone.mean, net.backbone.std)[None].to(device)
        t2 = time.perf_counter()
        describe_batch(net, x, scales)
        t_io, t_fwd = t_io + t2 - t1, t_fwd + time.perf_counter() - t2
    return time.perf_counter() - t0, t_io, t_fwd


def photos_part(folder: str, n: int, rounds: int, batch: int, device) -> None:
    """Part 3 (module docstring): the default model on real photos, files → descriptors vs a plain loop."""
    dev = resolve_device(device)
    paths = [str(p) for p in list_images(folder)][:n]
    net = build_network(ModelConfig()).to(dev).eval()  # the default model: ImageNet weights, 320 px, 3 scales
    auto = _auto_workers(len(paths))
    variants = [("auto", None), ("0", 0), ("1", 1), ("2", 2)]
    plain_loop(net, paths[:2], dev)  # warm-up
    extract_descriptors(net, paths[:2], batch_size=batch, workers=0, device=dev, progress=False)
    times = {k: [] for k in ["plain"] + [v for v, _ in variants]}
    io, fwd = [], []
    for r in range(rounds):
        t, t_io, t_fwd = plain_loop(net, paths, dev)
        times["plain"].append(t)
        io.append(t_io)
        fwd.append(t_fwd)
        for name, w in variants:
            ex = extract_descriptors(net, paths, batch_size=batch, workers=w, device=dev, progress=False)
            times[name].append(ex.seconds)
        print(f"  round {r + 1}/{rounds}: " + "  ".join(f"{k} {v[-1]:.1f}s" for k, v in times.items()), file=sys.stderr)
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio_rounds = [p / a for p, a in zip(times["plain"], times["auto"])]
    print(f"\nDefault model (efficientnet_lite0, {net.config.image_size} px, scales {net.config.scales}) on "
          f"{len(paths)} photos of {folder}; {dev}, {torch.get_num_threads()} torch threads, "
          f"{len(__import__('os').sched_getaffinity(0))} cores; automatic workers here: {auto}; "
          f"batch {batch}; medians of {rounds} interleaved rounds\n")
    rows = [["plain loop (one process, batch 1)", len(paths) / med["plain"], 1.0]]
    for name, w in variants:
        label = f"files → descriptors, workers {'automatic (' + str(auto) + ')' if w is None else w}"
        rows.append([label, len(paths) / med[name], med["plain"] / med[name]])
    print(markdown_table(["", "img/s", "ratio to the plain loop"], rows))
    print(f"\nplain-loop ratio (automatic workers), per round: {', '.join(f'{x:.3f}' for x in ratio_rounds)}; "
          f"median {statistics.median(ratio_rounds):.3f}")
    print(f"where the plain loop's time goes (median): decode + resize {statistics.median(io):.2f}s, "
          f"forward + GeM {statistics.median(fwd):.2f}s of {med['plain']:.2f}s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--device")
    ap.add_argument("--batch", type=int, help="images per forward (default 4; 8 with --photos, the extract: default)")
    ap.add_argument("--photos", help="folder of real photos: run part 3 only (default model vs a plain loop)")
    ap.add_argument("--n", type=int, default=52, help="photos used by --photos")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds of --photos")
    args = ap.parse_args()
    if args.photos:
        photos_part(args.photos, args.n, args.rounds, args.batch or 8, args.device)
        return
    batch = args.batch or 4
    if args.quick:
        run(["efficientnet_lite0", "resnet50"], [362], 8, batch, args.device, 6)
    else:
        run(["efficientnet_lite0"], [362], 24, batch, args.device, 6)
        run(["resnet50", "resnet101"], [362, 1024], 8, batch, args.device, 2)


if __name__ == "__main__":
    main()
