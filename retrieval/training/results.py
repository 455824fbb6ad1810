"""What a training run reports, for both drivers: one row per step (:class:`StepStats`) and the
run's result (:class:`TrainResult`).

A step is an epoch of supervised fine-tuning (:mod:`retrieval.training.supervised`) or a
cluster-then-train period of unsupervised training (:mod:`retrieval.training.unsupervised`); step 0
is the network before training. A row holds the columns both drivers log (loss, validation mAP
with each whitening, GeM p, lr, seconds) and those of its own driver (:data:`COLUMNS`); the other
driver's columns are ``None`` and appear nowhere: not in ``log.csv``, the checkpoints' history,
nor ``--json``. The result is built by :meth:`retrieval.training.engine.Engine.result`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from retrieval.training.selection import StepScore, summary_lines

NAN = float("nan")

#: the columns of ``log.csv`` (and of each history record) of an epoch row and of a period row
COLUMNS: Dict[str, Tuple[str, ...]] = {
    "epoch": ("epoch", "loss", "val_map", "val_map_pca", "val_map_lw", "p", "lr", "avg_neg_distance", "tuples",
              "mine_seconds", "train_seconds", "seconds"),
    "period": ("period", "clusters", "target", "paired_images", "pairs", "nmi", "ari", "acc", "nmi_final", "loss",
               "val_map", "val_map_pca", "val_map_lw", "p", "lr", "cluster_seconds", "train_seconds", "seconds"),
}
#: the columns of one driver only, with the value a row has when the step did not measure it
_OWN: Dict[str, Dict[str, Any]] = {
    "epoch": {"avg_neg_distance": NAN, "tuples": 0, "mine_seconds": 0.0},
    "period": {"clusters": 0, "target": 0, "paired_images": 0, "pairs": 0, "nmi": NAN, "ari": NAN, "acc": NAN,
               "nmi_final": NAN, "cluster_seconds": 0.0},
}


def val_columns(score: Optional[StepScore]) -> Dict[str, float]:
    """A row's validation columns (``val_map``, ``val_map_pca``, ``val_map_lw``) from the step's
    score (:meth:`retrieval.training.engine.Engine.validate_step`); NaN without one."""
    if score is None:
        return {"val_map": NAN, "val_map_pca": NAN, "val_map_lw": NAN}
    return {"val_map": score.plain, "val_map_pca": score.maps["pca"], "val_map_lw": score.maps["lw"]}


def _pct(v: float) -> str:
    return "     -" if math.isnan(v) else f"{100 * v:6.2f}"


@dataclass
class StepStats:
    """One row of ``log.csv``: ``epoch`` (supervised) or ``period`` (unsupervised) is set, the
    other is ``None``.

    Both drivers: ``loss`` (mean per tuple; NaN at step 0), ``val_map`` (no whitening),
    ``val_map_pca`` / ``val_map_lw`` (with the whitening learned at that step; NaN where not
    scored), ``p`` (GeM), ``lr``, ``train_seconds``, ``seconds``.
    An epoch: ``avg_neg_distance`` (mean query–negative distance), ``tuples`` (trained on),
    ``mine_seconds``.
    A period: ``clusters`` / ``target`` / ``nmi`` / ``ari`` / ``acc`` of the clusters it trained on
    (made with the network of the period before), ``paired_images`` and ``pairs`` they gave,
    ``nmi_final`` (NMI of a fresh clustering into the final number of clusters with the network
    *after* the period), ``cluster_seconds``; ``val_map`` is after the period's training.
    """

    epoch: Optional[int] = None
    period: Optional[int] = None
    clusters: Optional[int] = None
    target: Optional[int] = None
    paired_images: Optional[int] = None
    pairs: Optional[int] = None
    nmi: Optional[float] = None
    ari: Optional[float] = None
    acc: Optional[float] = None
    nmi_final: Optional[float] = None
    loss: float = NAN
    val_map: float = NAN
    val_map_pca: float = NAN
    val_map_lw: float = NAN
    p: float = NAN
    lr: float = NAN
    avg_neg_distance: Optional[float] = None
    tuples: Optional[int] = None
    mine_seconds: Optional[float] = None
    cluster_seconds: Optional[float] = None
    train_seconds: float = 0.0
    seconds: float = 0.0

    def __post_init__(self) -> None:
        if (self.epoch is None) == (self.period is None):
            raise ValueError("a StepStats row is an epoch's or a period's: give one of epoch, period")
        for name, value in _OWN[self.unit].items():
            if getattr(self, name) is None:
                setattr(self, name, value)

    @property
    def unit(self) -> str:
        """``epoch`` or ``period``: what a step of this row's run is."""
        return "epoch" if self.epoch is not None else "period"

    @property
    def step(self) -> int:
        return int(self.epoch if self.epoch is not None else self.period)

    @property
    def columns(self) -> Tuple[str, ...]:
        return COLUMNS[self.unit]

    def to_dict(self) -> Dict[str, Any]:
        """The row's columns, in ``log.csv`` order: what the checkpoints' history and ``--json`` hold
        (``StepStats(**d)`` reads it back)."""
        return {c: getattr(self, c) for c in self.columns}

    def line(self, total: int) -> str:
        """The log line of the row, ``total`` the run's number of steps."""
        loss = "     -" if math.isnan(self.loss) else f"{self.loss:.4f}"
        if self.unit == "period":
            return (f"period {self.period:>2}/{total}  clusters {self.clusters:>5} (target {self.target})  "
                    f"NMI {_pct(self.nmi)}  NMI@final {_pct(self.nmi_final)}  loss {loss}  "
                    f"val mAP {_pct(self.val_map)}  p {self.p:.3f}  {self.seconds:.1f}s")
        w = "".join(f" {name} {100 * v:.2f}" for name, v in (("PCA-w", self.val_map_pca), ("Lw", self.val_map_lw))
                    if not math.isnan(v))
        m = f"{_pct(self.val_map)} ({w.strip()})" if w else _pct(self.val_map)
        return (f"epoch {self.epoch:>3}/{total}  loss {loss}  mAP {m}  p {self.p:.3f}  "
                f"lr {self.lr:.2e}  neg-d {self.avg_neg_distance:.3f}  {self.seconds:.1f}s")


