#!/usr/bin/env python
"""Co-segmentation benchmarks: factoriser table, layer choice, the k = 1…4 figure, tool end to end.

    python benchmarks/bench_coseg.py table     # NMF vs sigmoid-NMF vs Deep Semi-NMF on toy + photo sets
    python benchmarks/bench_coseg.py layers    # which efficientnet_lite0 layer / input size segments best
    python benchmarks/bench_coseg.py figure    # docs/figures/dff_heatmaps_k1-4.png
    python benchmarks/bench_coseg.py e2e       # tools/coseg.py on a 50-image set: loading / backbone / factorisation
    python benchmarks/bench_coseg.py all --json

Data: ``retrieval.toy.coseg_sets.make_coseg_sets`` — synthetic sets (objects made of 3 textured parts on
varied backgrounds, 128 px) and real-photo sets (scikit-image photo objects on real textures,
224 px), written under bench_out/coseg/. Object scores use the automatic object-factor rule and
Otsu masks (what tools/coseg.py does); part mIoU uses ``--parts`` label maps and Hungarian matching.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


from cosegment.annotations import load_toy_sets  # noqa: E402
from cosegment.factorizers import FACTORIZERS  # noqa: E402
from cosegment.render import heatmap_figure, save_png  # noqa: E402
from cosegment.segmentation import Timings, prepare_sets, score_result, segment_set  # noqa: E402
from retrieval.core.backbone import build_backbone, default_image_size, default_layer, set_threads  # noqa: E402
from retrieval.core.images import load_image  # noqa: E402
from retrieval.toy.coseg_sets import make_coseg_sets  # noqa: E402

OUT = REPO / "bench_out" / "coseg"


def toy_root(kind: str, n_sets: int, per_set: int, seed: int = 11) -> Path:
    root = OUT / f"{kind}_{n_sets}x{per_set}_{seed}"
    if not (root / "coseg.json").is_file():
        if kind == "synthetic":
            make_coseg_sets(root, n_sets=n_sets, images_per_set=per_set, image_size=128, n_parts=3, seed=seed)
        else:
            make_coseg_sets(root, n_sets=n_sets, images_per_set=per_set, image_size=224, seed=seed, source="photos")
    return root


def backbone():
    set_threads()
    return build_backbone("efficientnet_lite0").eval()


def _sets(root: Path) -> Dict[str, List[Path]]:
    sets, _ = load_toy_sets(root)
    return {n: [it.image for it in items] for n, items in sets.items()}


def _mean(rows: Sequence[Dict[str, Any]], key: str) -> float:
    vals = [r[key] for r in rows if key in r]
    return float(np.mean(vals)) if vals else float("nan")


def factoriser_table(bb, k_obj: int = 3, k_parts: int = 4) -> List[Dict[str, Any]]:
    """Object Jaccard/precision/CorLoc at k_obj and part mIoU at k_parts, per factoriser and source."""
    rows = []
    layer, size = default_layer(bb.name), default_image_size(bb.name)
    for kind, root in (("synthetic", toy_root("synthetic", 6, 8)), ("photos", toy_root("photos", 9, 8))):
        prepared = prepare_sets(bb, _sets(root), layer, size)
        for method in FACTORIZERS:
            obj, parts, secs = [], [], 0.0
            for name, prep in prepared.items():
                r = segment_set(prep, k_obj, method=method)
                obj.append(score_result(r, root / "masks"))
                secs += r.seconds
                rp = segment_set(prep, k_parts, method=method, parts=True)
                parts.append(score_result(rp, None, root / "parts"))
                secs += rp.seconds
            row = {"source": kind, "factorizer": method, "sets": len(prepared),
                   "images": sum(len(p.paths) for p in prepared.values()),
                   "jaccard": _mean(obj, "jaccard"), "precision": _mean(obj, "precision"),
                   "corloc": _mean(obj, "corloc"), "part_miou": _mean(parts, "part_miou"), "seconds": secs}
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def layer_table(bb, layers: Sequence[str], sizes: Sequence[int], ks: Sequence[int] = (2, 3)) -> List[Dict[str, Any]]:
    rows = []
    for kind, root in (("synthetic", toy_root("synthetic", 6, 8)), ("photos", toy_root("photos", 9, 8))):
        sets = _sets(root)
        for size in sizes:
            for layer in layers:
                t = Timings()
                prepared = prepare_sets(bb, sets, layer, size, timings=t)
                for k in ks:
                    res = [score_result(segment_set(p, k), root / "masks") for p in prepared.values()]
                    row = {"source": kind, "layer": layer, "image_size": size, "k": k,
                           "channels": int(next(iter(prepared.values())).acts[0].shape[0]),
                           "jaccard": _mean(res, "jaccard"), "corloc": _mean(res, "corloc"),
                           "backbone_seconds": t.backbone}
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    return rows


def figure(bb, path: Path, n_images: int = 6, set_name: str = "cat_face") -> Path:
    root = toy_root("photos", 9, 8)
    paths = _sets(root)[set_name][:n_images]
    layer, size = default_layer(bb.name), default_image_size(bb.name)
    prep = prepare_sets(bb, {set_name: paths}, layer, size)[set_name]
    images = [np.asarray(load_image(p)) for p in prep.paths]
    heats = {k: segment_set(prep, k).heat for k in (1, 2, 3, 4)}
    return save_png(path, heatmap_figure(images, heats, thumb=144))


def end_to_end(n_images: int = 50, k: int = 3, device: str = "cpu") -> Dict[str, Any]:
    """tools/coseg.py on one 50-image set (real photos), wall time and its own split."""
    root = OUT / f"e2e_{n_images}"
    if not (root / "coseg.json").is_file():
        make_coseg_sets(root, n_sets=1, images_per_set=n_images, image_size=320, seed=4, source="photos")
    sub = next((root / "images").iterdir())
    cmd = [sys.executable, str(REPO / "tools" / "coseg.py"), "--images", str(sub), "--k", str(k),
           "--masks", str(root / "masks" / sub.name), "--out", str(OUT / "e2e_out"), "--json", "--device", device]
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    wall = time.perf_counter() - t
    if p.returncode != 0:
        raise RuntimeError(p.stderr)
    doc = json.loads(p.stdout)
    row = {"images": n_images, "k": k, "wall_seconds": wall, **doc["timings"],
           "jaccard": doc["sets"][0].get("jaccard"), "layer": doc["layer"], "image_size": doc["image_size"]}
    row["startup"] = wall - row["total"] - row.get("model", 0.0)  # total: the whole run, writing included
    print(json.dumps(row), flush=True)
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", nargs="?", default="all", choices=["all", "table", "layers", "figure", "e2e"])
    ap.add_argument("--layers", default="block10,block14,block15,head,block14.inner,block15.inner")
    ap.add_argument("--sizes", default="320,448")
    ap.add_argument("--figure-path", default=str(REPO / "docs" / "figures" / "dff_heatmaps_k1-4.png"))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    out: Dict[str, Any] = {}
    bb = backbone() if args.what != "e2e" else None
    if args.what in ("all", "layers"):
        out["layers"] = layer_table(bb, args.layers.split(","), [int(s) for s in args.sizes.split(",")])
    if args.what in ("all", "table"):
        out["table"] = factoriser_table(bb)
    if args.what in ("all", "figure"):
        out["figure"] = str(figure(bb, Path(args.figure_path)))
        print(f"wrote {out['figure']}")
    if args.what in ("all", "e2e"):
        out["e2e"] = end_to_end()
    if args.json:
        print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
