"""Write a descriptor model out of gemseg: ONNX (backbone + pooling + whitening, any height and width).

  gemseg export --onnx model.onnx                                   # the default model
  gemseg export --model runs/mine/best.pt --onnx mine.onnx          # a trained checkpoint
  gemseg export --model retrievalSfM120k-resnet101-gem-b80fb85.pth --onnx r101.onnx   # cirtorch
  python tools/index.py --images photos/ --model model.onnx         # extract on onnxruntime

The graph takes a normalised image batch ``image`` (N, 3, H, W) float32 and gives ``descriptor``
(N, D), the single-scale descriptor, and ``pooled`` (N, C), what multi-scale extraction combines
around the graph (retrieval.search.onnx_extract does it as torch does). The model's mean, std,
image size, scales and fingerprint are in the file's metadata (keys gemseg.*). Exporting the same
model twice gives the same bytes. See docs/interop.md.
"""
from __future__ import annotations

import argparse
from typing import Any, Callable

from retrieval.core.cli import add_common_flags, print_json

JOB = "retrieval.jobs:run_export"


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--onnx", required=True, metavar="FILE", help="the .onnx file to write")
    ap.add_argument("--model", help="checkpoint (gemseg, cirtorch or dirtorch) or YAML config "
                                    "(default: --config's model, else the default model)")
    add_common_flags(ap, config="", device=False)
    ap.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    # input size and scales recorded as the exported model's defaults
    ap.add_argument("--image-size", type=int, metavar="PX",
                    help="long side of the image at scale 1 (default: the model's)")
    ap.add_argument("--scales", type=float, nargs="+", metavar="S",
                    help="extraction scales, e.g. --scales 1 0.7071 0.5 (default: the model's)")


def check(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if not args.onnx.endswith(".onnx"):
        ap.error("--onnx: the file name must end in .onnx")


def run(args: argparse.Namespace, job: Callable[..., Any]) -> int:
    r = job(args.onnx, model=args.model, config=args.config, opset=args.opset,
            image_size=args.image_size, scales=args.scales)
    if args.json:
        print_json(r.as_dict())
        return 0
    print(f"wrote {r.path} ({r.bytes / 2 ** 20:.1f} MiB, sha256 {r.sha256[:12]}…): model {r.fingerprint}, "
          f"{r.dim}-dimensional descriptors, input '{r.input}' (N, 3, H, W), outputs {', '.join(r.outputs)}, "
          f"in {r.seconds:.1f}s")
    return 0
