"""Co-segment image sets with Deep Feature Factorization (NMF of CNN activations).

  gemseg coseg --images photos/ --k 3                  # heat maps, masks, boxes in coseg_out/
  gemseg coseg --images photos/ --k 3 --masks gt/      # + Jaccard / precision / CorLoc per set
  gemseg coseg --images icoseg/images --masks icoseg/masks --compare   # all factorisers, one table
  gemseg coseg --images photos/ --k 4 --parts          # part label maps in OUT/parts/
  gemseg coseg --images photos/ --k 3 --save-concepts concepts.pt      # for concept-masked GeM
  gemseg coseg --images new/ --concepts concepts.pt    # project new images on saved concepts

A folder of images is one set; a folder of sub-folders (the iCoseg layout images/<set>/…) is one
set per sub-folder, each factorised on its own (--joint: all images as one set; loose images beside
sub-folders form a set of their own, and a note says so; so does a set of one image, whose "object"
is only its strongest region: co-segmentation needs images that share it). Ground truth:
GT_DIR/<image stem>.png (or GT_DIR/<set>/<stem>.png), non-zero = object. Writes, in OUT, one set
of files per input image (stems that clash get the set, then the extension added):
overlays/<stem>.jpg (one colour per factor, legend below), masks/<stem>.png (0/255, image size),
previews/<stem>.jpg (mask and box; overlays and previews at most 1024 px), parts/<stem>.png
(--parts: 0 = background, j+1 = factor j), boxes.json (x0, y0, x1, y1 per image) and index.html
(with the colour legend of each set). Factors are numbered from 0 (as in concept
files and the Python API, cosegment.cosegment). The model is the default one of the other tools
(EfficientNet-Lite0, ImageNet) or --config's; the layer and input size default per backbone.
The work is :func:`retrieval.jobs.run_coseg`.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, Callable

from retrieval.core.cli import add_common_flags, print_json

JOB = "retrieval.jobs:run_coseg"


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--images", required=True, help="folder of images (or of image sets, one sub-folder each)")
    ap.add_argument("--k", type=int, help="number of concepts (default 3, or the config's coseg.k)")
    add_common_flags(ap, config="YAML settings file (model: and coseg: sections) or a model checkpoint")
    ap.add_argument("--layer", help="backbone layer to factorise (default per backbone; efficientnet_lite0: block14 at 320 px)")
    ap.add_argument("--image-size", type=int, help="long side of the network input (default per backbone)")
    ap.add_argument("--factorizer", metavar="NAME", help="factoriser: nmf (default), sigmoid-nmf or deep-semi-nmf")
    ap.add_argument("--masks", metavar="GT_DIR", help="ground-truth object masks: GT_DIR/<image stem>.png")
    ap.add_argument("--part-masks", metavar="DIR", help="ground-truth part label maps (with --parts: part mIoU)")
    ap.add_argument("--parts", action="store_true",
                    help="write part label maps (OUT/parts/<stem>.png: 0 = background, j+1 = factor j)")
    ap.add_argument("--compare", action="store_true", help="run every factoriser on the same activations; print a table")
    ap.add_argument("--object-factor", help="factor(s) forming the object, numbered from 0, e.g. 1 or 0,2 "
                                            "(default: automatic, or the concept file's)")
    ap.add_argument("--threshold", help="mask threshold: otsu (default), otsu-image or a number in [0, 1]")
    ap.add_argument("--joint", action="store_true", help="treat all images as one set")
    ap.add_argument("--save-concepts", metavar="PATH", help="write the learned concepts H (k, C) with the backbone fingerprint")
    ap.add_argument("--concepts", metavar="PATH", help="project the images on saved concepts instead of learning new ones")
    ap.add_argument("--seed", type=int, help="factorisation seed (default 0)")
    ap.add_argument("--out", default="coseg_out", help="output folder (default coseg_out/)")
    ap.add_argument("--no-write", action="store_true", help="write no pictures (scores and timings only)")


def check(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.k is not None and args.k < 1:
        ap.error("--k must be ≥ 1")
    if args.concepts and args.save_concepts:
        ap.error("--concepts and --save-concepts exclude each other")
    if args.concepts and args.compare:
        ap.error("--compare learns concepts; it cannot be used with --concepts")


def run(args: argparse.Namespace, job: Callable[..., Any]) -> int:
    report = job(args.images, config=args.config, k=args.k, layer=args.layer, image_size=args.image_size,
                 factorizer=args.factorizer, threshold=args.threshold, object_factor=args.object_factor,
                 seed=args.seed, masks=args.masks, part_masks=args.part_masks, parts=args.parts,
                 compare=args.compare, joint=args.joint, concepts=args.concepts,
                 save_concepts=args.save_concepts, out=None if args.no_write else args.out, device=args.device,
                 progress=None if args.quiet else lambda line: print(line, file=sys.stderr, flush=True))
    for p, why in report.failures:
        print(f"skipped {p}: {why}", file=sys.stderr)
    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    if args.json:
        print_json(report.as_dict())
        return 0
    print("\n".join(report.text_lines()))
    return 0
