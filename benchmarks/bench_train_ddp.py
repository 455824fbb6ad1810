#!/usr/bin/env python
"""Distributed training: tuples/s of 2 ranks against 1 on this machine, in the same run.

Launches ``torchrun --standalone --nproc_per_node N`` of this file for N = 1 and N = 2 (gloo on
CPU; NCCL, one GPU per rank, with ``--device cuda`` on a multi-GPU node), each timing one epoch of
the training engine on the same toy collection and seed: the mining (pool described in parts and
all-gathered) and the training pass (tuples split across the ranks, DistributedDataParallel). The
machine's cores are shared out: each rank gets ``cores / N`` threads, so both runs use the whole
machine. ``batch`` is per rank: 2 ranks × batch b train with the step of 1 rank × batch 2b.

  python benchmarks/bench_train_ddp.py                 # 1 vs 2 ranks, CPU
  python benchmarks/bench_train_ddp.py --quick
  python benchmarks/bench_train_ddp.py --ranks 1 1x1 2           # add 1 rank on 1 thread (RANKSxTHREADS)
  python benchmarks/bench_train_ddp.py --ranks 1 2 4 --device cuda   # a GPU node
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import markdown_table  # noqa: E402

from retrieval.model.network import ModelConfig, build_network  # noqa: E402
from retrieval.training.config import TrainConfig  # noqa: E402
from retrieval.training.distributed import distributed_session  # noqa: E402
from retrieval.training.engine import Engine  # noqa: E402
from retrieval.training.mining import mine_tuples  # noqa: E402
from retrieval.training.supervised import LOG_FIELDS, load_training_pairs  # noqa: E402
from retrieval.training.toy_data import ToyData  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def settings(work: Path, quick: bool, batch: int, device: Optional[str]) -> TrainConfig:
    toy = ToyData(root=str(work / "toy"), n_objects=12 if quick else 24, views=6, image_size=96, seed=2)
    return TrainConfig(data="toy", toy=toy, val_fraction=0.0, lr=1e-6, qsize=24 if quick else 64, poolsize=10_000,
                       nnum=3, batch=batch, workers=0, mine_batch=16, whitening=False, device=device, seed=0)


def worker(args: argparse.Namespace) -> None:
    """One rank: an epoch of the engine; rank 0 writes the timings to ``args.result``."""
    work = Path(args.work)
    with distributed_session(args.device) as dist:
        cfg = settings(work, args.quick, args.batch // dist.world_size, args.device)
        with dist.main_first():
            pairs, _, _ = load_training_pairs(cfg, log=lambda s: None)
        net = build_network(ModelConfig(backbone="resnet18", weights="none", image_size=96, scales=[1.0]), seed=0)
        run = Engine(net, cfg, work / f"run{dist.world_size}", fields=LOG_FIELDS, total=1, progress=False,
                     log=lambda s: None)

        def mine(seed: int):
            return mine_tuples(net, pairs, nnum=cfg.nnum, qsize=cfg.qsize, poolsize=cfg.poolsize, seed=seed,
                               progress=False, dist=run.dist, **run.common)

        run.train_epoch(1, pairs, mine)  # warm-up (allocator, first kernels, DDP buckets)
        dist.barrier()
        t0 = time.perf_counter()
        ep = run.train_epoch(2, pairs, mine)
        dist.barrier()
        total = time.perf_counter() - t0
        if dist.is_main:
            Path(args.result).write_text(json.dumps({
                "ranks": dist.world_size, "threads": torch.get_num_threads(), "device": str(dist.device),
                "tuples": ep.used, "images": pairs.n_images, "mine_s": ep.mine_seconds, "train_s": ep.train_seconds,
                "epoch_s": total, "train_tuples_per_s": ep.used / ep.train_seconds, "epoch_tuples_per_s": ep.used / total}))


def launch(spec: str, args: argparse.Namespace, work: Path) -> Dict[str, Any]:
    """Run ``spec`` = ``N`` (N ranks, cores / N threads each) or ``NxT`` (T threads each)."""
    n, _, t = spec.partition("x")
    n = int(n)
    threads = int(t) if t else max(1, (os.cpu_count() or 1) // n)
    result = work / f"result{spec}.json"
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS=str(threads), GEMSEG_THREADS=str(threads))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}", __file__,
           "--worker", "--work", str(work), "--result", str(result), "--batch", str(args.batch)]
    cmd += ["--quick"] if args.quick else []
    cmd += ["--device", args.device] if args.device else []
    subprocess.run(cmd, check=True, env=env, cwd=REPO)
    return json.loads(result.read_text())


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ranks", nargs="+", default=["1", "2"],
                    help="process counts to compare (first = baseline); NxT: N ranks of T threads")
    ap.add_argument("--batch", type=int, default=8, help="tuples per optimizer step, over all ranks")
    ap.add_argument("--device", help="cpu | cuda (default: cpu; cuda = one GPU per rank, NCCL)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--work", help="folder for the collection (default: a temporary folder)")
    ap.add_argument("--json", help="also write the results to this JSON file")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    args.device = args.device or "cpu"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        results = [launch(n, args, work) for n in args.ranks]
    base = results[0]
    rows = [[r["ranks"], r["threads"], r["tuples"], f"{r['mine_s']:.2f}", f"{r['train_tuples_per_s']:.2f}",
             f"{r['train_tuples_per_s'] / base['train_tuples_per_s']:.2f}×", f"{r['epoch_tuples_per_s']:.2f}",
             f"{r['epoch_tuples_per_s'] / base['epoch_tuples_per_s']:.2f}×"] for r in results]
    print(f"\nResNet-18, 96 px, {base['images']} images, {base['tuples']} tuples × (2 + 3) images, "
          f"batch {args.batch} per step, {base['device']}, {os.cpu_count()} cores")
    print(markdown_table(["ranks", "threads/rank", "tuples", "mining s", "train tuples/s", "ratio",
                          "epoch tuples/s", "ratio"], rows))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
