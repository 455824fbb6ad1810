"""Which model ``best.pt`` holds: the best *validated* (step, whitening) of a run.

``train.whitening`` (``auto`` | ``lw`` | ``pca`` | ``none``) says which whitenings compete:

* ``auto`` (the default): every step of the run, **the starting network (step 0) included**, is
  scored with no whitening, PCA whitening (PCA-w) and learned whitening (Lw), each learned at that
  step on the training pairs; ``best.pt`` is the candidate with the highest validation mAP. A
  candidate must beat the best so far strictly, and candidates are met in the order (step 0: none,
  Lw, PCA-w), (step 1: …), …, so a tie keeps the earlier step and the simpler whitening: fine-tuning
  that does not raise validation mAP hands back the starting network;
* ``lw`` / ``pca`` / ``none``: that whitening is forced; the step is still chosen by the validation
  mAP *with* it (step 0 included).

**Whitening from few pairs.** Both whitenings are learned from a sample of at most
``train.whiten_pairs`` training pairs (:func:`~retrieval.training.validation.sample_pairs`) and
their ``n`` images. For Lw the *shrinkage* follows the pair count: the covariance of the matching
differences is shrunk by the Ledoit–Wolf formula (``train.whiten_shrinkage: null``), close to 0
with plenty of pairs and large with few, and all D output dimensions are kept (cutting Lw to the
sample's rank cost 21 Medium mAP points on the synthetic toy objects: docs/benchmarks.md). For
PCA-w the *dimension* follows it: at most ``n − 1`` (:func:`whitening_dim`), the rank of the
sample, since the other directions have no variance there and whitening them multiplies noise.
With fewer pairs than descriptor dimensions a warning says so (:meth:`ModelSelection.check_pairs`).

**With no validation** (``train.val_fraction: 0``, or too few classes to hold any out) nothing
measures the candidates, and :func:`fallback` applies a fixed rule instead: ``best.pt`` is the last
step, with Lw under ``auto`` when the training pairs number at least the descriptor dimension (a
full-rank covariance: the regime where Lw is known to help) and no whitening otherwise; a forced
value is kept.

**Validation that cannot choose.** :meth:`ModelSelection.check_validation` warns when the
validation set is too small to rank models (fewer than :data:`MIN_VAL_CLASSES` classes or
:data:`MIN_VAL_QUERIES` queries) and when the starting network already scores
≥ :data:`SATURATED` (no step can beat it); :meth:`ModelSelection.report` says when the validation
mAP never moved.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from retrieval.core.errors import DataError
from retrieval.model.whitening import Whitening, learn_whitening, pca_whitening
from retrieval.training.pairs import PairSet
from retrieval.training.validation import describe_pairs, mean_ap, sample_pairs

Log = Callable[[str], None]

#: The values of ``train.whitening``.
WHITENING_CHOICES = ("auto", "lw", "pca", "none")
#: Order in which the whitenings of one step are met (ties keep the earlier one).
KINDS = ("none", "lw", "pca")
NAMES = {"none": "none", "pca": "PCA-w", "lw": "Lw"}
#: Validation with fewer classes or queries than this is flagged as too small to rank models.
MIN_VAL_CLASSES, MIN_VAL_QUERIES = 4, 20
#: A starting validation mAP at or above this leaves no room for an improvement to show.
SATURATED = 0.99


def whitening_mode(value: Any) -> str:
    """``train.whitening`` as one of :data:`WHITENING_CHOICES`; ``true`` (the old switch) reads as
    ``lw``, ``false`` as ``none``. Anything else is returned unchanged (the config check refuses it)."""
    if value is True:
        return "lw"
    if value is False:
        return "none"
    return str(value).lower()


def whitening_dim(n_images: int, dim: int) -> int:
    """Output dimensions a whitening learned from ``n_images`` descriptors of ``dim`` keeps:
    ``min(dim, n_images − 1)`` (the rank of their covariance), at least 1."""
    return max(1, min(int(dim), int(n_images) - 1))


@dataclass
class StepScore:
    """The validation of one step: ``maps`` (kind → validation mAP; NaN where not scored) and the
    whitenings learned at that step (kind → :class:`Whitening` cut to its kept dimensions)."""

    step: int
    maps: Dict[str, float]
    whitenings: Dict[str, Whitening] = field(default_factory=dict)

    @property
    def plain(self) -> float:
        """The mAP with no whitening."""
        return self.maps.get("none", float("nan"))


def fit_whitenings(X: np.ndarray, pairs: PairSet, kinds: Sequence[str],
                   shrinkage: Any = "auto") -> Dict[str, Whitening]:
    """Lw and/or PCA-w (as asked by ``kinds``) from descriptors ``X (n, D)`` float32 of
    ``pairs.paths``: Lw with all D output dimensions (its shrinkage follows the pair count), PCA-w
    cut to :func:`whitening_dim`. A whitening that cannot
    be learned (fewer than 2 pairs or images, non-finite descriptors) is left out."""
    out: Dict[str, Whitening] = {}
    if not np.isfinite(X).all():  # a diverged network: nothing to learn from
        return out
    d = whitening_dim(X.shape[0], X.shape[1])
    try:
        if "lw" in kinds:  # all D dimensions: the shrinkage is what follows the pair count
            out["lw"] = learn_whitening(X, pairs.qidx, pairs.pidx, shrinkage=shrinkage)
    except DataError:
        pass
    try:
        if "pca" in kinds:
            w = pca_whitening(X)
            out["pca"] = Whitening(w.m, w.P[:d].copy(), "pca")
    except DataError:
        pass
    return out


def score_step(net: nn.Module, step: int, train_pairs: Optional[PairSet], val: PairSet, kinds: Sequence[str], *,
               image_size: int, scales: Sequence[float], max_pairs: int = 5000, shrinkage: Any = "auto",
               batch_size: int = 16, workers: Optional[int] = None, device: Optional[torch.device] = None,
               seed: int = 0, progress: bool = False,
               val_descriptors: Optional[np.ndarray] = None) -> StepScore:
    """Validation mAP of ``net`` (whitening slot empty) on ``val`` with each whitening of ``kinds``,
    described as the index will describe them (``image_size``, ``scales``: the model's).

    Lw and PCA-w are learned on at most ``max_pairs`` pairs of ``train_pairs``
    (:func:`fit_whitenings`). ``val_descriptors``: ``val``'s descriptors when already computed.
    """
    maps = {k: float("nan") for k in KINDS}
    common = dict(image_size=image_size, scales=scales, batch_size=batch_size, workers=workers, device=device,
                  progress=progress)
    if val_descriptors is None:
        V, val = describe_pairs(net, val, desc="validate", **common)
    else:
        V = val_descriptors
    maps["none"] = mean_ap(V, val)
    whitenings: Dict[str, Whitening] = {}
    wanted = [k for k in kinds if k != "none"]
    if wanted and train_pairs is not None and train_pairs.n_pairs >= 2:
        sub = sample_pairs(train_pairs, max_pairs, seed)
        X, sub = describe_pairs(net, sub, desc="whitening", **common)
        whitenings = fit_whitenings(X, sub, wanted, shrinkage)
        for k, w in whitenings.items():
            maps[k] = mean_ap(w.apply(V), val)
    return StepScore(step, maps, whitenings)


@dataclass
class Choice:
    """A kept candidate: the step, the whitening and its validation mAP."""

    step: int
    kind: str
    val_map: float


class ModelSelection:
    """The bookkeeping of :mod:`this module <retrieval.training.selection>`'s rule over a run.

    Args:
        mode: ``train.whitening`` (:func:`whitening_mode` applied).
        unit: ``epoch`` or ``period`` (for the messages).
        log: where warnings and the report go.
    """

    def __init__(self, mode: str, unit: str = "epoch", log: Log = print) -> None:
        self.mode, self.unit, self.log = whitening_mode(mode), unit, log
        self.best: Optional[Choice] = None
        self.scores: List[Dict[str, Any]] = []  # one {"step", "none", "pca", "lw"} per scored step
        self._warned_pairs = False

    @property
    def kinds(self) -> Tuple[str, ...]:
        """The whitenings that compete (``auto``: all three; otherwise the forced one)."""
        return KINDS if self.mode == "auto" else (self.mode,)

    # -- checks that warn -------------------------------------------------------------------
    def check_validation(self, val: PairSet) -> None:
        """Warn when ``val`` is too small to rank models."""
        queries, _ = val.ground_truth()
        n_cls = int(np.unique(val.labels[queries]).size) if len(queries) else 0
        if n_cls < MIN_VAL_CLASSES or len(queries) < MIN_VAL_QUERIES:
            self.log(f"warning: validation has {n_cls} class(es) and {len(queries)} queries: too few to tell "
                     f"models apart reliably (best.pt is chosen by it); raise train.val_fraction or give "
                     f"train.val_data (at least {MIN_VAL_CLASSES} classes, {MIN_VAL_QUERIES} queries)")

    def check_start(self, score: StepScore) -> None:
        """Warn when the starting network's validation mAP is already saturated."""
        top = max((v for v in score.maps.values() if not math.isnan(v)), default=float("nan"))
        if top >= SATURATED:
            self.log(f"warning: validation mAP is {100 * top:.2f} before training: saturated, it cannot show "
                     "an improvement, so best.pt stays the starting network unless a step scores higher; "
                     "validate on harder data (more classes, train.val_data)")

    def check_pairs(self, n_pairs: int, n_images: int, dim: int) -> None:
        """Warn (once) when whitening is learned from fewer pairs than descriptor dimensions."""
        if self._warned_pairs or "lw" not in self.kinds and "pca" not in self.kinds or n_pairs >= dim:
            return
        self._warned_pairs = True
        self.log(f"warning: whitening is learned from {n_pairs} training pairs ({n_images} images) for "
                 f"{dim}-D descriptors, fewer pairs than dimensions: Lw is shrunk (Ledoit–Wolf) and PCA-w "
                 f"keeps {whitening_dim(n_images, dim)} dimensions; expect little from them"
                 + (" (validation decides)" if self.mode == "auto" else ""))

    # -- the rule ---------------------------------------------------------------------------
    def consider(self, score: StepScore) -> Optional[Choice]:
        """Record ``score``; returns the new :class:`Choice` when one of its candidates beats the
        best so far (strictly), else ``None``."""
        self.scores.append({"step": score.step, **{k: score.maps.get(k, float("nan")) for k in KINDS}})
        new = None
        for kind in self.kinds:
            if kind != "none" and kind not in score.whitenings:
                continue
            m = score.maps.get(kind, float("nan"))
            if math.isnan(m):
                continue
            if (new or self.best) is None or m > (new or self.best).val_map:
                new = Choice(score.step, kind, m)
        if new is not None:
            self.best = new
        return new

    def restore(self, state: Dict[str, Any]) -> None:
        """Continue from :meth:`state` (a resumed run)."""
        self.scores = list(state.get("scores", []))
        b = state.get("best")
        self.best = Choice(int(b["step"]), str(b["kind"]), float(b["val_map"])) if b else None

    def state(self) -> Dict[str, Any]:
        """The selection so far, for checkpoints: ``{"mode", "scores", "best"}``."""
        b = self.best
        return {"mode": self.mode, "scores": list(self.scores),
                "best": None if b is None else {"step": b.step, "kind": b.kind, "val_map": b.val_map}}

    def fallback(self, last_step: int, n_pairs: int, dim: int) -> str:
        """The whitening of ``best.pt`` with no validation (module docstring); logs the rule."""
        kind = self.mode if self.mode != "auto" else ("lw" if n_pairs >= dim else "none")
        why = ("forced by train.whitening" if self.mode != "auto" else
               f"{n_pairs} training pairs {'≥' if kind == 'lw' else '<'} {dim} dimensions")
        self.log(f"no validation: nothing measures the {self.unit}s, so best.pt is the last {self.unit} "
                 f"({last_step}) with whitening {NAMES[kind]} ({why}); set train.val_fraction or train.val_data "
                 "to choose by validation mAP")
        self.best = Choice(last_step, kind, float("nan"))
        return kind

    def report(self, pairs_note: Optional[str] = None) -> str:
        """What was kept and each alternative's validation mAP (several lines); ``pairs_note`` says
        what the whitenings were learned on."""
        if self.best is None or not self.scores:
            return ""
        b = self.best
        by_step = {s["step"]: s for s in self.scores}
        row = by_step.get(b.step, {})
        alts = "  ".join(f"{NAMES[k]} {100 * row.get(k, float('nan')):.2f}" for k in KINDS
                         if not math.isnan(row.get(k, float("nan"))))
        lines = [f"best.pt: {self.unit} {b.step} with whitening {NAMES[b.kind]} (val mAP {100 * b.val_map:.2f}; "
                 f"at that {self.unit}: {alts}; train.whitening: {self.mode}"
                 + (f"; whitening learned on {pairs_note})" if pairs_note else ")")]
        start = by_step.get(0)
        if start is not None:
            s_alts = "  ".join(f"{NAMES[k]} {100 * start[k]:.2f}" for k in KINDS if not math.isnan(start[k]))
            lines.append(f"starting network ({self.unit} 0): {s_alts}")
        if b.step == 0:
            what = "fine-tuning" if self.unit == "epoch" else "training"
            lines.append(f"best.pt is the starting network: {what} did not improve validation mAP")
        plain = [s["none"] for s in self.scores if not math.isnan(s["none"])]
        if len(plain) > 1 and max(plain) - min(plain) < 1e-9:
            lines.append(f"warning: validation mAP never moved ({100 * plain[0]:.2f} at every {self.unit}): "
                         "it cannot choose; validate on more or harder data")
        return "\n".join(lines)


def summary_lines(unit: str, best: int, best_map: float, whitening: str, maps: Dict[str, float], best_path: Path,
                  out_dir: Path, extraction: Dict[str, Any]) -> str:
    """The run summary of both drivers: the kept step and whitening, the alternatives' validation
    mAP, plainly when it is the starting network, and how (and at which settings) to index."""
    names = {"none": "no whitening", "pca": "PCA-w", "lw": "Lw"}
    val = f", val mAP {100 * best_map:.2f}" if best_map == best_map else ", not validated"
    alts = "  ".join(f"{names[k]} {100 * v:.2f}" for k, v in maps.items() if v == v)
    lines = [f"best.pt = {unit} {best} + {names.get(whitening, whitening)}{val} -> {best_path}"
             + (f"\n  validation mAP at that {unit}: {alts}" if alts else "")]
    if best == 0 and best_map == best_map:
        what = "fine-tuning" if unit == "epoch" else "training"
        lines.append(f"best.pt is the starting network: {what} did not improve validation mAP")
    lines.append(f"log: {out_dir / 'log.csv'}")
    if extraction:
        sc = ", ".join(f"{s:g}" for s in extraction["scales"])
        lines.append(f"index with: python tools/index.py --images IMAGES --model {best_path}  "
                     f"(describes images at {extraction['image_size']} px, scales {sc}: model.image_size / model.scales)")
    else:
        lines.append(f"index with: python tools/index.py --images IMAGES --model {best_path}")
    return "\n".join(lines)
