"""The training engine: what supervised and unsupervised training share, written once.

A run is a sequence of *steps*; the driver decides what a step is (an epoch for
:mod:`retrieval.training.supervised`, a cluster-then-train period for
:mod:`retrieval.training.unsupervised`) and what its log row holds. The engine owns the rest:

* **set-up**: the config checked, the run folder made, the device resolved, the training image
  size (``train.image_size``, else the model's), ``torch.use_deterministic_algorithms`` when
  ``train.deterministic``; the network's whitening slot emptied (training runs without it) and the
  network moved to the device;
* **optimiser and schedule**: Adam, backbone at ``lr`` with weight decay, pooling parameters (GeM p)
  at ``p_lr_mult · lr`` without, the first ``freeze_stages`` backbone stages frozen
  (:func:`make_optimizer`); ``lr_e = lr · exp(−lr_decay · (e − 1))`` for epoch ``e ≥ 1``
  (:func:`set_epoch_lr`), one schedule across the whole run;
* **seeding**: epoch ``e`` seeds torch and draws its tuples and batch order from ``train.seed`` and
  ``e`` only (:func:`~retrieval.training.epoch.epoch_seed`), so a run resumed after epoch ``e``
  continues exactly as the uninterrupted run would (CPU);
* **one training epoch** (:meth:`Engine.train_epoch`) on the tuples the driver mines, and the
  **validation** mAP (:meth:`Engine.validate`); running out of GPU memory there is a one-line
  :class:`~retrieval.core.errors.ResourceError` that names the setting to lower;
* **the run folder**: ``log.csv`` (one row per step, rewritten atomically), ``last.pt`` after every
  step, ``best.pt`` at every step whose validation mAP beats the best so far, or, with no
  validation, the final state when the run ends (:meth:`Engine.finish`); every checkpoint written
  atomically by :func:`~retrieval.model.checkpoint.save_checkpoint`. A checkpoint's ``extra`` is
  :meth:`Engine.state` (optimizer, epoch, history, best so far, training config, torch RNG: what
  :meth:`Engine.resume` continues from) unless the driver gives its own;
* **the whitening choice**: after the last step, Lw and PCA-w are learned on the training pairs
  with the network kept in ``best.pt``, the validation mAP with none / PCA-w / Lw is reported, and
  Lw is stored in ``best.pt`` (with ``extra["whitening_map"]`` and ``extra["whitening_shrinkage"]``);
* **several processes** (``torchrun``, ``srun``: :mod:`retrieval.training.distributed`): each rank
  uses its local rank's GPU, the network is wrapped in ``DistributedDataParallel``, mining and
  validation describe their images in parts and all-gather them, each epoch's tuples are split
  across the ranks; rank 0 alone writes the run folder, logs, and learns the final whitening.
"""
from __future__ import annotations

import dataclasses
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from retrieval.core.config import to_dict
from retrieval.core.errors import ConfigError, ResourceError
from retrieval.core.io import write_log_csv
from retrieval.model.checkpoint import network_from_checkpoint, read_checkpoint, save_checkpoint
from retrieval.training.config import TrainConfig
from retrieval.training.distributed import DistContext, current, extract_in_parts
from retrieval.training.epoch import TrainingForward, epoch_seed, train_epoch
from retrieval.training.loss import build_loss
from retrieval.training.mining import Tuples
from retrieval.training.pairs import PairSet
from retrieval.training.validation import learn_whitenings, mean_ap, validate

PathLike = Union[str, Path]
Log = Callable[[str], None]


# ----------------------------------------------------------------------------------------------
# Optimiser and learning-rate schedule
# ----------------------------------------------------------------------------------------------
def freeze_stages(net: nn.Module, n: int) -> List[str]:
    """Stop training the first ``n`` stages of ``net.backbone`` (``requires_grad = False``);
    returns their names. ``n`` larger than the backbone's stage count is a ``ConfigError``."""
    names = net.backbone.layer_names()
    if n > len(names) - 1:
        raise ConfigError(f"train.freeze_stages: {n} leaves nothing to train; {net.config.backbone} has "
                          f"{len(names)} stages ({', '.join(names)})")
    for name in names[:n]:
        net.backbone.stages[name].requires_grad_(False)
    return names[:n]


