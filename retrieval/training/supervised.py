"""Fine-tuning a descriptor network on matching pairs (Radenović, Tolias, Chum, TPAMI 2018).

The supervised driver of :mod:`retrieval.training.engine`: a step is one epoch. Each epoch re-mines
tuples (query, positive, n hard negatives) with the current network
(:mod:`retrieval.training.mining`), trains on them (:mod:`retrieval.training.epoch`: real batches of
tuples, padded images masked out of the pooling, BatchNorm frozen, bf16 autocast on CUDA),
validates (mAP on held-out classes or views) and checkpoints. The engine owns the rest: Adam with
GeM p at ``p_lr_mult · lr`` and the exponential lr decay, seeds (epoch ``e`` draws its pairs, pool
and batch order from ``seed`` and ``e`` only, so a run resumed after epoch ``e`` continues exactly
as the uninterrupted run would, on CPU), and the final whitening: the training runs without the
whitening slot; after the last epoch, learned whitening (Lw) is learned on the training pairs with
the network kept in ``best.pt`` and stored in it.

Files in the run folder: ``last.pt`` (every epoch: weights, model config, optimizer, epoch, history,
training config), ``best.pt`` (best validation mAP, with Lw), ``log.csv`` (one row per epoch).
Under ``torchrun``/``srun`` (:mod:`retrieval.training.distributed`) every rank mines the same
tuples from the whole pool (described in parts and all-gathered), trains on its part of each step
(``DistributedDataParallel``), and rank 0 alone writes these files.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from torch import nn

from retrieval.core.errors import ConfigError, DataError
from retrieval.training.config import TrainConfig
from retrieval.training.engine import Engine
from retrieval.training.epoch import gem_p
from retrieval.training.mining import Tuples, mine_tuples
from retrieval.training.pairs import PairSet, drop_unreadable, load_pairs
from retrieval.training.toy_data import prepare_toy_data

PathLike = Union[str, Path]
Log = Callable[[str], None]

LOG_FIELDS = ("epoch", "loss", "val_map", "p", "lr", "avg_neg_distance", "tuples",
              "mine_seconds", "train_seconds", "seconds")


@dataclass
class EpochStats:
    """One row of ``log.csv``. Epoch 0 is the network before training (validation only)."""

    epoch: int
    loss: float = float("nan")
    val_map: float = float("nan")
    p: float = float("nan")
    lr: float = float("nan")
    avg_neg_distance: float = float("nan")
    tuples: int = 0
    mine_seconds: float = 0.0
    train_seconds: float = 0.0
    seconds: float = 0.0

    def line(self, epochs: int) -> str:
        m = f"{100 * self.val_map:6.2f}" if not math.isnan(self.val_map) else "     -"
        loss = f"{self.loss:.4f}" if not math.isnan(self.loss) else "     -"
        return (f"epoch {self.epoch:>3}/{epochs}  loss {loss}  mAP {m}  p {self.p:.3f}  "
                f"lr {self.lr:.2e}  neg-d {self.avg_neg_distance:.3f}  {self.seconds:.1f}s")


@dataclass
class TrainResult:
    """What :func:`train` returns.

    history: one :class:`EpochStats` per epoch (epoch 0 = before training, when validated).
    best_epoch, best_map: the epoch kept in ``best.pt`` and its validation mAP (NaN without val).
    whitening_map: validation mAP of the ``best.pt`` network with ``none``/``pca``/``lw`` whitening.
    skipped: ``(path, reason)`` of unreadable images left out.
    """

    out_dir: Path
    history: List[EpochStats]
    best_epoch: int
    best_map: float
    best_path: Path
    last_path: Path
    whitening_map: Dict[str, float] = field(default_factory=dict)
    skipped: List[Tuple[str, str]] = field(default_factory=list)

    def to_json(self) -> Dict[str, Any]:
        return {"out_dir": str(self.out_dir), "best_epoch": self.best_epoch, "best_map": self.best_map,
                "best_path": str(self.best_path), "last_path": str(self.last_path),
                "whitening_map": self.whitening_map,
                "skipped": [{"path": str(p), "reason": r} for p, r in self.skipped],
                "history": [dataclasses.asdict(h) for h in self.history]}

    def summary(self) -> str:
        """Two lines for the user: the best epoch, where it is, and how to index with it."""
        best = f" (val mAP {100 * self.best_map:.2f})" if self.best_map == self.best_map else ""
        return (f"best epoch {self.best_epoch}{best} -> {self.best_path}; log: {self.out_dir / 'log.csv'}\n"
                f"index with: python tools/index.py --images IMAGES --model {self.best_path}")


# ----------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------
def load_training_pairs(cfg: TrainConfig, data: Optional[PathLike] = None, log: Log = print,
                        workers: Optional[int] = None) -> Tuple[PairSet, PairSet, List[Tuple[str, str]]]:
    """Load, check and split the training data: ``(train, val, skipped)``.

    ``data`` overrides ``cfg.data``. Unreadable images are dropped (``cfg.check_images``) and listed
    in ``skipped``; the validation set is ``cfg.val_data`` or ``cfg.val_fraction`` of the classes.
    """
    src = data if data is not None else cfg.data
    if not src:
        raise ConfigError("train.data: no training data given (set train.data or pass --data)")
    if str(src) == "toy":
        src = prepare_toy_data(cfg.toy, log=log)
    pairs = load_pairs(src, cfg.data_kind, cfg.ims_root, "train", cfg.max_pairs_per_class, cfg.seed)
    skipped: List[Tuple[str, str]] = []
    nw = max(1, cfg.workers if workers is None else workers)
    if cfg.check_images:
        pairs, bad = drop_unreadable(pairs, workers=nw)
        skipped += [(str(p), r) for p, r in bad]
    if cfg.val_data:
        val = load_pairs(cfg.val_data, cfg.data_kind, cfg.ims_root, "val", cfg.max_pairs_per_class, cfg.seed)
        if cfg.check_images:
            val, bad = drop_unreadable(val, workers=nw)
            skipped += [(str(p), r) for p, r in bad]
        train_pairs = pairs
    else:
        train_pairs, val = pairs.split(cfg.val_fraction, seed=cfg.seed, by=cfg.val_split)
    if skipped:
        first = f"{skipped[0][0]} ({skipped[0][1]})"
        more = f" and {len(skipped) - 1} more" if len(skipped) > 1 else ""
        log(f"skipped {len(skipped)} unreadable image(s): {first}{more}")
    if train_pairs.n_pairs == 0:
        raise DataError(f"{src}: no matching pairs left to train on")
    if train_pairs.n_classes < 2:
        raise DataError(f"{src}: training needs at least 2 classes (negatives come from other classes)")
    return train_pairs, val, skipped


# ----------------------------------------------------------------------------------------------
# The loop (the engine's steps are epochs)
# ----------------------------------------------------------------------------------------------
def train(net: nn.Module, pairs: PairSet, cfg: TrainConfig, out_dir: PathLike, *,
          val: Optional[PairSet] = None, resume: bool = False, epochs: Optional[int] = None,
          skipped: Optional[List[Tuple[str, str]]] = None, progress: bool = True,
          log: Log = print) -> TrainResult:
    """Fine-tune ``net`` on ``pairs``; checkpoints, log and ``best.pt`` go to ``out_dir``.

    Args:
        net: a :class:`~retrieval.model.network.DescriptorNet` (its whitening slot is emptied for
            training).
        pairs: training pairs (any source: folders, CSV, SfM, cluster pseudo-labels).
        cfg: the training config.
        out_dir: the run folder.
        val: held-out pairs for the per-epoch validation mAP (``None``/empty: no validation).
        resume: continue from ``out_dir/last.pt`` (same model config required).
        epochs: train up to this epoch (default ``cfg.epochs``).
        skipped: unreadable images already left out (reported in the result).
        log: where the per-epoch lines go.

    Returns:
        :class:`TrainResult`.

    Raises:
        ConfigError: a resume from another model config.
        ResourceError: an out-of-memory batch on the GPU.
    """
    n_epochs = int(epochs if epochs is not None else cfg.epochs)
    run = Engine(net, cfg, out_dir, fields=LOG_FIELDS, total=n_epochs, progress=progress, log=log)
    val = val if val is not None and val.n_images else None
    start = run.resume(EpochStats) if resume else 1
    if start == 1 and val is not None and cfg.validate_before and not run.history:
        t0 = time.perf_counter()
        m0 = run.validate(val)
        run.record_start(EpochStats(epoch=0, val_map=m0, p=gem_p(net), seconds=time.perf_counter() - t0))

    def mine(seed: int) -> Tuples:
        return mine_tuples(net, pairs, nnum=cfg.nnum, qsize=cfg.qsize, poolsize=cfg.poolsize, seed=seed,
                           progress=run.progress, dist=run.dist, **run.common)

    for epoch in range(start, n_epochs + 1):
        t0 = time.perf_counter()
        ep = run.train_epoch(epoch, pairs, mine)
        vmap = run.validate(val)
        stats = EpochStats(epoch=epoch, loss=ep.loss, val_map=vmap, p=gem_p(net), lr=ep.lr,
                           avg_neg_distance=ep.tuples.avg_neg_distance, tuples=ep.used,
                           mine_seconds=ep.mine_seconds, train_seconds=ep.train_seconds,
                           seconds=time.perf_counter() - t0)
        run.record(epoch, stats, validated=val is not None)
        if ep.failures:
            log(f"epoch {epoch}: skipped {len(ep.failures)} tuple(s) with unreadable images, e.g. {ep.failures[0]}")

    whitening_map = run.finish(pairs, val, validated=val is not None)
    return TrainResult(run.out, run.history, run.best_step, run.best_score if val is not None else float("nan"),
                       run.best_path, run.last_path, whitening_map, list(skipped or []))
