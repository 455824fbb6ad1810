#!/usr/bin/env python
"""Co-segment image sets with Deep Feature Factorization (NMF of CNN activations).

  python tools/coseg.py --images photos/ --k 3                  # heat maps, masks, boxes in coseg_out/
  python tools/coseg.py --images photos/ --k 3 --masks gt/      # + Jaccard / precision / CorLoc per set
  python tools/coseg.py --images icoseg/images --masks icoseg/masks --compare   # all factorisers, one table
  python tools/coseg.py --images photos/ --k 4 --parts          # part label maps in OUT/parts/
  python tools/coseg.py --images photos/ --k 3 --save-concepts concepts.pt      # for concept-masked GeM
  python tools/coseg.py --images new/ --concepts concepts.pt    # project new images on saved concepts

A folder of images is one set; a folder of sub-folders (the iCoseg layout images/<set>/…) is one
set per sub-folder, each factorised on its own (--joint: all images as one set). Ground truth:
GT_DIR/<image stem>.png (or GT_DIR/<set>/<stem>.png), non-zero = object. Writes, in OUT:
overlays/<stem>.jpg (one colour per concept), masks/<stem>.png (0/255, image size),
previews/<stem>.jpg (mask and box), parts/<stem>.png (--parts: 0 = background, 1..k = factor),
boxes.json (x0, y0, x1, y1 per image) and index.html. The model is the default one of the other
tools (EfficientNet-Lite0, ImageNet) or --config's; the layer and input size default per backbone.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cosegment import concept_file, dff
from cosegment.annotations import load_coseg_folder  # noqa: E402
from cosegment.factorizers import FACTORIZERS  # noqa: E402
from cosegment.pipeline import (  # noqa: E402
    CosegConfig,
    Timings,
    all_failures,
    parse_threshold,
    prepare_sets,
    score_result,
    segment_set,
    write_results,
)
from retrieval.core.backbone import (
    default_image_size,
    default_layer,
    set_threads,  # noqa: E402
)
from retrieval.core.cli import main_wrapper, print_json  # noqa: E402
from retrieval.core.config import from_dict, read_yaml  # noqa: E402
from retrieval.core.errors import ConfigError, DataError  # noqa: E402
from retrieval.loading import load_model  # noqa: E402


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", required=True, help="folder of images (or of image sets, one sub-folder each)")
    ap.add_argument("--k", type=int, help="number of concepts (default 3, or the config's coseg.k)")
    ap.add_argument("--config", help="YAML config (model: and coseg: sections) or a model checkpoint")
    ap.add_argument("--layer", help="backbone layer to factorise (default per backbone; efficientnet_lite0: block14 at 320 px)")
    ap.add_argument("--image-size", type=int, help="long side of the network input (default per backbone)")
    ap.add_argument("--factorizer", choices=list(FACTORIZERS), help="factoriser (default nmf)")
    ap.add_argument("--masks", metavar="GT_DIR", help="ground-truth object masks: GT_DIR/<image stem>.png")
    ap.add_argument("--part-masks", metavar="DIR", help="ground-truth part label maps (with --parts: part mIoU)")
    ap.add_argument("--parts", action="store_true", help="write part label maps (OUT/parts/<stem>.png)")
    ap.add_argument("--compare", action="store_true", help="run every factoriser on the same activations; print a table")
    ap.add_argument("--object-factor", help="1-based factor(s) forming the object, e.g. 2 or 1,3 (default: automatic)")
    ap.add_argument("--threshold", help="mask threshold: otsu (default), otsu-image or a number in [0, 1]")
    ap.add_argument("--joint", action="store_true", help="treat all images as one set")
    ap.add_argument("--save-concepts", metavar="PATH", help="write the learned concepts H (k, C) with the backbone fingerprint")
    ap.add_argument("--concepts", metavar="PATH", help="project the images on saved concepts instead of learning new ones")
    ap.add_argument("--seed", type=int, help="factorisation seed (default 0)")
    ap.add_argument("--out", default="coseg_out", help="output folder (default coseg_out/)")
    ap.add_argument("--no-write", action="store_true", help="write no pictures (scores and timings only)")
    ap.add_argument("--device", help="cpu | cuda (default: CUDA when available)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args(argv)
    if args.k is not None and args.k < 1:
        ap.error("--k must be ≥ 1")
    if args.concepts and args.save_concepts:
        ap.error("--concepts and --save-concepts exclude each other")
    if args.concepts and args.compare:
        ap.error("--compare learns concepts; it cannot be used with --concepts")
    return args


def coseg_config(args: argparse.Namespace) -> CosegConfig:
    raw: Dict[str, Any] = {}
    if args.config and str(args.config).endswith((".yaml", ".yml")):
        raw = dict(read_yaml(args.config).get("coseg") or {})
    cfg = from_dict(CosegConfig, raw, where=f"{args.config}: coseg" if args.config else "coseg")
    over = {"k": args.k, "layer": args.layer, "image_size": args.image_size, "factorizer": args.factorizer,
            "threshold": args.threshold, "seed": args.seed}
    cfg = dataclasses.replace(cfg, **{k: v for k, v in over.items() if v is not None})
    if args.object_factor:
        try:
            cfg.object_factors = [int(x) for x in str(args.object_factor).split(",") if x.strip()]
        except ValueError:
            raise ConfigError(f"--object-factor: expected numbers like 2 or 1,3, got {args.object_factor!r}") from None
    cfg.validate()
    return cfg


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    cfg = coseg_config(args)
    images = Path(args.images)
    if not images.exists():
        raise DataError(f"--images: no such folder: {images}")
    if not images.is_dir():
        raise DataError(f"--images: not a folder: {images}")
    sets_items = load_coseg_folder(images, masks=None, parts=None)
    sets = {name: [it.image for it in items] for name, items in sets_items.items()}
    if args.joint and len(sets) > 1:
        sets = {images.name: [p for ps in sets.values() for p in ps]}
    if args.save_concepts and len(sets) > 1:
        raise DataError(f"--save-concepts learns one set of concepts but {images} holds {len(sets)} sets; add --joint")

    set_threads()
    t0 = time.perf_counter()
    net = load_model(args.config)
    backbone = net.backbone
    t_model = time.perf_counter() - t0
    fingerprint = backbone.fingerprint()

    concepts = None
    if args.concepts:
        concepts = concept_file.load_concepts(args.concepts, expected_fingerprint=fingerprint)
        layer = args.layer or concepts.layer
        if layer != concepts.layer:
            raise ConfigError(f"--layer {layer}: the concepts in {args.concepts} were learned at layer {concepts.layer}")
        cfg.k = concepts.H.shape[0]
        image_size = cfg.image_size or concepts.image_size or default_image_size(backbone.name)
        if args.object_factor is None and concepts.object_factors is not None:
            cfg.object_factors = [j + 1 for j in concepts.object_factors]
    else:
        layer = cfg.layer or default_layer(backbone.name)
        image_size = cfg.image_size or default_image_size(backbone.name)
    if not layer:
        raise ConfigError(f"no default DFF layer for {backbone.name}; give --layer ({', '.join(backbone.layer_names())})")

    timings = Timings()
    prepared = prepare_sets(backbone, sets, layer, image_size, batch_size=cfg.batch_size, device=args.device,
                            timings=timings)
    failures = all_failures(prepared)
    prepared = {n: p for n, p in prepared.items() if p.acts}
    if not prepared:
        raise DataError(f"no image in {images} could be loaded ({len(failures)} failed, e.g. {failures[0][0]}: {failures[0][1]})"
                        if failures else f"no images in {images}")
    obj0 = [j - 1 for j in cfg.object_factors] if cfg.object_factors else None
    threshold = parse_threshold(cfg.threshold)

    results = []
    scores: Dict[str, Dict[str, Any]] = {}
    for name, prep in prepared.items():
        r = segment_set(prep, cfg.k, method=cfg.factorizer, seed=cfg.seed, threshold=threshold,
                        object_factors=obj0, max_border_ratio=cfg.max_border_ratio, parts=args.parts,
                        concepts=None if concepts is None else concepts.H, device=args.device)
        timings.factorisation += r.seconds
        results.append(r)
        s = score_result(r, args.masks, args.part_masks, images) if (args.masks or args.part_masks) else {"set": name, "images": len(r.paths)}
        s.update({"object_factors": [j + 1 for j in r.object_factors], "threshold": r.threshold, "seconds": r.seconds})
        scores[name] = s

    compare: List[Dict[str, Any]] = []
    if args.compare:
        for method in FACTORIZERS:
            rows = []
            for name, prep in prepared.items():
                r = segment_set(prep, cfg.k, method=method, seed=cfg.seed, threshold=threshold, object_factors=obj0,
                                max_border_ratio=cfg.max_border_ratio, parts=bool(args.part_masks), device=args.device)
                s = score_result(r, args.masks, args.part_masks, images) if (args.masks or args.part_masks) else {}
                s["seconds"] = r.seconds
                rows.append(s)
            agg: Dict[str, Any] = {"factorizer": method}
            for key in ("jaccard", "precision", "corloc", "part_miou", "seconds"):
                vals = [row[key] for row in rows if key in row]
                if vals:
                    agg[key] = sum(vals) if key == "seconds" else sum(vals) / len(vals)
            compare.append(agg)

    if args.save_concepts:
        r = results[0]
        concept_file.save_concepts(args.save_concepts, r.result.H, fingerprint, layer, backbone=backbone.name,
                          image_size=image_size, object_factors=r.object_factors, method=r.result.method,
                          extra={"images": len(r.paths), "k": r.result.k})

    out_doc = None
    if not args.no_write:
        summary = (f"{sum(len(r.paths) for r in results)} images, k={cfg.k}, layer {layer} at {image_size} px, "
                   f"{'projection on ' + str(args.concepts) if concepts is not None else cfg.factorizer}")
        out_doc = write_results(args.out, results, scores, summary=summary)

    doc = {
        "images": str(images), "k": cfg.k, "layer": layer, "image_size": image_size, "backbone": backbone.name,
        "factorizer": "projection" if concepts is not None else cfg.factorizer, "fingerprint": fingerprint,
        "sets": list(scores.values()), "timings": dict(timings.as_dict(), model=t_model),
        "failures": [{"path": p, "reason": why} for p, why in failures],
        "out": None if args.no_write else str(args.out),
        "boxes": None if out_doc is None else {k: v["box"] for k, v in out_doc["images"].items()},
    }
    if compare:
        doc["compare"] = compare
    if args.save_concepts:
        doc["concepts"] = str(args.save_concepts)
    if args.json:
        print_json(doc)
        return 0
    for p, why in failures:
        print(f"skipped {p}: {why}", file=sys.stderr)
    for s in scores.values():
        line = f"set {s['set']}: {s['images']} images, object factor(s) {s['object_factors']}, threshold {s['threshold']:.3f}"
        if "jaccard" in s:
            line += f" | Jaccard {s['jaccard']:.3f}  precision {s['precision']:.3f}  CorLoc {s['corloc']:.3f}"
        if "part_miou" in s:
            line += f"  part mIoU {s['part_miou']:.3f}"
        print(line)
    if compare:
        cols = [c for c in ("jaccard", "precision", "corloc", "part_miou") if any(c in r for r in compare)]
        print(f"\n{'factorizer':<15}" + "".join(f"{c:>11}" for c in cols) + f"{'seconds':>10}")
        for r in compare:
            print(f"{r['factorizer']:<15}" + "".join(f"{r.get(c, float('nan')):>11.3f}" for c in cols)
                  + f"{r['seconds']:>10.2f}")
        print()
    t = timings.as_dict()
    print(f"time: model {t_model:.1f}s, loading {t['loading']:.1f}s, backbone {t['backbone']:.1f}s, "
          f"factorisation {t['factorisation']:.2f}s (layer {layer}, {image_size} px, k={cfg.k})")
    if args.save_concepts:
        print(f"wrote concepts to {args.save_concepts}")
    if not args.no_write:
        print(f"wrote {Path(args.out) / 'index.html'}")
    return 0


if __name__ == "__main__":
    main_wrapper(main)
