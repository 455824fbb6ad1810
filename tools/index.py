#!/usr/bin/env python
"""Index a folder of images (or a .txt list of paths) for search.

  python tools/index.py --images photos/                      # default model, writes index/
  python tools/index.py --images photos/ --model runs/toy/best.pt --out index_ft/
  python tools/index.py --images more_photos/ --out index/    # adds new images to an existing index
  python tools/index.py --images photos/ --concepts concepts.pt --out index_obj/   # concept-masked GeM

Bad image files are skipped and listed at the end; the index folder is replaced atomically.
"""
from __future__ import annotations

import argparse
from typing import Optional, Sequence

from retrieval.core.cli import main_wrapper, print_json
from retrieval.jobs import run_index


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", required=True, help="folder of images (recursive) or a .txt list of paths")
    ap.add_argument("--config", help="YAML config (model/extract/index sections); default: configs/default.yaml settings")
    ap.add_argument("--model", help="model checkpoint (.pt from tools/train_gem.py); overrides the config's model")
    ap.add_argument("--out", default="index", help="index folder (default: index/)")
    ap.add_argument("--concepts", help="concept file from tools/coseg.py --save-concepts (same backbone): "
                                       "pool with concept-masked GeM")
    ap.add_argument("--object-factor", type=int, help="the concept file's object factor to use, numbered from 0 (default: its own)")
    ap.add_argument("--factory", help="faiss factory string, e.g. Flat, HNSW32, 'IVF{n},PQ{m}', ivfpq, opq")
    ap.add_argument("--batch-size", type=int, help="images per forward pass")
    ap.add_argument("--workers", type=int, help="image decoding processes")
    ap.add_argument("--device", help="cpu | cuda (default: cuda when available)")
    ap.add_argument("--dba", type=int, default=0, metavar="K",
                    help="database-side augmentation with K neighbours after indexing (0: off); "
                         "augments every stored descriptor, so use it on a fresh --out folder")
    ap.add_argument("--alpha", type=float, default=3.0, help="α of DBA (default 3)")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    ap.add_argument("--json", action="store_true", help="print the report as JSON")
    return ap.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    report = run_index(args.images, args.out, config=args.config, model=args.model, concepts=args.concepts,
                       object_factor=args.object_factor, factory=args.factory, batch_size=args.batch_size,
                       workers=args.workers, device=args.device, dba=args.dba, alpha=args.alpha,
                       progress=not (args.quiet or args.json))
    if args.json:
        print_json(report.as_dict())
        return 0
    rate = report.added / report.seconds if report.seconds > 0 else 0.0
    print(f"indexed {report.added} new images ({report.already_indexed} already in the index) "
          f"in {report.seconds:.1f}s ({rate:.1f} img/s); {report.total} in {report.folder} "
          f"[{report.factory}, model {report.fingerprint}]; described at {report.described}")
    if report.failures:
        print(f"skipped {len(report.failures)} unreadable files:")
        for path, reason in report.failures:
            print(f"  {path}: {reason}")
    return 0


if __name__ == "__main__":
    main_wrapper(main)
