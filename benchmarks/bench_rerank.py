"""Benchmark: co-segmentation re-ranking (retrieval/search/rerank/coseg.py) against plain GeM,
collection-wide concept masking and α-QE, on generated collections with known truth.

For each collection (synthetic toy objects or real-photo objects from scikit-image; clutter 0: the
object covers ~45 % of a plain-ish image, clutter 1: ~12 % of a busy scene), one off-the-shelf
EfficientNet-Lite0 (ImageNet weights) at ``--size`` px, single scale, whole (uncropped) queries so
the clutter is on both sides (``--crop`` crops them to their boxes, as the revisited protocol does):

* **plain GeM**: descriptors of database and queries, exact ranking;
* **concept masking**: concepts learned by DFF over the whole database (k = ``--k``, the backbone's
  DFF layer, the single object factor; as ``benchmarks/bench_concepts.py`` does) and everything
  described again with concept-masked GeM;
* **α-QE**: α = 3, ``--qe`` neighbours;
* **co-seg K**: the top K of the plain ranking re-ranked by co-segmentation (k = ``--k``, default
  options: the query-anchored factor rule, weight 0.5), for K = ``--K`` (default 10 20 50);
* **co-seg + α-QE**: α-QE first, then co-seg re-ranking of its top ``--K-qe``.

Revisited mAP (Easy / Medium / Hard, %) and seconds per query (the query's description plus what
the method adds per query; concept masking's one-off learning over the database is reported apart).
The mAP runs share one feature-map cache per collection (each database image is forwarded once);
the co-seg seconds per query are timed apart on ``--time-queries`` queries with **no** cache, so
they count all K + 1 backbone passes of a single query.

    nice .venv/bin/python benchmarks/bench_rerank.py                  # the docs/benchmarks.md table
    nice .venv/bin/python benchmarks/bench_rerank.py --collections "synthetic, clutter 1.0" --K 20 --json
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import torch

from cosegment.pipeline import learn_concepts
from retrieval.core.images import crop_box, load_image
from retrieval.evaluation.metrics import ranks_from_scores, revisited_eval
from retrieval.model.concepts import ConceptMask
from retrieval.model.network import ModelConfig, build_network
from retrieval.search.rerank.coseg import CosegRerankOptions, MapCache, coseg_summary, rerank_ranks
from retrieval.search.extract import describe_pil, extract_descriptors
from retrieval.search.qe import alpha_qe
from retrieval.toy.collection import make_retrieval_collection

COLLECTIONS = {
    "synthetic, clutter 1.0": dict(source="synthetic", clutter=1.0),
    "synthetic, clutter 0.0": dict(source="synthetic", clutter=0.0),
    "photos, clutter 1.0": dict(source="photos", clutter=1.0),
    "photos, clutter 0.0": dict(source="photos", clutter=0.0),
}


def _map(ranks: np.ndarray, gnd: List[Dict[str, np.ndarray]]) -> Dict[str, float]:
    r = revisited_eval(ranks, gnd)
    return {k: 100 * float(r[k]["map"]) for k in ("easy", "medium", "hard")}


def run_collection(name: str, args: argparse.Namespace) -> List[Dict[str, Any]]:
    spec = COLLECTIONS[name]
    root = Path(args.out) / name.replace(", ", "_").replace(" ", "")
    col = make_retrieval_collection(root, n_objects=args.n_objects, views=args.views, distractors=args.distractors,
                                    image_size=args.image_size, seed=0, **spec)
    gnd = [{k: np.asarray(g[k], np.int64) for k in ("easy", "hard", "junk")} for g in col.gnd]
    net = build_network(ModelConfig(image_size=args.size, scales=[1.0]))
    nq = len(col.query_paths)
    images = [load_image(p) for p in col.query_paths]
    if args.crop:
        images = [crop_box(im, g["bbx"]) for im, g in zip(images, col.gnd)]

    def describe_queries() -> np.ndarray:
        return np.stack([describe_pil(net, im) for im in images])

    rows: List[Dict[str, Any]] = []

    def add(method: str, ranks: np.ndarray, seconds: float, **extra: Any) -> None:
        rows.append({"collection": name, "method": method, **_map(ranks, gnd),
                     "seconds_per_query": seconds / nq, **extra})
        r = rows[-1]
        print(f"  {name:24s} {method:22s} E/M/H {r['easy']:.1f} / {r['medium']:.1f} / {r['hard']:.1f}  "
              f"{r['seconds_per_query']:.3f} s/query", file=sys.stderr, flush=True)

    X = extract_descriptors(net, col.db_paths, progress=False).descriptors
    t0 = time.perf_counter()
    Q = describe_queries()
    t_desc = time.perf_counter() - t0
    S = Q @ X.T
    R = ranks_from_scores(S)
    add("plain GeM", R, t_desc)

    t0 = time.perf_counter()
    learned = learn_concepts(net.backbone, col.db_paths, k=args.k, image_size=args.size,
                             object_rule="single", max_images=200)
    t_learn = time.perf_counter() - t0
    net.set_concepts(ConceptMask(learned.H, learned.object_factors, learned.layer))
    Xm = extract_descriptors(net, col.db_paths, progress=False).descriptors
    t0 = time.perf_counter()
    Qm = describe_queries()
    t_m = time.perf_counter() - t0
    net.set_concepts(None)
    add("concept masking", ranks_from_scores(Qm @ Xm.T), t_m, learn_seconds=t_learn)

    t0 = time.perf_counter()
    Sq = alpha_qe(Q, X, args.qe, 3.0) @ X.T
    t_qe = time.perf_counter() - t0
    Rq = ranks_from_scores(Sq)
    add(f"α-QE (k={args.qe})", Rq, t_desc + t_qe)

    cache = MapCache(len(col.db_paths))  # the hits' maps, shared by every run on this collection
    tq = list(range(min(args.time_queries, nq)))

    def cold(Rk: np.ndarray, Sk: np.ndarray, opts: CosegRerankOptions) -> float:
        """Seconds per query of re-ranking with no cache: K + 1 passes, DFF, masks, scores."""
        _, r = rerank_ranks(net, [images[i] for i in tq], col.db_paths, Rk[tq], Sk[tq], opts, cache=MapCache(0))
        return r.seconds / len(tq)

    for K in args.K:
        opts = CosegRerankOptions(K=K, k=args.k)
        R2, rr = rerank_ranks(net, images, col.db_paths, R, S, opts, cache=cache)
        add(f"co-seg K={K}", R2, nq * (t_desc / nq + cold(R, S, opts)), coseg=coseg_summary(rr))
    for w in args.weights:  # other weights of the masked score, K = --K-qe (same passes, same seconds)
        opts = CosegRerankOptions(K=args.K_qe, k=args.k, weight=w)
        R2, rr = rerank_ranks(net, images, col.db_paths, R, S, opts, cache=cache)
        add(f"co-seg K={args.K_qe}, weight {w:g}", R2, nq * (t_desc / nq + cold(R, S, opts)), coseg=coseg_summary(rr))
    opts = CosegRerankOptions(K=args.K_qe, k=args.k)
    R3, rr = rerank_ranks(net, images, col.db_paths, Rq, Sq, opts, cache=cache)
    add(f"α-QE + co-seg K={args.K_qe}", R3, nq * ((t_desc + t_qe) / nq + cold(Rq, Sq, opts)),
        coseg=coseg_summary(rr))
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="bench_out/rerank", help="where the collections are generated")
    ap.add_argument("--size", type=int, default=256, help="network input long side (default 256)")
    ap.add_argument("--k", type=int, default=3, help="DFF factors (default 3)")
    ap.add_argument("--K", type=int, nargs="+", default=[10, 20, 50], help="shortlist lengths (default 10 20 50)")
    ap.add_argument("--K-qe", type=int, default=20, help="shortlist of α-QE + co-seg (default 20)")
    ap.add_argument("--weights", type=float, nargs="*", default=[1.0],
                    help="other weights of the masked score tried at K = --K-qe (default 1: replace)")
    ap.add_argument("--qe", type=int, default=2, help="α-QE neighbours (default 2)")
    ap.add_argument("--n-objects", type=int, default=10)
    ap.add_argument("--views", type=int, default=6)
    ap.add_argument("--distractors", type=int, default=60)
    ap.add_argument("--image-size", type=int, default=224, help="generated image size (default 224)")
    ap.add_argument("--crop", action="store_true", help="crop the queries to their boxes")
    ap.add_argument("--time-queries", type=int, default=2,
                    help="queries timed with no feature-map cache for the co-seg seconds (default 2)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    ap.add_argument("--collections", nargs="+", default=list(COLLECTIONS), choices=list(COLLECTIONS))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    rows = [r for c in args.collections for r in run_collection(c, args)]
    if args.json:
        print(json.dumps({"config": vars(args), "rows": rows, "seconds": time.perf_counter() - t0}, indent=2))
        return 0
    print(f"EfficientNet-Lite0 (ImageNet), {args.size} px single scale, DFF k={args.k}; {args.n_objects} objects × "
          f"{args.views} views + {args.distractors} distractors, {args.image_size} px; "
          f"{'cropped' if args.crop else 'whole (uncropped)'} queries; {time.perf_counter() - t0:.0f} s in all")
    print("| collection | method | mAP E / M / H | Δ M vs plain | s / query | × plain |")
    print("|---|---|---|---:|---:|---:|")
    plain = {r["collection"]: r for r in rows if r["method"] == "plain GeM"}
    for r in rows:
        p = plain[r["collection"]]
        print(f"| {r['collection']} | {r['method']} | {r['easy']:.1f} / {r['medium']:.1f} / {r['hard']:.1f} | "
              f"{r['medium'] - p['medium']:+.1f} | {r['seconds_per_query']:.3f} | "
              f"{r['seconds_per_query'] / p['seconds_per_query']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
