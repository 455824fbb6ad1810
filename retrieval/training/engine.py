"""The training engine: what supervised and unsupervised training share, written once.

A run is a sequence of *steps*; the driver decides what a step is (an epoch for
:mod:`retrieval.training.supervised`, a cluster-then-train period for
:mod:`retrieval.training.unsupervised`) and what its log row holds (a
:class:`~retrieval.training.results.StepStats` with its columns). The engine owns the rest:

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
  **validation** mAP (:meth:`Engine.validate_step`); running out of GPU memory there is a one-line
  :class:`~retrieval.core.errors.ResourceError` that names the setting to lower;
* **the run folder**: ``log.csv`` (one row per step, rewritten atomically), ``last.pt`` after every
  step, ``best.pt`` with the simplest candidate when it is scored and with the kept one at the end
  of the run (:meth:`Engine.finish`; with no validation, then only), ``candidates/{unit}{step}.pt``
  (the networks that may end up in ``best.pt``, with their whitenings, until the end of the run:
  :meth:`Engine.candidate_path`); every checkpoint written atomically by
  :func:`~retrieval.model.checkpoint.save_checkpoint`. A checkpoint's ``extra`` is
  :meth:`Engine.state` (optimizer, epoch, history, best so far, training config, torch RNG: what
  :meth:`Engine.resume` continues from) unless the driver gives its own;
* **the choice of best.pt** (:mod:`retrieval.training.selection`): every validated step, the
  starting network included, is scored with none / PCA-w / Lw (:meth:`Engine.validate_step`,
  ``train.whitening: auto``) or the forced whitening, described at the model's extraction settings
  (``model.image_size``, ``model.scales``: what the index will use); at the end of the run the
  selection decides over all of them together and ``best.pt`` holds the kept candidate with its
  whitening (``extra["whitening_map"]``, ``extra["whitening"]``, ``extra["selection"]``). With
  no validation, :meth:`Engine.finish` applies the documented fallback rule; the run's
  :class:`~retrieval.training.results.TrainResult` (:meth:`Engine.result`);
* **several processes** (``torchrun``, ``srun``: :mod:`retrieval.training.distributed`): each rank
  uses its local rank's GPU, the network is wrapped in ``DistributedDataParallel``, mining
  describes the pool in parts and all-gathers it, each epoch's tuples are split across the ranks;
  every rank scores the validation candidates itself (same weights, same numbers, no collective in
  the selection); rank 0 alone writes the run folder, logs, and learns a fallback whitening.
"""
from __future__ import annotations

import copy
import math
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image
from torch import nn

from retrieval.core.config import to_dict
from retrieval.core.errors import ConfigError, ResourceError
from retrieval.core.io import torch_save_atomic, write_log_csv
from retrieval.model.checkpoint import read_checkpoint, save_checkpoint
from retrieval.model.network import ModelConfig
from retrieval.model.whitening import Whitening
from retrieval.training.config import TrainConfig
from retrieval.training.distributed import DistContext, current
from retrieval.training.epoch import TrainingForward, epoch_seed, train_epoch
from retrieval.training.loss import build_loss
from retrieval.training.mining import Tuples
from retrieval.training.pairs import PairSet
from retrieval.training.results import COLUMNS, StepStats, TrainResult
from retrieval.training.selection import Choice, ModelSelection, StepScore, fit_whitenings, score_step
from retrieval.training.validation import describe_pairs, sample_pairs

PathLike = Union[str, Path]
#: The run folder's folder of the networks that may end up in best.pt, until the run is decided.
CANDIDATES = "candidates"
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


def _silent(msg: str) -> None:
    """The log of ranks other than 0."""


