"""Benchmark: plain GeM vs concept-masked GeM (retrieval/model/concepts.py) on generated collections.

For each collection (synthetic toy objects or real-photo objects from scikit-image, cluttered or
not) and each network (off-the-shelf EfficientNet-Lite0 with ImageNet weights; optionally a
fine-tuned checkpoint, whitening removed so both poolings are compared raw):

1. describe the database and the queries (whole query images, not cropped to their boxes, so the
   clutter is on both sides) at ``--size`` px, single scale, plain GeM → revisited mAP (E/M/H);
2. learn concepts by DFF over the database images with that network's backbone (NMF, k = ``--k``,
   the default layer of :mod:`cosegment.dff`, the single object factor of
   :func:`cosegment.dff.choose_object_factor`) and describe everything again with concept-masked
   GeM → mAP; also the share of images where the mask fell back to plain GeM.

    .venv/bin/python benchmarks/bench_concepts.py                               # off-the-shelf only
    .venv/bin/python benchmarks/bench_concepts.py --finetuned runs/toy_sup/best.pt --json
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

from cosegment.pipeline import learn_concepts  # noqa: E402
from retrieval.evaluation.metrics import ranks_from_scores, revisited_eval  # noqa: E402
from retrieval.model.checkpoint import load_checkpoint  # noqa: E402
from retrieval.model.concepts import ConceptMask  # noqa: E402
from retrieval.model.network import ModelConfig, build_network  # noqa: E402
from retrieval.search.extract import extract_descriptors  # noqa: E402
from retrieval.toy.collection import make_retrieval_collection  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

COLLECTIONS = {
    "synthetic, clutter 1.0": dict(source="synthetic", clutter=1.0),
    "synthetic, clutter 0.0": dict(source="synthetic", clutter=0.0),
    "photos, clutter 1.0": dict(source="photos", clutter=1.0),
    "photos, clutter 0.0": dict(source="photos", clutter=0.0),
}


def _evaluate(net: Any, col: Any, size: int) -> Dict[str, float]:
    X = extract_descriptors(net, col.db_paths, image_size=size, scales=[1.0], progress=False).descriptors
    Q = extract_descriptors(net, col.query_paths, image_size=size, scales=[1.0], progress=False).descriptors
    gnd = [{k: np.asarray(g[k], np.int64) for k in ("easy", "hard", "junk")} for g in col.gnd]
    r = revisited_eval(ranks_from_scores(Q @ X.T), gnd)
    return {k: 100 * float(r[k]["map"]) for k in ("easy", "medium", "hard")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="bench_out/concepts", help="where the collections are generated")
    ap.add_argument("--finetuned", help="a fine-tuned checkpoint (tools/train_gem.py best.pt) to compare too")
    ap.add_argument("--size", type=int, default=256, help="network input long side (default 256)")
    ap.add_argument("--k", type=int, default=3, help="DFF factors (default 3)")
    ap.add_argument("--n-objects", type=int, default=9)
    ap.add_argument("--views", type=int, default=6)
    ap.add_argument("--distractors", type=int, default=30)
    ap.add_argument("--image-size", type=int, default=192, help="generated image size (default 192)")
    ap.add_argument("--collections", nargs="+", default=list(COLLECTIONS), choices=list(COLLECTIONS))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    nets = {"off-the-shelf": build_network(ModelConfig(image_size=args.size, scales=[1.0]))}
    if args.finetuned:
        ft = load_checkpoint(args.finetuned)
        ft.clear_whitening()
        nets["fine-tuned"] = ft
    rows: List[Dict[str, Any]] = []
    for cname in args.collections:
        spec = COLLECTIONS[cname]
        root = Path(args.out) / cname.replace(", ", "_").replace(" ", "")
        col = make_retrieval_collection(root, n_objects=args.n_objects, views=args.views,
                                        distractors=args.distractors, image_size=args.image_size, seed=0,
                                        **spec)
        for nname, net in nets.items():
            t0 = time.perf_counter()
            net.set_concepts(None)
            plain = _evaluate(net, col, args.size)
            learned = learn_concepts(net.backbone, col.db_paths, k=args.k, image_size=args.size,
                                     object_rule="single", max_images=200)
            layer, objs = learned.layer, learned.object_factors
            cm = ConceptMask(learned.H, objs, layer)
            net.set_concepts(cm)
            masked = _evaluate(net, col, args.size)
            net.set_concepts(None)
            fb = cm.stats["fallback"] / max(cm.stats["images"], 1)
            rows.append({"collection": cname, "network": nname, "plain": plain, "masked": masked,
                         "fallback": fb, "layer": layer, "object_factors": objs,
                         "seconds": time.perf_counter() - t0})
            if not args.json:
                print(f"  {cname:24s} {nname:14s} plain M {plain['medium']:.2f}  masked M "
                      f"{masked['medium']:.2f}  ({time.perf_counter() - t0:.0f}s)", file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps({"config": vars(args), "rows": rows}, indent=2))
        return 0
    print(f"EfficientNet-Lite0, {args.size} px single scale, DFF k={args.k} on the database "
          f"({rows[0]['layer'] if rows else ''}); {args.n_objects} objects × {args.views} views + "
          f"{args.distractors} distractors, {args.image_size} px; whole (uncropped) queries")
    print("| collection | network | plain GeM E / M / H | concept-masked E / M / H | Δ M | fallback |")
    print("|---|---|---|---|---:|---:|")
    for r in rows:
        p, m = r["plain"], r["masked"]
        print(f"| {r['collection']} | {r['network']} | {p['easy']:.1f} / {p['medium']:.1f} / {p['hard']:.1f} | "
              f"{m['easy']:.1f} / {m['medium']:.1f} / {m['hard']:.1f} | {m['medium'] - p['medium']:+.1f} | "
              f"{100 * r['fallback']:.0f} % |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