def make_optimizer(net: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam: backbone at ``lr`` with weight decay, pooling parameters (GeM p) at ``p_lr_mult·lr``
    without (fused kernel where available). Each group remembers its ``initial_lr`` for
    :func:`set_epoch_lr`. The first ``cfg.freeze_stages`` backbone stages are frozen first
    (:func:`freeze_stages`) and left out. Build it after moving ``net`` to its device."""
    if cfg.freeze_stages:
        freeze_stages(net, cfg.freeze_stages)
    pool_params = [p for p in net.pool.parameters() if p.requires_grad]
    ids = {id(p) for p in pool_params}
    rest = [p for p in net.parameters() if p.requires_grad and id(p) not in ids]
    groups = [{"params": rest, "lr": cfg.lr, "weight_decay": cfg.weight_decay, "initial_lr": cfg.lr}]
    if pool_params:
        lr_p = cfg.lr * cfg.p_lr_mult
        groups.append({"params": pool_params, "lr": lr_p, "weight_decay": 0.0, "initial_lr": lr_p})
    try:  # the fused kernel: same update, about 3× faster on CPU than the per-tensor loop
        return torch.optim.Adam(groups, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(groups)


def set_epoch_lr(optimizer: torch.optim.Optimizer, cfg: TrainConfig, epoch: int) -> float:
    """Exponential decay: ``lr = initial_lr · exp(−lr_decay · (epoch − 1))`` for epoch ≥ 1; returns
    the backbone lr."""
    f = math.exp(-cfg.lr_decay * max(0, epoch - 1))
    for g in optimizer.param_groups:
        g["lr"] = g["initial_lr"] * f
    return optimizer.param_groups[0]["lr"]


def _comparable(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """A model config without what training changes (weights source, whitening, output dim)."""
    return {k: v for k, v in cfg.items() if k not in ("weights", "whitening", "dim")}


def _silent(msg: str) -> None:
    """The log of ranks other than 0."""


# ----------------------------------------------------------------------------------------------
# The engine
# ----------------------------------------------------------------------------------------------
@dataclass
class EpochOutcome:
    """What :meth:`Engine.train_epoch` reports: mean loss per tuple, tuples used, the tuples
    (``avg_neg_distance``: mean query–negative distance), the lr, unreadable-image failures, and
    the seconds spent making the tuples and training on them."""

    loss: float
    used: int
    tuples: Tuples
    lr: float
    failures: List[str]
    mine_seconds: float
    train_seconds: float


class Engine:
    """One training run of ``net`` into the run folder ``out_dir`` (module docstring).

    Args:
        net: a :class:`~retrieval.model.network.DescriptorNet` (its whitening slot is emptied).
        cfg: the ``train:`` section.
        out_dir: the run folder (made if missing).
        fields: the ``log.csv`` columns (fields of the driver's row dataclass).
        total: the number of steps of the run (for the log lines: ``row.line(total)``).
        state: ``state(step) -> dict``, the ``extra`` stored in the checkpoints (default
            :meth:`state`, the resumable state).
        progress: progress bars; log: where the per-step lines go.
        dist: this process's place in a distributed run (default: the running process group's,
            :func:`~retrieval.training.distributed.current`; none: one process on ``cfg.device``).

    Attributes: ``device``, ``image_size``, ``optimizer``, ``loss_fn``, ``history`` (the rows so
    far), ``best_step`` / ``best_score`` (the step in ``best.pt`` and its validation mAP, or the
    step number when not validated), ``step`` (the last step recorded), ``last_path``,
    ``best_path``, ``log_path``, ``dist``, ``model`` (the network wrapped in
    ``DistributedDataParallel`` under several processes, else ``None``).
    """

    def __init__(self, net: nn.Module, cfg: TrainConfig, out_dir: PathLike, *, fields: Sequence[str], total: int,
                 state: Optional[Callable[[int], Dict[str, Any]]] = None, progress: bool = True,
                 log: Log = print, dist: Optional[DistContext] = None) -> None:
        cfg.validate()
        self.dist = dist if dist is not None else current(cfg.device)
        if not self.dist.is_main:  # rank 0 alone logs and shows progress
            progress, log = False, _silent
        self.net, self.cfg, self.fields, self.total = net, cfg, tuple(fields), int(total)
        self.progress, self.log = progress, log
        self.device = self.dist.device  # resolved before the run folder: a bad --device creates nothing
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.last_path, self.best_path, self.log_path = self.out / "last.pt", self.out / "best.pt", self.out / "log.csv"
        self.image_size = int(cfg.image_size or net.config.image_size)
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        if getattr(net, "has_whitening", False):
            net.clear_whitening()
        net.to(self.device)
        self.optimizer = make_optimizer(net, cfg)
        self.model = (self.dist.wrap(TrainingForward(net), broadcast_buffers=not cfg.freeze_bn)
                      if self.dist.parallel else None)
        self.loss_fn = build_loss(cfg.loss, cfg.resolved_margin(net.config.backbone))
        self._state = state or self.state
        self.history: List[Any] = []
        self.best_step, self.best_score, self.step = 0, -math.inf, 0

    @property
    def common(self) -> Dict[str, Any]:
        """The description settings of mining, validation and whitening: image size, batch
        (``train.mine_batch``), workers, device."""
        return dict(image_size=self.image_size, batch_size=self.cfg.mine_batch, workers=self.cfg.workers,
                    device=self.device)

    def state(self, step: int) -> Dict[str, Any]:
        """The resumable state after ``step``: optimizer, epoch, history, best so far, training
        config, torch RNG."""
        return {"optimizer": self.optimizer.state_dict(), "epoch": step,
                "history": [dataclasses.asdict(h) for h in self.history],
                "best_epoch": self.best_step, "best_map": self.best_score, "train_config": to_dict(self.cfg),
                "torch_rng": torch.get_rng_state()}

    def resume(self, row: Callable[..., Any]) -> int:
        """Continue from ``last.pt`` (written with :meth:`state`): weights, optimizer, history (rows
        rebuilt with ``row(**dict)``), best so far, torch RNG. Returns the next step.

        Raises:
            ConfigError: no ``last.pt``, or one trained with another model config.
        """
        if not self.last_path.is_file():
            raise ConfigError(f"--resume: no checkpoint to resume from at {self.last_path}")
        ck = read_checkpoint(self.last_path)
        if _comparable(ck["config"]) != _comparable(to_dict(self.net.config)):
            raise ConfigError(f"--resume: {self.last_path} was trained with another model config; "
                              "use the same config or another --out folder")
        self.net.load_state_dict(ck["state_dict"])
        extra = ck["extra"]
        self.optimizer.load_state_dict(extra["optimizer"])
        self.history = [row(**h) for h in extra["history"]]
        self.best_step, self.best_score = int(extra["best_epoch"]), float(extra["best_map"])
        self.step = int(extra["epoch"])
        if isinstance(extra.get("torch_rng"), torch.Tensor):
            torch.set_rng_state(extra["torch_rng"])
        self.net.to(self.device)
        self.log(f"resumed {self.last_path} after epoch {self.step}")
        return self.step + 1

    @contextmanager
    def describing(self) -> Iterator[None]:
        """Out of GPU memory while describing images (mining, validation, clustering) becomes a
        :class:`ResourceError` naming ``train.mine_batch``."""
        try:
            yield
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            raise ResourceError(f"out of GPU memory describing {self.cfg.mine_batch} images of {self.image_size} "
                                "px for mining/validation; lower train.mine_batch") from None

    def validate(self, val: Optional[PairSet]) -> float:
        """Validation mAP of the network on ``val`` (:func:`~retrieval.training.validation.validate`);
        NaN for ``None``."""
        if val is None:
            return float("nan")
        with self.describing():
            if self.dist.parallel:  # each rank describes its part of the images
                c = self.common
                ex = extract_in_parts(self.net, val.paths, self.dist, image_size=c["image_size"], scales=[1.0],
                                      batch_size=c["batch_size"], workers=c["workers"], device=c["device"],
                                      progress=False, desc="validate")
                if ex.failures:
                    val = val.subset(np.isin(np.array([str(p) for p in val.paths]), ex.paths))
                return mean_ap(ex.descriptors, val)
            return validate(self.net, val, **self.common)

    def train_epoch(self, epoch: int, pairs: PairSet, make_tuples: Callable[[int], Tuples]) -> EpochOutcome:
        """Epoch ``epoch`` (1-based, counted across the run): seed torch with
        :func:`~retrieval.training.epoch.epoch_seed`, set the epoch's lr, make the tuples
        (``make_tuples(seed)``: mined with the current network or drawn), train one pass on them."""
        seed = epoch_seed(self.cfg.seed, epoch)
        torch.manual_seed(seed)
        lr = set_epoch_lr(self.optimizer, self.cfg, epoch)
        with self.describing():
            t0 = time.perf_counter()
            tuples = make_tuples(seed)
            t1 = time.perf_counter()
            loss, used, bad = train_epoch(self.net, pairs, tuples, self.optimizer, self.loss_fn, self.cfg, epoch,
                                          image_size=self.image_size, device=self.device, progress=self.progress,
                                          dist=self.dist, model=self.model)
        return EpochOutcome(loss, used, tuples, lr, bad, t1 - t0, time.perf_counter() - t1)

    def record_start(self, row: Any) -> None:
        """Log the row of the network before training (step 0): ``log.csv`` and a line; no checkpoint."""
        self.history.append(row)
        self.log(row.line(self.total))
        if self.dist.is_main:
            write_log_csv(self.log_path, self.fields, self.history)

    def record(self, step: int, row: Any, *, validated: bool) -> bool:
        """Record ``step``: append ``row`` (a dataclass with ``val_map`` and ``line(total)``), keep the
        best (by ``row.val_map`` when ``validated``, else the latest step), write ``last.pt``, and
        ``best.pt`` when validated and improved, rewrite ``log.csv``, log the line. Returns whether
        the step is the best so far."""
        self.history.append(row)
        self.step = step
        score = row.val_map if validated else float(step)
        improved = score > self.best_score
        if improved:
            self.best_step, self.best_score = step, score
        if self.dist.is_main:
            save_checkpoint(self.net, self.last_path, extra=self._state(step))
            if improved and validated:
                save_checkpoint(self.net, self.best_path, extra=self._state(step))
            write_log_csv(self.log_path, self.fields, self.history)
        self.log(row.line(self.total) + ("  *best" if improved and validated else ""))
        return improved

    def finish(self, pairs: PairSet, val: Optional[PairSet], *, validated: bool, unit: str = "epoch",
               pairs_note: Optional[str] = None) -> Dict[str, float]:
        """End the run: without validation (or when no step was validated) ``best.pt`` is the last
        step; then, when ``train.whitening``, learn Lw and PCA-w on ``pairs`` with the ``best.pt``
        network, score none / PCA-w / Lw on ``val`` and store Lw in ``best.pt``.

        Args:
            pairs: the training pairs the whitening is learned on.
            val: validation pairs for the whitening choice (``None``: the mAPs are NaN).
            validated: whether the steps were chosen by a validation mAP.
            unit, pairs_note: for the log line (``best <unit> N: …``; ``pairs_note`` says where the
                pairs came from).
        Returns:
            ``{"none", "pca", "lw"}`` validation mAPs (``{}`` without ``train.whitening``, and on
            every rank but 0, which alone writes ``best.pt``).
        """
        if not self.dist.is_main:
            return {}
        if not validated or not self.best_path.is_file():  # no validation: the last step is the best
            self.best_step = self.step
            save_checkpoint(self.net, self.best_path, extra=self._state(self.step))
        if not self.cfg.whitening:
            return {}
        best_ck = read_checkpoint(self.best_path)
        best_net = network_from_checkpoint(best_ck, source=str(self.best_path))
        best_net.clear_whitening()
        shrink = "auto" if self.cfg.whiten_shrinkage is None else self.cfg.whiten_shrinkage
        lw, _, maps = learn_whitenings(best_net, pairs, val, max_pairs=self.cfg.whiten_pairs, shrinkage=shrink,
                                       seed=self.cfg.seed, progress=self.progress, **self.common)
        best_net.set_whitening(lw.m, lw.P, kind="lw")
        extra = dict(best_ck["extra"])
        extra["whitening_map"] = maps
        extra["whitening_shrinkage"] = lw.shrinkage
        save_checkpoint(best_net, self.best_path, extra=extra)
        if val is not None:
            where = (f"shrinkage {lw.shrinkage:.3f}; Lw stored in {self.best_path}" if pairs_note is None
                     else f"Lw from {pairs_note}, stored in {self.best_path}")
            self.log("best {} {}: val mAP none {:.2f}  PCA-w {:.2f}  Lw {:.2f} ({})".format(
                unit, self.best_step, 100 * maps["none"], 100 * maps["pca"], 100 * maps["lw"], where))
        return maps
