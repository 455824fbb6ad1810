"""Fine-tuning a descriptor network on matching pairs (Radenović, Tolias, Chum, TPAMI 2018).

The supervised driver of :mod:`retrieval.training.engine`: a step is one epoch. Each epoch re-mines
tuples (query, positive, n hard negatives) with the current network
(:mod:`retrieval.training.mining`), trains on them (:mod:`retrieval.training.epoch`: real batches of
tuples, padded images masked out of the pooling, BatchNorm frozen, bf16 autocast on CUDA),
validates (mAP on held-out classes or views, with none / PCA-w / Lw learned at that epoch) and
checkpoints. The engine owns the rest: Adam with GeM p at ``p_lr_mult · lr`` and the exponential lr
decay, seeds (epoch ``e`` draws its pairs, pool and batch order from ``seed`` and ``e`` only, so a
run resumed after epoch ``e`` continues exactly as the uninterrupted run would, on CPU), and the
choice of ``best.pt`` (:mod:`retrieval.training.selection`): the training runs without the
whitening slot, and ``best.pt`` is chosen among the (epoch, whitening) pairs of the network before
training (epoch 0) and every epoch: the simplest unless validation shows a significant gain, decided
when the run ends.

Files in the run folder: ``last.pt`` (every epoch: weights, model config, optimizer, epoch, history,
training config), ``best.pt`` (the kept candidate, with its whitening; the starting network until
the run ends), ``candidates/`` (the epochs that may still be kept, until the run ends), ``log.csv``
(one row per epoch). The result: a :class:`~retrieval.training.results.TrainResult` of epochs, the
unreadable images left out in ``skipped``.
Under ``torchrun``/``srun`` (:mod:`retrieval.training.distributed`) every rank mines the same
tuples from the whole pool (described in parts and all-gathered), trains on its part of each step
(``DistributedDataParallel``), and rank 0 alone writes these files.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, List, Optional, Tuple, Union

import numpy as np
from torch import nn

from retrieval.core.errors import ConfigError, DataError
from retrieval.training.config import TrainConfig
from retrieval.training.engine import Engine
from retrieval.training.epoch import gem_p
from retrieval.training.mining import Tuples, mine_tuples
from retrieval.training.pairs import PairSet, drop_unreadable, load_pairs
from retrieval.training.results import COLUMNS, StepStats, TrainResult, val_columns
from retrieval.training.selection import split_for_selection
from retrieval.training.toy_data import prepare_toy_data

PathLike = Union[str, Path]
Log = Callable[[str], None]

#: the columns of ``log.csv``: an epoch row's (:data:`retrieval.training.results.COLUMNS`)
LOG_FIELDS = COLUMNS["epoch"]


# ----------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------
def load_training_pairs(cfg: TrainConfig, data: Optional[PathLike] = None, log: Log = print,
                        workers: Optional[int] = None) -> Tuple[PairSet, PairSet, List[Tuple[str, str]]]:
    """Load, check and split the training data: ``(train, val, skipped)``.

    ``data`` overrides ``cfg.data``. Unreadable images are dropped (``cfg.check_images``) and listed
    in ``skipped``; the validation set is ``cfg.val_data`` or ``cfg.val_fraction`` of the classes
    (at least the classes the choice of ``best.pt`` needs, when the data has twice as many:
    :func:`~retrieval.training.selection.split_for_selection`).
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
        try:
            train_pairs, val = split_for_selection(pairs, cfg.val_fraction, seed=cfg.seed, by=cfg.val_split,
                                                   steps=cfg.epochs, mode=cfg.whitening,
                                                   with_start=cfg.validate_before, log=log)
            if val.n_images and train_pairs.n_classes < 2 <= pairs.n_classes:
                raise DataError(f"holding out {val.n_classes} of {pairs.n_classes} classes leaves fewer than 2 "
                                "to train on")
        except DataError as e:  # too few classes (or views) to hold any out: train on all, say so
            log(f"no validation split is possible ({e}); training on all of it")
            train_pairs, val = pairs, pairs.subset(np.zeros(pairs.n_images, dtype=bool))
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
        :class:`~retrieval.training.results.TrainResult` (``unit="epoch"``, ``skipped``).

    Raises:
        ConfigError: a resume from another model config.
        ResourceError: an out-of-memory batch on the GPU.
    """
    n_epochs = int(epochs if epochs is not None else cfg.epochs)
    run = Engine(net, cfg, out_dir, total=n_epochs, progress=progress, log=log)
    val = val if val is not None and val.n_images else None
    start = run.resume() if resume else 1
    if not resume:
        run.check_extraction(pairs.paths)
        if val is not None:
            run.selection.check_validation(val)
        elif cfg.val_fraction > 0 or cfg.val_data:  # validation asked for, but there is none
            run.keep_start("no validation: nothing can show that fine-tuning gains, so best.pt is the starting "
                           "network with no whitening (the simplest candidate); give train.val_data, or set "
                           "train.val_fraction: 0 to keep the last epoch instead (docs/training.md)")
    if start == 1 and val is not None and cfg.validate_before and not run.history:
        t0 = time.perf_counter()
        s0 = run.validate_step(0, val, pairs)
        run.record_start(StepStats(epoch=0, p=gem_p(net), seconds=time.perf_counter() - t0, **val_columns(s0)), s0)

    def mine(seed: int) -> Tuples:
        return mine_tuples(net, pairs, nnum=cfg.nnum, qsize=cfg.qsize, poolsize=cfg.poolsize, seed=seed,
                           progress=run.progress, dist=run.dist, **run.common)

    for epoch in range(start, n_epochs + 1):
        t0 = time.perf_counter()
        ep = run.train_epoch(epoch, pairs, mine)
        score = run.validate_step(epoch, val, pairs)
        stats = StepStats(epoch=epoch, loss=ep.loss, p=gem_p(net), lr=ep.lr,
                          avg_neg_distance=ep.tuples.avg_neg_distance, tuples=ep.used,
                          mine_seconds=ep.mine_seconds, train_seconds=ep.train_seconds,
                          seconds=time.perf_counter() - t0, **val_columns(score))
        run.record(epoch, stats, validated=val is not None, score=score)
        if ep.failures:
            log(f"epoch {epoch}: skipped {len(ep.failures)} tuple(s) with unreadable images, e.g. {ep.failures[0]}")

    whitening_map = run.finish(pairs, val, validated=val is not None)
    return run.result(whitening_map, validated=val is not None, skipped=list(skipped or []))
