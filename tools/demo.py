#!/usr/bin/env python
"""The demo: build the built-in collection (objects from real photos in many views), index it with
the default model, search it with every query, and write the hits as HTML and PNG.

  python tools/demo.py --out demo_out        # what `make demo` runs
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional, Sequence

from retrieval.core.cli import add_common_flags, main_wrapper, print_json
from retrieval.evaluation.metrics import format_table
from retrieval.jobs import run_demo


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="demo_out", help="output folder (default demo_out/)")
    ap.add_argument("--source", choices=["photos", "synthetic"], help="objects from real photos (needs scikit-image) or generated")
    ap.add_argument("--objects", type=int, default=8)
    ap.add_argument("--top", type=int, default=8, help="hits shown per query")
    add_common_flags(ap, config="YAML settings file or checkpoint whose model describes the demo "
                                "(default: the default model)")
    args = ap.parse_args(argv)
    res = run_demo(args.out, n_objects=args.objects, top=args.top, source=args.source,
                   progress=not (args.json or args.quiet), config=args.config, device=args.device)
    if args.json:
        print_json({"report": res.report, "html": str(res.html), "png": str(res.png), "results": res.results})
        return 0
    coll = res.collection
    labels = {p: int(l) for p, l in zip(coll.db_paths, coll.db_labels)}
    print(f"demo collection: {len(coll.query_paths)} queries, {len(coll.db_paths)} database images "
          f"({coll.params.get('source', '')}) in {coll.root}")
    print(f"indexed in {res.index_seconds:.1f}s; top-5 hits per query (+ same object, - other/distractor):")
    for r, ql in zip(res.results, coll.query_labels):
        marks = " ".join(("+" if labels[h["path"]] == ql else "-") + f"{h['score']:.2f}" for h in r["hits"][:5])
        print(f"  {Path(r['query']).name:<24} {marks}")
    print(format_table(res.report, name="demo"))
    print(f"wrote {res.html} and {res.png}")
    return 0


if __name__ == "__main__":
    main_wrapper(main)
