"""Fine-tune a GeM descriptor on matching pairs (contrastive loss, hard negatives re-mined each epoch).

  gemseg train --config configs/train_toy.yaml               # generated toy collection
  gemseg train --config configs/train_toy.yaml --data my_classes/ --out runs/mine
  gemseg train --config configs/train_toy.yaml --out runs/mine --resume
  python tools/index.py --images photos/ --model runs/mine/best.pt         # index with the result
  gemseg train --config configs/train_unsupervised.yaml --data my_photos/   # no labels
  torchrun --nproc_per_node 4 tools/train_gem.py --config configs/train_toy.yaml --out runs/ddp  # 4 GPUs

Training data (``train.data`` in the config, or --data): a folder of classes DIR/<class>/*.jpg (any
two images of a class match), a .csv of query,positive[,cluster] rows, the SfM-120k .pkl, or
``toy``. The run folder gets last.pt (every epoch; --resume continues from it), best.pt (best
validation mAP, with learned whitening: use it with tools/index.py and tools/search.py) and log.csv.
A config with an ``unsupervised:`` section trains on unlabeled images (cluster-then-train periods).
Under torchrun or srun, supervised training runs with DistributedDataParallel (one GPU per local
rank; gloo on CPU) and rank 0 alone writes the run folder and prints (docs/training.md).
The work is :func:`retrieval.jobs.run_train`.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, Callable

from retrieval.core.cli import add_common_flags, print_json

JOB = "retrieval.jobs:run_train"


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--config", required=True, help="YAML with model: and train: sections (configs/train_*.yaml)")
    ap.add_argument("--data", help="training data, overrides train.data: class folders, pairs .csv, SfM .pkl, toy")
    ap.add_argument("--out", help="run folder (default: runs/<config name>)")
    ap.add_argument("--resume", action="store_true", help="continue from <out>/last.pt")
    ap.add_argument("--epochs", type=int, help="train up to this epoch (overrides train.epochs)")
    ap.add_argument("--workers", type=int, help="image decoding processes (overrides train.workers)")
    add_common_flags(ap)  # --device, --quiet, --json (epoch lines then go to stderr)


def run(args: argparse.Namespace, job: Callable[..., Any]) -> int:
    out_stream = sys.stderr if args.json else sys.stdout

    def log(msg: str) -> None:
        print(msg, file=out_stream, flush=True)

    result = job(args.config, data=args.data, out=args.out, resume=args.resume, epochs=args.epochs,
                 device=args.device, workers=args.workers, progress=not (args.quiet or args.json), log=log)
    if result.rank != 0:  # rank 0 alone prints
        return 0
    if args.json:
        print_json(result.to_json())
    else:
        print(result.summary())
    return 0