def _comparable(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """A model config without what training changes (weights source, whitening, output dim)."""
    return {k: v for k, v in cfg.items() if k not in ("weights", "whitening", "dim")}


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
        fields: the ``log.csv`` columns (default: those of a ``unit`` row,
            :data:`~retrieval.training.results.COLUMNS`).
        total: the number of steps of the run (for the log lines: ``row.line(total)``).
        state: ``state(step) -> dict``, the ``extra`` stored in the checkpoints (default
            :meth:`state`, the resumable state).
        progress: progress bars; log: where the per-step lines go.
        unit: what a step is (``epoch``, ``period``): in the messages, the log columns and the result.

    Attributes: ``device``, ``image_size``, ``optimizer``, ``loss_fn``, ``history`` (the rows so
    far), ``best_step`` / ``best_score`` (the step in ``best.pt`` and its validation mAP, or the
    step number when not validated), ``step`` (the last step recorded), ``last_path``,
    ``best_path``, ``log_path``, ``dist``, ``model`` (the network wrapped in
    ``DistributedDataParallel`` under several processes, else ``None``).
    """

    def __init__(self, net: nn.Module, cfg: TrainConfig, out_dir: PathLike, *, total: int,
                 fields: Optional[Sequence[str]] = None,
                 state: Optional[Callable[[int], Dict[str, Any]]] = None, progress: bool = True,
                 log: Log = print, unit: str = "epoch", dist: Optional[DistContext] = None) -> None:
        cfg.validate()
        self.dist = dist if dist is not None else current(cfg.device)  # the device is checked here, first
        if not self.dist.is_main:  # rank 0 alone logs and shows progress
            progress, log = False, _silent
        self.net, self.cfg, self.fields, self.total = net, cfg, tuple(fields or COLUMNS[unit]), int(total)
        self.unit = unit
        self.progress, self.log = progress, log
        self.device = self.dist.device  # resolved before the run folder: a bad --device creates nothing
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.last_path, self.best_path, self.log_path = self.out / "last.pt", self.out / "best.pt", self.out / "log.csv"
        self.image_size = int(cfg.image_size or net.config.image_size)
        #: how best.pt will describe images (the model's settings): validation and whitening use them
        self.extraction = dict(image_size=int(net.config.image_size), scales=[float(s) for s in net.config.scales])
        self.selection = ModelSelection(cfg.whitening, unit=unit, log=log, steps=self.total,
                                        with_start=cfg.validate_before, seed=cfg.seed)
        sc = ", ".join(f"{x:g}" for x in self.extraction["scales"])
        log(f"best.pt will describe images at {self.extraction['image_size']} px, scales {sc} (model.image_size, "
            f"model.scales: what tools/index.py and tools/search.py use, and what validation and whitening "
            f"use here); training at {self.image_size} px (train.image_size)")
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
        self.history: List[StepStats] = []
        self.best_step, self.best_score, self.step = 0, -math.inf, 0
        self.kept_start = False  # keep_start(): best.pt is the starting network whatever follows
        self.kept_why = ""

    def check_extraction(self, paths: Sequence[PathLike], sample: int = 32) -> None:
        """Warn when the training images are much larger than ``model.image_size`` (median long
        side of up to ``sample`` image headers ≥ 2×) *and* ``model.image_size`` is below the default
        model's (:class:`~retrieval.model.network.ModelConfig`: 320 px): best.pt would describe
        them at a fraction of their detail. At the default size or above nothing is said: that is
        the photo setting already, and larger photos are described at it by design."""
        size = self.extraction["image_size"]
        default = ModelConfig()
        if size >= default.image_size:
            return
        sides = []
        for p in list(paths)[:: max(1, len(paths) // sample)][:sample]:
            try:
                with Image.open(p) as im:
                    sides.append(max(im.size))
            except Exception:  # unreadable files are reported elsewhere
                continue
        if sides and float(np.median(sides)) >= 2 * size:
            sc = ", ".join(f"{x:g}" for x in default.scales)
            self.log(f"warning: the training images are about {int(np.median(sides))} px but best.pt will describe "
                     f"them at {size} px (model.image_size: {size}); for photos raise model.image_size to the "
                     f"default model's {default.image_size} (scales [{sc}]) and keep train.image_size small for speed")

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
                "history": [h.to_dict() for h in self.history],
                "best_epoch": self.best_step, "best_map": self.best_score, "train_config": to_dict(self.cfg),
                "selection": self.selection.state(), "kept_start": self.kept_why, "torch_rng": torch.get_rng_state()}

    def resume(self) -> int:
        """Continue from ``last.pt`` (written with :meth:`state`): weights, optimizer, history, best
        so far, torch RNG. Returns the next step.

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
        self.history = [StepStats(**h) for h in extra["history"]]
        self.best_step, self.best_score = int(extra["best_epoch"]), float(extra["best_map"])
        self.selection.restore(extra.get("selection") or {})
        if extra.get("kept_start"):
            self.kept_start, self.kept_why = True, str(extra["kept_start"])
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

    def validate_step(self, step: int, val: Optional[PairSet], pairs: Optional[PairSet]) -> Optional[StepScore]:
        """Score the network of ``step`` on ``val`` for :mod:`~retrieval.training.selection`: the
        validation mAP with each competing whitening, learned at this step on ``pairs``, described
        at the model's extraction settings. ``None`` without ``val``."""
        if val is None:
            return None
        if pairs is not None and self.selection.kinds != ("none",):
            n = min(pairs.n_pairs, self.cfg.whiten_pairs)
            self.selection.check_pairs(n, sample_pairs(pairs, n, self.cfg.seed).n_images, self.net.backbone.out_channels)
        with self.describing():
            return score_step(self.net, step, pairs, val, self.selection.kinds, max_pairs=self.cfg.whiten_pairs,
                              shrinkage=self._shrinkage, batch_size=self.cfg.mine_batch, workers=self.cfg.workers,
                              device=self.device, seed=self.cfg.seed, progress=self.progress, **self.extraction)

    @property
    def _shrinkage(self) -> Any:
        return "auto" if self.cfg.whiten_shrinkage is None else self.cfg.whiten_shrinkage

    def _save_best(self, step: int, whitening: Optional[Whitening], extra: Dict[str, Any]) -> None:
        """``best.pt``: the current network with ``whitening`` in its slot (emptied again after);
        rank 0 alone writes it."""
        if not self.dist.is_main:
            return
        if whitening is not None:
            self.net.set_whitening(whitening.m, whitening.P, kind=whitening.kind)
        try:
            save_checkpoint(self.net, self.best_path, extra=extra)
        finally:
            self.net.clear_whitening()

    def _consider(self, step: int, score: Optional[StepScore]) -> bool:
        """Offer ``score`` to the selection; keep the step's weights when one of its candidates can
        end up in ``best.pt`` (:meth:`_keep_candidate`); write ``best.pt`` when ``score`` holds the
        simplest candidate (it holds it until :meth:`finish` decides). Returns whether it did."""
        if score is None:
            return False
        choice = self.selection.consider(score)
        self._keep_candidate(step, score)
        if choice is None:
            return False
        self.best_step, self.best_score = choice.step, choice.val_map
        w = score.whitenings.get(choice.kind) if choice.kind != "none" else None
        extra = dict(self._state(step), whitening=choice.kind, whitening_map=dict(score.maps),
                     whitening_shrinkage=float(w.shrinkage) if w is not None else 0.0,
                     selection=self.selection.state())
        self._save_best(step, w, extra)
        return True

    def candidate_path(self, step: int) -> Path:
        """Where the network of ``step`` waits for the end of the run: ``candidates/{unit}{step}.pt``."""
        return self.out / CANDIDATES / f"{self.unit}{step}.pt"

    def _keep_candidate(self, step: int, score: StepScore) -> None:
        """Write the network of ``step`` and its whitenings to :meth:`candidate_path` (atomically;
        rank 0) when :meth:`~retrieval.training.selection.ModelSelection.worth_keeping` says it
        can end up in ``best.pt``; its ``extra`` is the step's state without the optimizer."""
        if not self.dist.is_main or not self.selection.worth_keeping(step):
            return
        # Whitening.to_state with m and P as tensors, which a weights_only load reads
        ws = {k: dict(w.to_state(), m=torch.from_numpy(np.ascontiguousarray(w.m, dtype=np.float32)),
                      P=torch.from_numpy(np.ascontiguousarray(w.P, dtype=np.float32)))
              for k, w in score.whitenings.items()}
        extra = {k: v for k, v in self._state(step).items() if k not in ("optimizer", "torch_rng")}
        self.candidate_path(step).parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(self.net, self.candidate_path(step),
                        extra=dict(extra, whitening_map=dict(score.maps), whitenings=ws))

    def _write_decision(self) -> None:
        """``best.pt`` := the decided candidate (rank 0), from its step's kept weights and
        whitening, or, when ``best.pt`` already holds it (a run that had ended, resumed), as it is
        with the final selection; then the kept weights are removed."""
        sel, b = self.selection, self.selection.best
        path = self.candidate_path(b.step)
        if path.is_file():
            ck = read_checkpoint(path)
            net = copy.deepcopy(self.net)
            net.load_state_dict(ck["state_dict"])
            w = ck["extra"].get("whitenings", {}).get(b.kind) if b.kind != "none" else None
            if w is not None:
                net.set_whitening(w["m"].numpy(), w["P"].numpy(), kind=w["kind"])
            extra = {k: v for k, v in ck["extra"].items() if k != "whitenings"}
            if "best_epoch" in extra:  # the step's state was written before the call was made
                extra.update(best_epoch=b.step, best_map=b.val_map)
            save_checkpoint(net, self.best_path, extra=dict(
                extra, whitening=b.kind, whitening_shrinkage=float(w["shrinkage"]) if w is not None else 0.0,
                selection=sel.state()))
        else:  # best.pt holds it already (kept from a run that had ended): the final selection only
            ck = read_checkpoint(self.best_path)
            ck["extra"] = dict(ck["extra"], selection=sel.state())
            torch_save_atomic(ck, self.best_path)
        if self.last_path.is_file():  # a resumed extension must know these weights are gone
            ck = read_checkpoint(self.last_path)
            if "selection" in ck["extra"]:
                ck["extra"] = dict(ck["extra"], selection=sel.state())
                torch_save_atomic(ck, self.last_path)
        shutil.rmtree(self.out / CANDIDATES, ignore_errors=True)

    def keep_start(self, why: str) -> None:
        """``best.pt`` is the network as it is now (the starting network, no whitening), written
        at once; later steps are trained and logged but never replace it. For a run whose
        validation was asked for but cannot exist (``why`` is logged): nothing could show a gain
        is real, so the simplest candidate is kept (:mod:`~retrieval.training.selection`)."""
        self.kept_start, self.kept_why = True, why
        self.selection.best = self.selection.base = Choice(0, "none", float("nan"))
        self.best_step, self.best_score = 0, float("nan")
        self.log(why)
        self._save_best(0, None, dict(self._state(0), whitening="none", whitening_map={}, whitening_shrinkage=0.0,
                                      selection=self.selection.state()))

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

    def record_start(self, row: StepStats, score: Optional[StepScore] = None) -> None:
        """Log the row of the network before training (step 0): ``log.csv`` and a line. With a
        ``score`` the starting network is a candidate for ``best.pt`` (written when it leads)."""
        self.history.append(row)
        best = False
        if score is not None:
            self.selection.check_start(score)
            best = self._consider(0, score)
        self.log(row.line(self.total) + (f"  *best ({self._kept()})" if best else ""))
        if self.dist.is_main:
            write_log_csv(self.log_path, self.fields, self.history)

    def _kept(self) -> str:
        b = self.selection.best
        return "" if b is None else {"none": "no whitening", "pca": "PCA-w", "lw": "Lw"}[b.kind]

    def record(self, step: int, row: StepStats, *, validated: bool, score: Optional[StepScore] = None) -> bool:
        """Record ``step``: append ``row``, write ``last.pt``, offer
        ``score`` (:meth:`validate_step`) to the selection (which keeps the step's weights when
        they may end up in ``best.pt``, and writes ``best.pt`` when it holds the simplest
        candidate), rewrite ``log.csv``, log the line. Without validation the latest step is the
        best so far (``best.pt`` is written by :meth:`finish`). Returns whether ``best.pt`` was
        written (validated) or the step is the best so far (not)."""
        self.history.append(row)
        self.step = step
        if validated:
            improved = self._consider(step, score)
        elif self.kept_start:
            improved = False
        else:
            improved = True
            self.best_step, self.best_score = step, float(step)
        if self.dist.is_main:
            save_checkpoint(self.net, self.last_path, extra=self._state(step))
            write_log_csv(self.log_path, self.fields, self.history)
        self.log(row.line(self.total) + (f"  *best ({self._kept()})" if improved and validated else ""))
        return improved

    def finish(self, pairs: PairSet, val: Optional[PairSet], *, validated: bool,
               pairs_note: Optional[str] = None) -> Dict[str, float]:
        """End the run. With validation the selection decides over every candidate (on every rank
        alike), ``best.pt`` is written with the kept one and the kept weights are removed
        (:meth:`_write_decision`); otherwise (no validation, or nothing could be scored) the
        fallback rule of :meth:`~retrieval.training.selection.ModelSelection.fallback` applies: the last step, with
        the rule's whitening learned now on ``pairs``. Logs what was kept and each alternative's
        validation mAP.

        Args:
            pairs: the training pairs (the fallback's whitening is learned on them).
            val: the validation pairs (unused: kept for the drivers' calls).
            validated: whether the steps were scored on validation.
            pairs_note: for the log: where the pairs came from.
        Returns:
            the validation mAP of the ``best.pt`` step with ``none`` / ``pca`` / ``lw`` (NaN where
            not scored; ``{}`` with no validation, and on every rank but 0, which alone writes
            ``best.pt``).
        """
        sel = self.selection
        if validated and not self.kept_start and sel.base is not None:  # the call, on every rank alike
            sel.decide()
            sel.released = self.step
            self.best_step, self.best_score = sel.best.step, sel.best.val_map
        if not self.dist.is_main:
            return {}
        if self.kept_start:
            self.best_step = 0
            return {}
        if not validated or sel.best is None:
            D = self.net.backbone.out_channels
            n = min(pairs.n_pairs, self.cfg.whiten_pairs)
            kind = sel.fallback(self.step, n, D)
            w = None
            if kind != "none":
                sel.check_pairs(n, sample_pairs(pairs, n, self.cfg.seed).n_images, D)
                with self.describing():
                    sub = sample_pairs(pairs, n, self.cfg.seed)
                    X, sub = describe_pairs(self.net, sub, batch_size=self.cfg.mine_batch, workers=self.cfg.workers,
                                            device=self.device, progress=self.progress, desc="whitening",
                                            **self.extraction)
                w = fit_whitenings(X, sub, [kind], self._shrinkage).get(kind)
                if w is None:
                    self.log(f"cannot learn {kind} from {pairs.n_pairs} pair(s): best.pt has no whitening")
                    sel.best.kind = "none"
            self.best_step = self.step
            extra = dict(self._state(self.step), whitening=w.kind if w is not None else "none", whitening_map={},
                         whitening_shrinkage=float(w.shrinkage) if w is not None else 0.0,
                         selection=sel.state())
            self._save_best(self.step, w, extra)
            return {}
        self._write_decision()
        self.log(sel.report(pairs_note))
        row = next((s for s in sel.scores if s["step"] == sel.best.step), {})
        return {k: float(row.get(k, float("nan"))) for k in ("none", "pca", "lw")}

    def result(self, whitening_map: Dict[str, float], *, validated: bool, **driver: Any) -> TrainResult:
        """The run's :class:`~retrieval.training.results.TrainResult` after :meth:`finish`
        (``whitening_map``: what it returned): the history, the step and whitening in ``best.pt``,
        the validation mAP (NaN when not ``validated``), the extraction settings, this rank;
        ``driver``: the driver's own fields (``skipped``, ``labels``)."""
        kept = self.selection.best
        return TrainResult(self.out, self.history, self.best_step, self.best_score if validated else float("nan"),
                           self.best_path, self.last_path, unit=self.unit, whitening_map=whitening_map,
                           whitening=kept.kind if kept else "none", extraction=dict(self.extraction),
                           rank=self.dist.rank,
                           selection=(self.selection.summary() if validated and self.selection.base else
                                      {"why": "best.pt is the starting network with no whitening: no validation, "
                                              "so no gain could be shown"} if self.kept_start else {}), **driver)
