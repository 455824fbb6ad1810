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

**The re-ranking steps of the query path** (``--part steps``; issue 21): on the same collections and
the demo's (``demo``: photos, clutter 0, 8 objects × 6 views + 12 distractors, 256 px), the
database indexed (Flat) and every query run through :class:`retrieval.search.query.QueryPath` with
each step alone and stacked (``qe``, ``superglobal``, ``diffusion``, ``sv``, with their defaults
unless the method's name says otherwise): revisited E/M/H mAP and milliseconds per query that
the steps add (CPU, ``--threads`` threads; ``sv`` at query time, its feature cache cleared before
each method; ``sv (cached)``: the same run again with the hits' features in the cache).
``--part speed``: ``superglobal`` and ``diffusion`` on ``--big`` synthetic descriptors
(clustered, ``--big-dim``-d): ms per query, graph build seconds and bytes per image; and the
bytes per image of cached local features.

``--part sweep`` (issue 21, goal B): the stacks of ``SWEEP_GRID`` (qe, diffusion, superglobal and
sv settings, alone and stacked; ``--grid object``: ``SWEEP_GRID_OBJECT``, sv counting only the
inliers on the query's co-segmented object, alone and after coseg or superglobal) on the
``--collections`` generated with the held-out ``--seeds`` (never 0, the table's), ranked by a rule
fixed before any run (:func:`sweep_score`: mean over those collections of min(Medium, Hard) as a
ratio to plain); the chosen stack is then run on the collections of ``--test-seeds`` (default 0,
the table's).

    nice .venv/bin/python benchmarks/bench_rerank.py --part steps      # the issue-21 table
    nice .venv/bin/python benchmarks/bench_rerank.py --part speed --big 100000
    nice .venv/bin/python benchmarks/bench_rerank.py --part sweep --collections "photos, clutter 1.0" --seeds 1 2 3
    nice .venv/bin/python benchmarks/bench_rerank.py --part sweep --grid object --collections "photos, clutter 1.0"
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from cosegment.pipeline import learn_concepts
from retrieval.core.images import crop_box, load_image
from retrieval.evaluation.metrics import ranks_from_scores, revisited_eval
from retrieval.model.concepts import ConceptMask
from retrieval.model.network import ModelConfig, build_network
from retrieval.search.expansion import alpha_qe
from retrieval.search.extract import describe_pil, extract_descriptors
from retrieval.search.index import ImageIndex
from retrieval.search.knn_graph import KnnGraph, build_knn_graph
from retrieval.search.local_features import sift_features
from retrieval.search.query import Described, QueryPath
from retrieval.search.rerank import sv as sv_module
from retrieval.search.rerank.coseg import CosegRerankOptions, MapCache, coseg_summary, rerank_ranks
from retrieval.search.rerank.diffusion import DiffusionParams, diffusion_rerank
from retrieval.search.rerank.step import RerankContext
from retrieval.search.rerank.superglobal import SuperGlobal
from retrieval.toy.collection import make_retrieval_collection

COLLECTIONS = {
    "synthetic, clutter 1.0": dict(source="synthetic", clutter=1.0),
    "synthetic, clutter 0.0": dict(source="synthetic", clutter=0.0),
    "photos, clutter 1.0": dict(source="photos", clutter=1.0),
    "photos, clutter 0.0": dict(source="photos", clutter=0.0),
}
#: the demo's collection (retrieval/demo.py defaults), for --part steps
DEMO = dict(source="photos", clutter=0.0, n_objects=8, views=6, distractors=12, image_size=256)
#: --part steps: (label, steps as the CLI writes them)
#: small-collection settings (a query has ~5 relevant images here, hundreds on ROxford): ``DS``, ``SG``
DS = "diffusion:k=10:alpha=0.9:kq=3"
SG = "superglobal:M=20:K=1"
#: sv with the backbone's own local features (DELG-like) instead of RootSIFT
BB = "sv:features=backbone:threshold_px=20"
BB50 = "sv:K=50:features=backbone:threshold_px=20"
#: the same with a looser ratio test and inlier rule (feature-map cells are less distinctive than SIFT)
BB9 = "sv:features=backbone:threshold_px=20:ratio=0.9:min_inliers=5:saturation=15"
STEP_METHODS = [
    ("plain", ""),
    ("qe", "qe:k=2"),
    ("superglobal", "superglobal"),
    (SG, SG),
    ("diffusion", "diffusion"),
    (DS, DS),
    ("sv", "sv"),
    ("sv (cached)", "sv"),
    ("sv:K=50", "sv:K=50"),
    ("superglobal,diffusion", "superglobal,diffusion"),
    (f"{SG},sv:K=50", f"{SG},sv:K=50"),
    (f"sv:K=50,{DS}", f"sv:K=50,{DS}"),
    ("qe:k=2,sv:K=50", "qe:k=2,sv:K=50"),
    (f"qe:k=2,{DS}", f"qe:k=2,{DS}"),
    (f"{SG},{DS}", f"{SG},{DS}"),
    (BB, BB),
    (BB50, BB50),
    (BB9, BB9),
]


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


def steps_root(args: argparse.Namespace, name: str, seed: int) -> Path:
    """Where --part steps / sweep generate collection ``name`` with ``seed`` (seed 0: the table's)."""
    return Path(args.out) / ("steps_" + name.replace(", ", "_").replace(" ", "") + (f"_seed{seed}" if seed else ""))


def run_steps(name: str, args: argparse.Namespace, seed: int = 0,
              methods: Optional[List[Tuple[str, str]]] = None, keep_features: bool = False) -> List[Dict[str, Any]]:
    """--part steps on one collection (module docstring), generated with ``seed``; ``methods``:
    (label, steps) pairs (default STEP_METHODS, filtered by --skip / --only); ``keep_features``:
    keep ``sv``'s feature cache across methods (the mAP is the same; only the times change)."""
    spec = dict(DEMO) if name == "demo" else dict(COLLECTIONS[name], n_objects=args.n_objects, views=args.views,
                                                   distractors=args.distractors, image_size=args.image_size)
    col = make_retrieval_collection(steps_root(args, name, seed), seed=seed, **spec)
    gnd = [{k: np.asarray(g[k], np.int64) for k in ("easy", "hard", "junk")} for g in col.gnd]
    net = build_network(ModelConfig(image_size=args.size, scales=[1.0]))
    X = extract_descriptors(net, col.db_paths, progress=False).descriptors
    images = [load_image(p) for p in col.query_paths]
    if args.crop:
        images = [crop_box(im, g["bbx"]) for im, g in zip(images, col.gnd)]
    Q = np.stack([describe_pil(net, im) for im in images]).astype(np.float32)
    index = ImageIndex(X.shape[1], "Flat", fingerprint=net.fingerprint())
    index.add(X, col.db_paths)
    nq, N = len(images), X.shape[0]
    rows: List[Dict[str, Any]] = []
    plain_t = None
    if methods is None:
        known = [label for label, _ in STEP_METHODS]
        methods = [(label, steps) for label, steps in STEP_METHODS + [(m, m) for m in args.only if m not in known]
                   if label not in args.skip and (not args.only or label == "plain" or label in args.only)]
    for label, steps in methods:
        if not keep_features and not label.endswith("(cached)"):
            sv_module.CACHE = sv_module.FeatureCache()  # query-time features, nothing cached before
        path = QueryPath(index, net, steps)
        described = Described(Q.copy(), [str(p) for p in col.query_paths], np.full(nq, -1, np.int64),
                              [None] * nq, [(lambda im=im: im) for im in images], dict(enumerate(images)))
        t0 = time.perf_counter()
        res = path.search(described, top=N)
        t = time.perf_counter() - t0
        plain_t = t if label == "plain" else plain_t
        r = {"collection": name, "seed": seed, "method": label, **_map(res.ids, gnd),
             "ms_per_query": 1000 * (t - (plain_t or 0.0)) / nq, "notes": res.notes}
        rows.append(r)
        print(f"  {name:24s} {label:24s} E/M/H {r['easy']:.1f} / {r['medium']:.1f} / {r['hard']:.1f}  "
              f"{r['ms_per_query']:.1f} ms/query", file=sys.stderr, flush=True)
    return rows


#: --part sweep: the grid of stacks tried on held-out collections (issue 21, goal B). Fixed before
#: any run on the table's collections (seed 0); every setting is one the papers' or the table's
#: small-collection settings are in the range of.
SWEEP_QE = ["qe:k=1", "qe:k=2", "qe:k=3"]
SWEEP_DIFFUSION = [f"diffusion:k={k}:alpha={a}:kq={q}"
                   for k in (5, 10, 20) for a in (0.8, 0.9, 0.99) for q in (1, 3, 5)]
SWEEP_SG = [f"superglobal:M={m}:K={k}" for m in (10, 20, 50) for k in (1, 2, 3)]
SWEEP_SV = ["sv", "sv:K=50"]
SWEEP_GRID = (["", *SWEEP_QE, *SWEEP_DIFFUSION, *SWEEP_SG, *SWEEP_SV]
              + [f"{v},{d}" for v in SWEEP_SV for d in SWEEP_DIFFUSION]
              + [f"{q},{v}" for q in SWEEP_QE for v in SWEEP_SV]
              + [f"{g},{v}" for g in SWEEP_SG for v in SWEEP_SV]
              + [f"{q},{d}" for q in SWEEP_QE for d in SWEEP_DIFFUSION]
              + [f"{q},{v},{d}" for q in SWEEP_QE[:2] for v in SWEEP_SV[1:] for d in SWEEP_DIFFUSION])

#: --part sweep --grid object: the second grid (issue 21, goal B), fixed after the first sweep and
#: before any run of it: ``sv`` counting only the inliers on the query's co-segmented object
#: (``region=object``), alone, after ``coseg`` (which then hands sv its object: same K), and after
#: the first grid's choice; K / object_K / weight / (saturation, min_inliers) about the defaults.
_SV_OBJECT = [(K, ok, f"sv:K={K}:region=object:object_K={ok}:weight={w:g}:saturation={s}:min_inliers={m}")
              for K in (20, 50) for ok in (10, 20) for w in (0.2, 1.0) for s, m in ((10, 3), (40, 12))]
SWEEP_SV_OBJECT = [v for _, _, v in _SV_OBJECT]
SWEEP_COSEG = [f"coseg:K={k}:weight=1" for k in (10, 20, 50)]
SWEEP_GRID_OBJECT = (["", "superglobal:M=10:K=1", *SWEEP_COSEG, *SWEEP_SV_OBJECT]
                     + [f"coseg:K={ok}:weight=1,{v}" for _, ok, v in _SV_OBJECT]
                     + [f"superglobal:M=10:K=1,{v}" for K, ok, v in _SV_OBJECT if (K, ok) == (50, 20)])
SWEEP_GRIDS = {"first": SWEEP_GRID, "object": SWEEP_GRID_OBJECT}


def sweep_score(rows: List[Dict[str, Any]], method: str) -> Tuple[float, float]:
    """The selection rule of --part sweep, fixed before any run: over the held-out collections, the
    mean of min(Medium, Hard) mAP as a ratio to plain on the same collection (the goal asks for both
    ratios at once); ties broken by the lower mean ms per query. Returns (score, −ms)."""
    plain = {(r["collection"], r["seed"]): r for r in rows if r["method"] == "plain"}
    mine = [r for r in rows if r["method"] == method]
    ratios = [min(r["medium"] / plain[(r["collection"], r["seed"])]["medium"],
                  r["hard"] / plain[(r["collection"], r["seed"])]["hard"]) for r in mine]
    return float(np.mean(ratios)), -float(np.mean([r["ms_per_query"] for r in mine]))


def run_sweep(args: argparse.Namespace) -> Dict[str, Any]:
    """--part sweep: every stack of SWEEP_GRID on the collections of --collections generated with
    each of --seeds (held out: not the table's seed 0), the stack chosen by :func:`sweep_score`,
    then the chosen stack (and plain) on the same collections with each of --test-seeds (0: the
    table's)."""
    if 0 in args.seeds or set(args.seeds) & set(args.test_seeds):
        raise SystemExit("--part sweep: seed 0 and every --test-seeds are test collections; choose on other seeds")
    grid = SWEEP_GRIDS[args.grid]
    methods = [("plain" if not m else m, m) for m in grid]
    rows = [r for c in args.collections for seed in args.seeds
            for r in run_steps(c, args, seed=seed, methods=methods, keep_features=True)]
    ranked = sorted({r["method"] for r in rows if r["method"] != "plain"}, key=lambda m: sweep_score(rows, m),
                    reverse=True)
    best = ranked[0]
    print(f"  chosen on seeds {args.seeds}: {best}  (score {sweep_score(rows, best)[0]:.3f})", file=sys.stderr)
    test = [r for c in args.collections for seed in args.test_seeds
            for r in run_steps(c, args, seed=seed, methods=[("plain", ""), (best, best)])]
    return {"grid": len(grid), "grid_name": args.grid, "validation": rows,
            "ranked": [(m, sweep_score(rows, m)[0]) for m in ranked], "chosen": best, "test": test}


def clustered(n: int, d: int, seed: int = 0, clusters: int = 2000) -> np.ndarray:
    """(n, d) float32 unit rows around ``clusters`` random centres (a collection of many objects)."""
    rng = np.random.default_rng(seed)
    C = rng.normal(size=(clusters, d)).astype(np.float32)
    X = C[rng.integers(0, clusters, n)] + 0.7 * rng.normal(size=(n, d)).astype(np.float32)
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def run_speed(args: argparse.Namespace) -> Dict[str, Any]:
    """--part speed (module docstring)."""
    out: Dict[str, Any] = {"big": args.big, "dim": args.big_dim,
                           "omp_threads": os.environ.get("OMP_NUM_THREADS", "unset"),
                           "repeats": args.repeats, "load_before": os.getloadavg()[0]}
    X = clustered(args.big, args.big_dim)
    index = ImageIndex(args.big_dim, "Flat")
    index.add(X, [f"/synthetic/{i}.jpg" for i in range(args.big)])
    nq = args.speed_queries
    Q = clustered(nq, args.big_dim, seed=1)
    gfile = Path(args.out) / f"graph_{args.big}_{args.big_dim}.npz"
    t0 = time.perf_counter()
    if gfile.is_file() and args.reuse_graph:  # timing the steps again: the graph of the same descriptors
        g = KnnGraph.load(gfile)
    else:
        g = build_knn_graph(X, 50, progress=True)
        out["graph_seconds"] = time.perf_counter() - t0
        out["graph_ms_per_image"] = 1000 * out["graph_seconds"] / args.big
        gfile.parent.mkdir(parents=True, exist_ok=True)
        g.save(gfile)
    out["graph_bytes_per_image"] = g.nbytes() / args.big
    index._graph = g

    def ms_per_query(run: Callable[[], Any]) -> float:
        """Median over --repeats runs of all the queries (one untimed run first): ms per query."""
        run()
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            run()
            times.append(1000 * (time.perf_counter() - t) / nq)
        return float(np.median(times))

    scores, ids = index.search(Q, 1000)
    out["search_ms_per_query"] = ms_per_query(lambda: index.search(Q, 1000))  # the baseline of the ratios
    g.affinity(50, 3.0), g.degrees(50, 3.0)  # once per index (cached with the graph)
    out["diffusion_ms_per_query"] = ms_per_query(lambda: diffusion_rerank(g, ids, scores, DiffusionParams()))
    ctx = RerankContext(Q, index, None, None, np.full(nq, -1), [None] * nq, [None] * nq)
    out["superglobal_ms_per_query"] = ms_per_query(lambda: SuperGlobal().rerank(ctx, ids, scores))
    # SuperGlobal reads only the top M rows: its cost is that of M = 400 rows of the model's dimension
    Xd = clustered(5000, args.model_dim, seed=2)
    small = ImageIndex(args.model_dim, "Flat")
    small.add(Xd, [f"/s/{i}.jpg" for i in range(5000)])
    Qd = clustered(nq, args.model_dim, seed=3)
    sd, idd = small.search(Qd, 400)
    ctx_d = RerankContext(Qd, small, None, None, np.full(nq, -1), [None] * nq, [None] * nq)
    out["superglobal_ms_per_query_model_dim"] = ms_per_query(lambda: SuperGlobal().rerank(ctx_d, idd, sd))
    out["diffusion_plus_superglobal_ms"] = out["diffusion_ms_per_query"] + out["superglobal_ms_per_query"]
    out["diffusion_plus_superglobal_model_dim_ms"] = (out["diffusion_ms_per_query"]
                                                      + out["superglobal_ms_per_query_model_dim"])
    out["load_after_steps"] = os.getloadavg()[0]
    # local features: compact cache bytes per image (float16 RootSIFT + float32 positions) and SIFT time
    col = make_retrieval_collection(Path(args.out) / "steps_demo", seed=0, **DEMO)
    t0 = time.perf_counter()
    feats = [sift_features(load_image(p)) for p in col.db_paths[:40]]
    out["sift_ms_per_image"] = 1000 * (time.perf_counter() - t0) / len(feats)
    out["local_features_per_image"] = float(np.mean([len(f) for f in feats]))
    out["local_bytes_per_image"] = float(np.mean([sum(a.nbytes for a in f.compact(len(f))) for f in feats]))
    for k, v in out.items():
        print(f"  {k}: {v:.3f}" if isinstance(v, float) else f"  {k}: {v}", file=sys.stderr, flush=True)
    return out


def steps_table(rows: List[Dict[str, Any]]) -> None:
    print("| collection | method | mAP E / M / H | × plain M / H | ms / query added |")
    print("|---|---|---|---:|---:|")
    plain = {(r["collection"], r.get("seed", 0)): r for r in rows if r["method"] == "plain"}
    for r in rows:
        p = plain[(r["collection"], r.get("seed", 0))]
        fm = r["medium"] / p["medium"] if p["medium"] else float("nan")
        fh = r["hard"] / p["hard"] if p["hard"] else float("nan")
        name = r["collection"] + (f", seed {r['seed']}" if r.get("seed", 0) else "")
        print(f"| {name} | {r['method']} | {r['easy']:.1f} / {r['medium']:.1f} / {r['hard']:.1f} | "
              f"{fm:.2f} / {fh:.2f} | {r['ms_per_query']:.0f} |")


def main_parts(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    result: Dict[str, Any] = {"config": vars(args)}
    if "steps" in args.part:
        names = [c for c in args.collections if c in COLLECTIONS] + (["demo"] if args.demo else [])
        result["steps"] = [r for c in names for r in run_steps(c, args)]
    if "speed" in args.part:
        result["speed"] = run_speed(args)
    if "sweep" in args.part:
        result["sweep"] = run_sweep(args)
    result["seconds"] = time.perf_counter() - t0
    if args.json:
        print(json.dumps(result, indent=2, default=str))
        return 0
    if "steps" in result:
        print(f"EfficientNet-Lite0 (ImageNet), {args.size} px single scale; {args.n_objects} objects × {args.views} "
              f"views + {args.distractors} distractors, {args.image_size} px (demo: its defaults); "
              f"{'cropped' if args.crop else 'whole'} queries; {result['seconds']:.0f} s in all")
        steps_table(result["steps"])
    if "sweep" in result:
        sw = result["sweep"]
        print(f"\n{sw['grid']} stacks on {', '.join(args.collections)} with seeds {args.seeds}; the ten best by "
              "mean min(M, H) ratio to plain:")
        print("| stack | held-out score |\n|---|---:|")
        for m, sc in sw["ranked"][:10]:
            print(f"| `{m}` | {sc:.3f} |")
        print(f"\nchosen: `{sw['chosen']}`; on the table's collections (seed 0):")
        steps_table(sw["test"])
    if "speed" in result:
        sp = result["speed"]
        print(f"\n{sp['big']} synthetic {sp['dim']}-d descriptors, {args.speed_queries} queries, top 1000:")
        print("| what | value |\n|---|---:|")
        for k, v in sp.items():
            if k not in ("big", "dim"):
                print(f"| {k} | {v:.2f} |" if isinstance(v, float) else f"| {k} | {v} |")
    return 0


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
    ap.add_argument("--part", nargs="+", default=["coseg"], choices=["coseg", "steps", "speed", "sweep"],
                    help="coseg: the co-segmentation table (default); steps: the query-path steps' table; "
                         "speed: superglobal / diffusion at --big descriptors; sweep: a grid of stacks on "
                         "held-out seeds, the chosen one on the table's collections")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3],
                    help="--part sweep: the held-out collections' generator seeds (default 1 2 3; never 0)")
    ap.add_argument("--test-seeds", type=int, nargs="+", default=[0],
                    help="--part sweep: the collections the chosen stack is then run on (default 0, the table's)")
    ap.add_argument("--grid", default="first", choices=list(SWEEP_GRIDS),
                    help="--part sweep: first (qe, diffusion, superglobal, sv; default) or object "
                         "(sv:region=object alone and after coseg / superglobal)")
    ap.add_argument("--demo", type=int, default=1, help="--part steps: also the demo's collection (default 1)")
    ap.add_argument("--skip", nargs="*", default=[], help="--part steps: methods (labels) left out")
    ap.add_argument("--only", nargs="*", default=[], help="--part steps: only these methods (labels), and plain")
    ap.add_argument("--big", type=int, default=100000, help="--part speed: synthetic descriptors (default 10^5)")
    ap.add_argument("--big-dim", type=int, default=128, help="--part speed: their dimension (default 128)")
    ap.add_argument("--model-dim", type=int, default=1280, help="--part speed: SuperGlobal also at this dimension")
    ap.add_argument("--speed-queries", type=int, default=50, help="--part speed: queries timed (default 50)")
    ap.add_argument("--repeats", type=int, default=5,
                    help="--part speed: timed runs of the queries, the median reported (default 5)")
    ap.add_argument("--reuse-graph", action="store_true", help="--part speed: load the graph a previous run saved")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if "coseg" not in args.part:
        return main_parts(args)
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
