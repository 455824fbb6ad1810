"""Index a folder of images (or a .txt list of paths) for search.

  gemseg index --images photos/                      # default model, writes index/
  gemseg index --images photos/ --model runs/toy/best.pt --out index_ft/
  gemseg index --images more_photos/ --out index/    # adds new images to an existing index
  gemseg index --images photos/ --concepts concepts.pt --out index_obj/   # concept-masked GeM
  gemseg index --images photos/ --out index/ --prune  # also drop files that no longer exist
  gemseg index --descriptors desc/ --out index/ --memory-budget 4G --on-disk   # from shards
  gemseg index --images photos/ --out index/ --graph       # also store the k-NN graph (--rerank diffusion)
  gemseg index --images photos/ --out index/ --local-features   # and RootSIFT features (--rerank sv)

Files that are not indexed (unreadable, or of a format that is not read: "unsupported format .heic";
pip install 'gemseg[heif]' reads HEIC) are listed at the end with the reason. A new index is written
to a temporary folder and renamed; adding to an index writes only what is new; a changed file is
described again; indexed files that no longer exist are counted ("vanished" in --json) and --prune
drops them. An interrupted first index (Ctrl-C, a kill) resumes: the re-run describes only what is
left. A compressed --factory is checked against the collection size first. With
--descriptors (shards of tools/extract.py) the factory defaults to auto (docs/scale.md), and an
approximate index stores the cheapest efSearch / nprobe whose recall@10 against exact search
reaches --target-recall on held-out rows of the collection (the build reports the setting and the
recall; "tuning" in --json). A build from descriptors alone (no --config, --graph or
--local-features) loads no model and does not import torch.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, Callable

from retrieval.commands.main import job_of
from retrieval.core.cli import add_common_flags, notice, print_json

#: the job of a build from descriptor shards alone: no model, so neither torch nor retrieval.jobs
JOB = "retrieval.search.build:build_index_from_shards"
#: the job of everything else (images, --compact, --config, --graph, --local-features), imported
#: only then, through main.job_of as every command's job is
FULL_JOB = "retrieval.jobs:run_index"

SHOWN = 20


def add_arguments(ap: argparse.ArgumentParser) -> None:
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", help="folder of images (recursive) or a .txt list of paths")
    src.add_argument("--descriptors", help="descriptor folder written by tools/extract.py: build from its shards")
    src.add_argument("--compact", action="store_true",
                     help="rewrite the --out index without its removed ids (changed, pruned files), in one segment")
    add_common_flags(ap, config="")
    ap.add_argument("--model", help="model checkpoint (.pt from tools/train_gem.py); overrides the config's model")
    ap.add_argument("--out", default="index", help="index folder (default: index/)")
    ap.add_argument("--concepts", help="concept file from tools/coseg.py --save-concepts (same backbone): "
                                       "pool with concept-masked GeM")
    ap.add_argument("--object-factor", type=int, help="the concept file's object factor to use, numbered from 0 (default: its own)")
    ap.add_argument("--factory", help="faiss factory string, e.g. Flat, HNSW32, 'IVF{n},PQ{m}', ivfpq, opq, "
                                      "or auto (chosen from N, D and --memory-budget; default with --descriptors)")
    ap.add_argument("--memory-budget", default="4G", help="memory the index may use, for --factory auto (default 4G)")
    ap.add_argument("--on-disk", action="store_true", help="with --descriptors: inverted lists on disk, memory-mapped")
    ap.add_argument("--target-recall", type=float, metavar="R",
                    help="with --descriptors: store the cheapest efSearch / nprobe whose recall@10 against "
                         "exact search reaches R on held-out rows (default 0.98; 0: no tuning)")
    ap.add_argument("--prune", action="store_true", help="drop indexed files that no longer exist")
    ap.add_argument("--batch-size", type=int, help="images per forward pass")
    ap.add_argument("--workers", type=int, help="image decoding processes")
    ap.add_argument("--dba", type=int, default=0, metavar="K",
                    help="database-side augmentation with K neighbours after indexing (0: off); "
                         "augments every stored descriptor, so use it on a fresh --out folder")
    ap.add_argument("--alpha", type=float, default=3.0, help="α of DBA (default 3)")
    # re-ranking data stored in the index folder (diffusion's k-NN graph, sv's local features)
    ap.add_argument("--graph", type=int, nargs="?", const=50, default=0, metavar="K",
                    help="also store the k-NN graph with K neighbours (default 50) that --rerank diffusion "
                         "walks on; kept up to date by later additions, --prune and --compact "
                         "(without it, diffusion builds the graph in memory on first use)")
    ap.add_argument("--local-features", type=int, nargs="?", const=1000, default=0, metavar="N",
                    help="also store at most N RootSIFT features per image (default 1000; float16, about "
                         "264 bytes a feature) that --rerank sv reads instead of describing the hits' files")
    # input size and scales, for any model (cirtorch / dirtorch checkpoints default to 1024 px)
    ap.add_argument("--image-size", type=int, metavar="PX",
                    help="long side of the image at scale 1 (default: the model's)")
    ap.add_argument("--scales", type=float, nargs="+", metavar="S",
                    help="extraction scales, e.g. --scales 1 0.7071 0.5 (default: the model's)")


def check(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.target_recall is not None:
        if not args.descriptors:
            ap.error("--target-recall tunes a build from --descriptors")
        if not 0.0 <= args.target_recall <= 1.0:
            ap.error(f"--target-recall takes a recall@10 in (0, 1], or 0 for no tuning; got {args.target_recall:g}")


def shards_only(args: argparse.Namespace) -> bool:
    """A build from descriptor shards and nothing else: :data:`JOB` runs it."""
    return bool(args.descriptors) and not (args.config or args.graph or args.local_features)


def run(args: argparse.Namespace, job: Callable[..., Any]) -> int:
    progress = not (args.quiet or args.json)
    if shards_only(args):
        report = job(args.descriptors, args.out, factory=args.factory or "auto", memory_budget=args.memory_budget,
                     on_disk=args.on_disk, progress=progress, target_recall=args.target_recall)
    else:
        report = job_of(FULL_JOB)(
            args.images, args.out, config=args.config, model=args.model, concepts=args.concepts,
            object_factor=args.object_factor, factory=args.factory, batch_size=args.batch_size,
            workers=args.workers, device=args.device, dba=args.dba, alpha=args.alpha,
            progress=progress, prune=args.prune, descriptors=args.descriptors,
            memory_budget=args.memory_budget, on_disk=args.on_disk, compact=args.compact,
            graph=args.graph, local_features=args.local_features,
            image_size=args.image_size, scales=args.scales, target_recall=args.target_recall)
    if args.json:
        print_json(report.as_dict())
        return 0
    if args.compact:
        print(f"compacted {report.out}: {report.before} ids → {report.live} ({report.removed} removed), "
              f"{report.segments_before} segments → 1, {report.bytes_before / 2 ** 20:.1f} → "
              f"{report.bytes_after / 2 ** 20:.1f} MiB in {report.seconds:.1f}s")
        return 0
    if args.descriptors:
        if report.rank == 0:
            print(f"built {report.out} from {report.shards} shards: {report.count} descriptors, {report.factory}"
                  f"{' (lists on disk)' if report.on_disk else ''}, {report.bytes_per_vector or 0:.1f} bytes/vector, "
                  f"in {report.seconds:.1f}s (train {report.train_seconds:.1f}s, add {report.add_seconds:.1f}s)")
            if report.tuning is not None:
                print(f"search setting: {report.tuning.describe()}")
        return 0
    rate = report.added / report.seconds if report.seconds > 0 else 0.0
    print(f"indexed {report.added} new images ({report.already_indexed} already in the index, "
          f"{report.updated} changed and described again, {report.pruned} pruned) "
          f"in {report.seconds:.1f}s ({rate:.1f} img/s); {report.total} in {report.folder} "
          f"[{report.factory}, model {report.fingerprint}]; described at {report.described}")
    if report.resumed:
        notice(f"resumed an interrupted run: {report.resumed} of the images were already described", args)
    if report.vanished:
        print(f"warning: {report.vanished} indexed file(s) no longer exist (searches mark them missing); "
              f"drop them with --prune", file=sys.stderr)
    if report.failures:
        notice(f"skipped {len(report.failures)} files (not indexed):", args)
        for path, reason in report.failures[:SHOWN]:
            notice(f"  {path}: {reason}", args)
        if len(report.failures) > SHOWN:
            notice(f"  … and {len(report.failures) - SHOWN} more (--json lists them all)", args)
    return 0