@dataclass
class TrainResult:
    """What a training run returns, supervised or unsupervised.

    unit: ``epoch`` (supervised) or ``period`` (unsupervised).
    history: one :class:`StepStats` per step (step 0 = before training, when validated).
    best_step, best_map: the step kept in ``best.pt`` (0 = the starting network) and its
    validation mAP with the kept whitening (NaN without validation); also read as
    ``best_epoch`` / ``best_period``.
    whitening: the whitening in ``best.pt`` (``none`` | ``pca`` | ``lw``).
    whitening_map: validation mAP of the ``best.pt`` network with ``none``/``pca``/``lw`` whitening.
    extraction: how ``best.pt`` describes images (``image_size``, ``scales``): what the index uses.
    skipped: supervised: ``(path, reason)`` of unreadable images left out (``None`` unsupervised).
    labels: unsupervised: (N,) int64, the last period's cluster of every training image (``None``
    supervised).
    rank: the process that returns it (0 unless several run: rank 0 alone wrote the run folder).
    selection: how ``best.pt`` was chosen (:meth:`~retrieval.training.selection.ModelSelection.summary`:
    the kept and the simplest candidate, the kept gain with its interval, ``why``, every tested
    candidate); ``{}`` without validation.
    """

    out_dir: Path
    history: List[StepStats]
    best_step: int
    best_map: float
    best_path: Path
    last_path: Path
    unit: str = "epoch"
    whitening_map: Dict[str, float] = field(default_factory=dict)
    whitening: str = "none"
    extraction: Dict[str, Any] = field(default_factory=dict)
    skipped: Optional[List[Tuple[str, str]]] = None
    labels: Optional[np.ndarray] = None
    rank: int = 0
    selection: Dict[str, Any] = field(default_factory=dict)

    @property
    def best_epoch(self) -> Optional[int]:
        """The epoch in ``best.pt`` (supervised; ``None`` for a run of periods)."""
        return self.best_step if self.unit == "epoch" else None

    @property
    def best_period(self) -> Optional[int]:
        """The period in ``best.pt`` (unsupervised; ``None`` for a run of epochs)."""
        return self.best_step if self.unit == "period" else None

    def to_json(self) -> Dict[str, Any]:
        """What ``tools/train_gem.py --json`` prints: the paths, ``best_<unit>``, the kept whitening,
        ``selection`` (what was kept and why),
        ``skipped`` (supervised) or ``clusters`` (unsupervised: how many), and the history."""
        doc: Dict[str, Any] = {
            "out_dir": str(self.out_dir), f"best_{self.unit}": self.best_step, "best_map": self.best_map,
            "best_path": str(self.best_path), "last_path": str(self.last_path), "whitening": self.whitening,
            "whitening_map": self.whitening_map, "extraction": self.extraction, "selection": self.selection}
        if self.skipped is not None:
            doc["skipped"] = [{"path": str(p), "reason": r} for p, r in self.skipped]
        if self.labels is not None:
            doc["clusters"] = int(np.unique(self.labels).size)
        doc["history"] = [h.to_dict() for h in self.history]
        return doc

    def summary(self) -> str:
        """A few lines for the user: what best.pt is, where, and how to index with it."""
        return summary_lines(self.unit, self.best_step, self.best_map, self.whitening, self.whitening_map,
                             self.best_path, self.out_dir, self.extraction, why=self.selection.get("why", ""))
