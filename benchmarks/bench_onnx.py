#!/usr/bin/env python
"""ONNX vs torch extraction: images/s of onnxruntime against torch eager on the same preloaded
batches, in one run (ratio = onnxruntime / torch; > 1 means onnxruntime is faster).

Models: the default model (ImageNet EfficientNet-Lite0 + GeM, 320 px, scales 1, 1/√2, 1/2) and
ResNet-50 + GeM (random weights: speed only) at two sizes, single scale. Each model is exported
with ``gemseg export --onnx``'s library function (:func:`retrieval.model.onnx_export.export_onnx`)
and run through :class:`retrieval.search.onnx_extract.OnnxDescriptorNet`; torch through
:func:`retrieval.search.extract.describe_batch`. Both use the same number of threads; rounds are
interleaved (torch, onnxruntime, torch, …) and the medians reported, so a passing load hits both
alike. The descriptors of the two engines are compared too (max |Δ|).

  python benchmarks/bench_onnx.py                 # CPU, threads = usable cores
  python benchmarks/bench_onnx.py --quick         # fewer images
  python benchmarks/bench_onnx.py --threads 2 --rounds 5
With onnxruntime-gpu and a CUDA device, the same rows are also measured on CUDA
(torch: bf16 autocast as tools/index.py runs it; onnxruntime: CUDAExecutionProvider, float32).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Sequence, Tuple

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import markdown_table  # noqa: E402

from retrieval.model.network import ModelConfig, build_network  # noqa: E402
from retrieval.model.onnx_export import export_onnx  # noqa: E402
from retrieval.search.extract import describe_batch, usable_cores  # noqa: E402
from retrieval.search.onnx_extract import OnnxDescriptorNet  # noqa: E402

#: (label, config, input (H, W)) — H×W is a 4:3 photo at that long side.
CASES = [
    ("default (efficientnet_lite0, 3 scales)", ModelConfig(), (240, 320)),
    ("resnet50, 1 scale", ModelConfig(backbone="resnet50", weights="none", scales=[1.0]), (272, 362)),
    ("resnet50, 1 scale", ModelConfig(backbone="resnet50", weights="none", scales=[1.0]), (768, 1024)),
]


def batches(n: int, hw: Tuple[int, int], batch: int, seed: int = 0) -> List[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(min(batch, n - i), 3, *hw, generator=g) for i in range(0, n, batch)]


def time_torch(net, xs: Sequence[torch.Tensor], scales, device: torch.device) -> Tuple[float, np.ndarray]:
    t0 = time.perf_counter()
    out = [describe_batch(net, x.to(device), scales).float().cpu().numpy() for x in xs]
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0, np.concatenate(out)


def time_ort(onet: OnnxDescriptorNet, xs: Sequence[torch.Tensor], scales) -> Tuple[float, np.ndarray]:
    t0 = time.perf_counter()
    out = [onet.describe(x, scales) for x in xs]
    return time.perf_counter() - t0, np.concatenate(out)


def run(args: argparse.Namespace, device: torch.device, providers: List[str]) -> List[List[object]]:
    rows: List[List[object]] = []
    for label, cfg, hw in CASES:
        net = build_network(cfg).to(device).eval()
        with tempfile.TemporaryDirectory() as tmp:
            rep = export_onnx(net, Path(tmp) / "m.onnx")
            onet = OnnxDescriptorNet(rep.path, threads=args.threads, providers=providers)
        net.to(device)
        n = args.images if hw[1] <= 400 else max(2, args.images // 4)
        xs = batches(n, hw, args.batch)
        time_torch(net, xs[:1], cfg.scales, device)  # warm-up both
        time_ort(onet, xs[:1], cfg.scales)
        tt, to = [], []
        for _ in range(args.rounds):
            t, a = time_torch(net, xs, cfg.scales, device)
            tt.append(t)
            t, b = time_ort(onet, xs, cfg.scales)
            to.append(t)
        t_torch, t_ort = statistics.median(tt), statistics.median(to)
        rows.append([label, f"{hw[1]}×{hw[0]}", device.type, n, n / t_torch, n / t_ort, t_torch / t_ort,
                     float(np.abs(a - b).max()), rep.bytes / 2 ** 20])
        print(f"  {label} {hw}: torch {n / t_torch:.2f} img/s, onnxruntime {n / t_ort:.2f} img/s", file=sys.stderr)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=24, help="images per round at ≤ 400 px (a quarter at 1024)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="threads of both engines (default: usable cores)")
    ap.add_argument("--quick", action="store_true", help="8 images, 2 rounds")
    args = ap.parse_args()
    if args.quick:
        args.images, args.rounds = 8, 2
    args.threads = args.threads or usable_cores()
    torch.set_num_threads(args.threads)
    import onnxruntime as ort

    print(f"torch {torch.__version__}, onnxruntime {ort.__version__}, {args.threads} threads, "
          f"batch {args.batch}, {args.rounds} rounds (medians)\n")
    rows = run(args, torch.device("cpu"), ["CPUExecutionProvider"])
    if torch.cuda.is_available() and "CUDAExecutionProvider" in ort.get_available_providers():
        rows += run(args, torch.device("cuda"), ["CUDAExecutionProvider"])
    print(markdown_table(["model", "input", "device", "images", "torch img/s", "onnxruntime img/s",
                          "ratio ort/torch", "max |Δ| descriptors", "onnx MiB"], rows))


if __name__ == "__main__":
    main()
