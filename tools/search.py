#!/usr/bin/env python
"""Search an index with one or more query images.

  python tools/search.py --query q.jpg                         # searches index/, prints the top 10
  python tools/search.py --query q.jpg --top 5 --html hits.html --png hits.png
  python tools/search.py --query q.jpg --json                  # {"query", "hits": [{"rank","path","score"}]}
  python tools/search.py --query q.jpg --index index_obj/ --concepts concepts.pt   # concept-masked GeM
  python tools/search.py --query q.jpg --coseg-rerank 20 --coseg-k 3   # co-segmentation re-ranking

The model is the one that built the index (recorded in the index folder); a query described by
another model is refused.
"""
from __future__ import annotations

import argparse
from typing import Optional, Sequence

from retrieval.core.cli import main_wrapper, print_json
from retrieval.jobs import run_search


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--query", required=True, nargs="+", help="query image file(s)")
    ap.add_argument("--index", default="index", help="index folder made by tools/index.py (default: index/)")
    ap.add_argument("--top", type=int, default=10, help="hits per query (default 10)")
    ap.add_argument("--model", help="model checkpoint or YAML config (default: the index's own model)")
    ap.add_argument("--concepts", help="concept file for concept-masked GeM (default: the one the index "
                                       "was built with, if any)")
    ap.add_argument("--object-factor", type=int, help="the concept file's object factor to use, numbered from 0")
    ap.add_argument("--nprobe", type=int, help="IVF lists visited (compressed indexes)")
    ap.add_argument("--ef-search", type=int, help="HNSW search depth")
    ap.add_argument("--no-rerank", action="store_true", help="skip exact re-ranking of compressed indexes")
    ap.add_argument("--qe", type=int, default=0, metavar="K", help="α-query expansion with K neighbours (0: off)")
    ap.add_argument("--alpha", type=float, default=3.0, help="α of the query expansion (0: average QE; default 3)")
    ap.add_argument("--coseg-rerank", type=int, default=0, metavar="K",
                    help="re-rank the top K hits by co-segmentation with the query (0: off; after --qe)")
    ap.add_argument("--coseg-k", type=int, default=3, help="DFF factors of --coseg-rerank (default 3)")
    ap.add_argument("--coseg-weight", type=float, help="share of the masked score (1: replace; default 0.5)")
    ap.add_argument("--html", help="write an HTML page of the query and its hits")
    ap.add_argument("--png", help="write a contact sheet PNG of the query and its hits")
    ap.add_argument("--device", help="cpu | cuda")
    ap.add_argument("--json", action="store_true", help="print the hits as JSON")
    args = ap.parse_args(argv)
    if args.top < 1:
        ap.error("--top must be ≥ 1")
    if args.qe < 0 or args.alpha < 0:
        ap.error("--qe and --alpha must be ≥ 0")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    results = run_search(args.query, args.index, top=args.top, model=args.model, concepts=args.concepts,
                         object_factor=args.object_factor, qe=args.qe, alpha=args.alpha, nprobe=args.nprobe,
                         ef_search=args.ef_search, rerank=False if args.no_rerank else None,
                         device=args.device, html=args.html, png=args.png, coseg_rerank=args.coseg_rerank,
                         coseg_k=args.coseg_k, coseg_weight=args.coseg_weight)
    if args.json:
        print_json(results[0] if len(results) == 1 else results)
        return 0
    for r in results:
        print(f"query: {r['query']}")
        for h in r["hits"]:
            print(f"  {h['rank']:>3}  {h['score']:.4f}  {h['path']}")
    if args.html:
        print(f"wrote {args.html}")
    if args.png:
        print(f"wrote {args.png}")
    return 0


if __name__ == "__main__":
    main_wrapper(main)
