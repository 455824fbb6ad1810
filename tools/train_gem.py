#!/usr/bin/env python
"""Fine-tune a GeM descriptor on matching pairs (contrastive loss, hard negatives re-mined each epoch).

  python tools/train_gem.py --config configs/train_toy.yaml               # generated toy collection
  python tools/train_gem.py --config configs/train_toy.yaml --data my_classes/ --out runs/mine
  python tools/train_gem.py --config configs/train_toy.yaml --out runs/mine --resume
  python tools/index.py --images photos/ --model runs/mine/best.pt         # index with the result
  python tools/train_gem.py --config configs/train_unsupervised.yaml --data my_photos/   # no labels

Training data (``train.data`` in the config, or --data): a folder of classes DIR/<class>/*.jpg (any
two images of a class match), a .csv of query,positive[,cluster] rows, the SfM-120k .pkl, or
``toy``. The run folder gets last.pt (every epoch; --resume continues from it), best.pt (best
validation mAP, with learned whitening: use it with tools/index.py and tools/search.py) and log.csv.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from retrieval.core.cli import main_wrapper, print_json
from retrieval.core.config import from_dict
from retrieval.core.errors import ConfigError
from retrieval.model.network import build_network
from retrieval.settings import load_settings
from retrieval.training.supervised import TrainConfig, load_training_pairs, train
from retrieval.training.unsupervised import run_from_settings


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="YAML with model: and train: sections (configs/train_*.yaml)")
    ap.add_argument("--data", help="training data, overrides train.data: class folders, pairs .csv, SfM .pkl, toy")
    ap.add_argument("--out", help="run folder (default: runs/<config name>)")
    ap.add_argument("--resume", action="store_true", help="continue from <out>/last.pt")
    ap.add_argument("--epochs", type=int, help="train up to this epoch (overrides train.epochs)")
    ap.add_argument("--device", help="cpu | cuda | cuda:N (default: cuda when available)")
    ap.add_argument("--workers", type=int, help="image decoding processes (overrides train.workers)")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    ap.add_argument("--json", action="store_true", help="print the result as JSON (epoch lines go to stderr)")
    return ap.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    settings = load_settings(args.config)
    cfg = from_dict(TrainConfig, settings.raw.get("train") or {}, f"{args.config}: train")
    if args.device:
        cfg.device = args.device
    if args.workers is not None:
        cfg.workers = args.workers
    if args.epochs is not None and args.epochs < 1:
        raise ConfigError(f"--epochs: must be ≥ 1, got {args.epochs}")
    out = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
    out_stream = sys.stderr if args.json else sys.stdout

    def log(msg: str) -> None:
        print(msg, file=out_stream, flush=True)

    if settings.raw.get("unsupervised") is not None:  # pairs source `cluster`: no labels (JULE-style)
        if args.resume or args.epochs is not None:
            raise ConfigError("--resume/--epochs do not apply to unsupervised training; set unsupervised.periods")
        res = run_from_settings(settings, data=args.data, out=out, device=args.device, workers=args.workers,
                                progress=not (args.quiet or args.json), log=log)
        if args.json:
            print_json(res.to_json())
            return 0
        print(f"best period {res.best_period} -> {res.best_path}; log: {out / 'log.csv'}")
        print(f"index with: python tools/index.py --images IMAGES --model {res.best_path}")
        return 0

    train_pairs, val_pairs, skipped = load_training_pairs(cfg, args.data, log=log)
    log(f"train: {train_pairs.summary()}")
    log(f"val:   {val_pairs.summary()}")
    net = build_network(settings.model, seed=cfg.seed)
    result = train(net, train_pairs, cfg, out, val=val_pairs, resume=args.resume, epochs=args.epochs,
                   skipped=skipped, progress=not (args.quiet or args.json), log=log)
    if args.json:
        print_json(result.to_json())
        return 0
    best = f" (val mAP {100 * result.best_map:.2f})" if result.best_map == result.best_map else ""
    print(f"best epoch {result.best_epoch}{best} -> {result.best_path}; log: {out / 'log.csv'}")
    print(f"index with: python tools/index.py --images IMAGES --model {result.best_path}")
    return 0


if __name__ == "__main__":
    main_wrapper(main)
