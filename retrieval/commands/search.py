"""Search an index with one or more query images.

  gemseg search --query q.jpg                         # searches index/, prints the top 10
  gemseg search --query q.jpg --top 50 --html hits.html --png hits.png
  gemseg search --query q.jpg --box 120,40,380,300    # the object in that box only
  gemseg search --query q.jpg --json                  # {"results": [{"query", "hits": [...]}]}
  gemseg search --query q.jpg --index index_obj/ --concepts concepts.pt   # concept-masked GeM
  gemseg search --query q.jpg --rerank qe:k=2,coseg:K=20    # re-ranking steps, in order
  gemseg search --query-id 17                            # a stored image: its stored descriptor

A hit whose file no longer exists is marked "(file missing)" ("missing": true in --json).
A query that cannot be searched (unreadable, its --box not inside the image, an unknown id) does
not stop the others: they are answered, the bad ones are listed on stderr with the reason
("failed": [{"query", "reason"}] in --json) and the exit code is 1; 2 when no query could be.
The model is the one that built the index (recorded in the index folder); a query described by
another model is refused. --json prints one document, {"results": [...]}, one entry per query in
order, each {"query", "hits": [{"rank", "id", "path", "score", "missing"}]}, whatever the number of
queries, and "failed"; notices ("wrote hits.html") then go to stderr.

Re-ranking steps (--rerank NAME[:key=value...][,NAME...], in order; --qe K and --coseg-rerank K
are spellings of qe:k=K and coseg:K=K, run first): %(rerankers)s.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, Callable

from retrieval.core.cli import add_common_flags, notice, parse_box, print_json
from retrieval.search.rerank.registry import reranker_names

JOB = "retrieval.jobs:run_search"
#: exit code when some queries could not be searched and the others were answered (2: none was)
EXIT_SOME_FAILED = 1


def description() -> str:
    """The help text, with the re-rankers' names."""
    return (__doc__ or "").replace("%(rerankers)s", ", ".join(reranker_names()))


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--query", nargs="+", default=[], help="query image file(s)")
    ap.add_argument("--query-id", nargs="+", type=int, default=[], metavar="ID",
                    help="stored image id(s) of the index: searched with the stored descriptor (no forward pass)")
    ap.add_argument("--index", default="index", help="index folder made by tools/index.py (default: index/)")
    ap.add_argument("--top", type=int, default=10, help="hits per query (default 10)")
    ap.add_argument("--box", type=parse_box, action="append", metavar="x1,y1,x2,y2",
                    help="crop the query to this box (pixels) before describing it, as the revisited "
                         "Oxford/Paris protocol does; once for all queries, or once per query")
    ap.add_argument("--model", help="model checkpoint or YAML config (default: the index's own model)")
    add_common_flags(ap, config="YAML settings file: its extract.device and index: search settings "
                                "(nprobe, ef_search, rerank) are the defaults; the model is the index's")
    ap.add_argument("--concepts", help="concept file for concept-masked GeM (default: the one the index "
                                       "was built with, if any)")
    ap.add_argument("--object-factor", type=int, help="the concept file's object factor to use, numbered from 0")
    ap.add_argument("--nprobe", type=int, help="IVF lists visited (compressed indexes)")
    ap.add_argument("--ef-search", type=int, help="HNSW search depth")
    ap.add_argument("--no-rerank", action="store_true", help="skip exact re-ranking of compressed indexes")
    ap.add_argument("--rerank", action="append", metavar="STEPS",
                    help=f"re-ranking steps in order, e.g. qe:k=2,coseg:K=20 (names: {', '.join(reranker_names())})")
    ap.add_argument("--qe", type=int, default=0, metavar="K", help="α-query expansion with K neighbours (0: off)")
    ap.add_argument("--alpha", type=float, default=3.0, help="α of the query expansion (0: average QE; default 3)")
    ap.add_argument("--coseg-rerank", type=int, default=0, metavar="K",
                    help="re-rank the top K hits by co-segmentation with the query (0: off; after --qe)")
    ap.add_argument("--coseg-k", type=int, default=3, help="DFF factors of --coseg-rerank (default 3)")
    ap.add_argument("--coseg-weight", type=float, help="share of the masked score (1: replace; default 0.5)")
    ap.add_argument("--html", help="write an HTML page of the queries and their hits (links to the originals)")
    ap.add_argument("--png", help="write a contact sheet PNG of the queries and their hits")
    # input size and scales, for any model (cirtorch / dirtorch checkpoints default to 1024 px)
    ap.add_argument("--image-size", type=int, metavar="PX",
                    help="long side of the image at scale 1 (default: the model's, as the index was described)")
    ap.add_argument("--scales", type=float, nargs="+", metavar="S",
                    help="extraction scales, e.g. --scales 1 0.7071 0.5 (default: the model's, as the index was described)")


def check(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if not args.query and not args.query_id:
        ap.error("give --query FILE... or --query-id ID...")
    if args.top < 1:
        ap.error("--top must be ≥ 1")
    if args.qe < 0 or args.alpha < 0:
        ap.error("--qe and --alpha must be ≥ 0")
    n = len(args.query) + len(args.query_id)
    if args.box and len(args.box) not in (1, n):
        ap.error(f"--box: give it once (all queries) or once per query ({n}), not {len(args.box)} times")


def run(args: argparse.Namespace, job: Callable[..., Any]) -> int:
    results = job(args.query, args.index, top=args.top, model=args.model, concepts=args.concepts,
                  object_factor=args.object_factor, qe=args.qe, alpha=args.alpha, nprobe=args.nprobe,
                  ef_search=args.ef_search, rerank=False if args.no_rerank else None,
                  device=args.device, html=args.html, png=args.png, boxes=args.box, config=args.config,
                  coseg_rerank=args.coseg_rerank, coseg_k=args.coseg_k, coseg_weight=args.coseg_weight,
                  query_ids=args.query_id, steps=args.rerank, image_size=args.image_size, scales=args.scales)
    failed = list(getattr(results, "failed", []))
    if args.json:
        print_json({"results": results, "failed": failed})
    else:
        for r in results:
            print(f"query: {r['query']}")
            for h in r["hits"]:
                print(f"  {h['rank']:>3}  {h['score']:.4f}  {h['path']}{'  (file missing)' if h.get('missing') else ''}")
    gone = sum(bool(h.get("missing")) for r in results for h in r["hits"])
    if gone:
        print(f"warning: {gone} hit(s) point to files that no longer exist; drop them with "
              f"tools/index.py --images SRC --out {args.index} --prune", file=sys.stderr)
    for written in (args.html, args.png):
        if written:
            notice(f"wrote {written}", args)
    if failed:
        print(f"error: {len(failed)} of {len(results) + len(failed)} queries could not be searched "
              f"(the others were answered; exit code {EXIT_SOME_FAILED}):", file=sys.stderr)
        for f in failed:
            print(f"  {f['query']}: {f['reason']}", file=sys.stderr)
        return EXIT_SOME_FAILED
    return 0
