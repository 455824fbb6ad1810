"""The built-in demo: a collection made from real photos, indexed, searched and scored.

It builds the demo collection (objects from real photos in many views), indexes it with the default
model, searches it with every query, and writes the hits as HTML and PNG.

  gemseg demo --out demo_out        # what `make demo` runs
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable

from retrieval.core.cli import add_common_flags, print_json
from retrieval.evaluation.metrics import format_table

JOB = "retrieval.jobs:run_demo"


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--out", default="demo_out", help="output folder (default demo_out/)")
    ap.add_argument("--source", choices=["photos", "synthetic"], help="objects from real photos (needs scikit-image) or generated")
    ap.add_argument("--objects", type=int, default=8)
    ap.add_argument("--top", type=int, default=8, help="hits shown per query")
    add_common_flags(ap, config="YAML settings file or checkpoint whose model describes the demo "
                                "(default: the default model)")


def run(args: argparse.Namespace, job: Callable[..., Any]) -> int:
    res = job(args.out, n_objects=args.objects, top=args.top, source=args.source,
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
