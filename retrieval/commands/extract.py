"""Describe a collection into resumable descriptor shards, on one process, torchrun or Slurm.

  gemseg extract --images photos/ --out desc/                       # one process
  torchrun --nproc_per_node 4 tools/extract.py --images list.txt --out desc/ # one GPU per rank
  srun gemseg extract --images list.txt --out desc/ --device cuda   # under Slurm
  python tools/index.py --descriptors desc/ --out index/ --on-disk            # then build the index

SRC is a folder or a .txt list of paths (streamed: millions of lines are fine), cut into shards of
--shard-size consecutive paths; shard k belongs to rank k mod world size. Each shard is written
atomically to desc/shards/NNNNNN/ (descriptors.npy, paths.json, stats.npy, skipped.json); a re-run
with the same arguments skips the complete shards, so a killed job resumes where it stopped.
desc/manifest.json records the model; another model is refused. See docs/scale.md.
"""
from __future__ import annotations

import argparse
from typing import Any, Callable

from retrieval.core.cli import add_common_flags, print_json

JOB = "retrieval.jobs:run_extract"


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--images", required=True, help="folder of images (recursive) or a .txt list of paths")
    ap.add_argument("--out", required=True, help="descriptor folder (created, or resumed)")
    ap.add_argument("--model", help="model checkpoint (.pt from tools/train_gem.py); overrides the config's model")
    ap.add_argument("--shard-size", type=int, default=10000, help="images per shard (default 10000)")
    ap.add_argument("--batch-size", type=int, help="images per forward pass")
    ap.add_argument("--workers", type=int, help="image decoding processes")
    add_common_flags(ap, config="")  # --config, --device (cuda:LOCAL_RANK per rank under torchrun), --quiet, --json (this rank's report)
    # input size and scales, for any model (cirtorch / dirtorch checkpoints default to 1024 px)
    ap.add_argument("--image-size", type=int, metavar="PX",
                    help="long side of the image at scale 1 (default: the model's)")
    ap.add_argument("--scales", type=float, nargs="+", metavar="S",
                    help="extraction scales, e.g. --scales 1 0.7071 0.5 (default: the model's)")


def check(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.shard_size < 1:
        ap.error("--shard-size must be ≥ 1")


def run(args: argparse.Namespace, job: Callable[..., Any]) -> int:
    r = job(args.images, args.out, config=args.config, model=args.model, shard_size=args.shard_size,
            batch_size=args.batch_size, workers=args.workers, device=args.device,
            progress=not (args.quiet or args.json), image_size=args.image_size, scales=args.scales)
    if args.json:
        print_json(r.as_dict())
        return 0
    print(f"rank {r.rank}/{r.world}: {r.shards_written} shards written ({r.images} images, "
          f"{r.images_per_second:.1f} img/s, {r.skipped_files} files skipped), {r.shards_skipped} already done; "
          f"{r.listed} images in {r.shards} shards in {r.out}: "
          f"{'complete' if r.complete else 'not complete yet (other ranks, or re-run to resume)'}")
    return 0
