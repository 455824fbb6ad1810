"""A training run from a config file: what ``tools/train_gem.py`` does, callable from Python
(also as ``retrieval.train``).

:func:`run_training` reads the ``train:`` section (and ``unsupervised:`` when present), loads the
data, builds the network of the ``model:`` section and runs the matching driver:

* no ``unsupervised:`` section — label-supervised fine-tuning (:func:`retrieval.training.supervised.train`)
  on the pairs of ``train.data`` (class folders, a pairs CSV, the SfM-120k pickle, or ``toy``);
* an ``unsupervised:`` section — cluster-then-train periods on unlabeled images
  (:func:`retrieval.training.unsupervised.train_unsupervised`); ``resume`` and ``epochs`` do not
  apply (the periods are set by ``unsupervised.periods``).

Launched by ``torchrun --nproc_per_node N`` or Slurm's ``srun`` (more than one process in the
environment), supervised training is distributed (:mod:`retrieval.training.distributed`): the
process group is started here and ended when the run ends, rank 0 prepares the data first (a toy
collection is generated once), and rank 0 alone logs and writes the run folder. Unsupervised
training is refused under several processes, with one line: its clustering is a whole-collection
computation that one process does; run it with ``python``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Union

from retrieval.core.backbone import resolve_device
from retrieval.core.config import from_dict
from retrieval.core.errors import ConfigError
from retrieval.model.network import build_network
from retrieval.settings import Settings, load_settings
from retrieval.training.config import TrainConfig, UnsupervisedConfig
from retrieval.core.ranks import current_ranks
from retrieval.training.distributed import distributed_session
from retrieval.training.results import TrainResult
from retrieval.training.supervised import load_training_pairs
from retrieval.training.supervised import train as train_supervised
from retrieval.training.unsupervised import load_unlabeled_data, train_unsupervised

PathLike = Union[str, Path]
Log = Callable[[str], None]


def run_training(settings: Union[PathLike, Settings], *, data: Optional[PathLike] = None,
                 out: Optional[PathLike] = None, resume: bool = False, epochs: Optional[int] = None,
                 device: Optional[str] = None, workers: Optional[int] = None, progress: bool = True,
                 log: Log = print) -> TrainResult:
    """Train the model of a config (module docstring) into a run folder.

    Args:
        settings: a YAML config path (``configs/train_*.yaml``) or loaded :class:`~retrieval.settings.Settings`.
        data: training data, overriding ``train.data`` (and ``unsupervised.images``).
        out: the run folder (default ``runs/<config name>``).
        resume: continue from ``<out>/last.pt`` (supervised only).
        epochs: train up to this epoch, overriding ``train.epochs`` (supervised only; ≥ 1).
        device: ``cpu`` | ``cuda`` | ``cuda:N``, overriding ``train.device``.
        workers: image decoding processes, overriding ``train.workers``.
        progress: progress bars; log: where the data summary and the per-epoch/period lines go.

    Returns:
        :class:`~retrieval.training.results.TrainResult` (of epochs, or of periods), with
        ``to_json()`` and ``summary()``.

    Raises:
        ConfigError, DataError, WeightsError, ResourceError: one-line user errors.
    """
    if not isinstance(settings, Settings):
        settings = load_settings(settings)
    where = settings.source or "config"
    cfg = from_dict(TrainConfig, settings.raw.get("train") or {}, f"{where}: train")
    if device:
        cfg.device = device
    resolve_device(cfg.device)  # a missing CUDA device is one line, before any data is read or folder made
    if workers is not None:
        cfg.workers = workers
    if epochs is not None and epochs < 1:
        raise ConfigError(f"--epochs: must be ≥ 1, got {epochs}")
    out_dir = Path(out) if out else Path("runs") / Path(where).stem

    if settings.raw.get("unsupervised") is not None:  # pairs source `cluster`: no labels (JULE-style)
        if current_ranks().parallel:
            raise ConfigError("unsupervised training runs in one process; launch it with python, not torchrun/srun")
        if resume or epochs is not None:
            raise ConfigError("--resume/--epochs do not apply to unsupervised training; set unsupervised.periods")
        ucfg = from_dict(UnsupervisedConfig, settings.raw.get("unsupervised") or {}, f"{where}: unsupervised")
        paths, truth, val = load_unlabeled_data(cfg, ucfg, data, where=where, log=log)
        net = build_network(settings.model, seed=cfg.seed)
        return train_unsupervised(net, paths, cfg, ucfg, out_dir, val=val, truth=truth,
                                  val_on_train=ucfg.validation == "transductive", progress=progress, log=log)

    with distributed_session(cfg.device) as dist:
        if not dist.is_main:  # rank 0 alone logs
            progress, log = False, _silent
        with dist.main_first():  # a toy collection is generated once, by rank 0
            train_pairs, val_pairs, skipped = load_training_pairs(cfg, data, log=log)
        log(f"train: {train_pairs.summary()}")
        log(f"val:   {val_pairs.summary()}")
        net = build_network(settings.model, seed=cfg.seed)
        return train_supervised(net, train_pairs, cfg, out_dir, val=val_pairs, resume=resume, epochs=epochs,
                                skipped=skipped, progress=progress, log=log)


def _silent(msg: str) -> None:
    """The log of ranks other than 0."""


#: ``retrieval.train`` (the package's public API): the same function
train = run_training
