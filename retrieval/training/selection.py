"""Which model ``best.pt`` holds: the simplest candidate, unless validation shows a real gain.

``train.whitening`` (``auto`` | ``lw`` | ``pca`` | ``none``) says which whitenings compete:
``auto`` (the default) scores every step of the run, **the starting network (step 0) included**,
with no whitening, PCA whitening (PCA-w) and learned whitening (Lw), each learned at that step on
the training pairs; a forced value scores every step with that whitening only.

**The rule.** Candidates are met from simplest to most complex: (step 0: none, PCA-w, Lw),
(step 1: …), … The first one met (the starting network with no whitening under ``auto``) is the
*simplest*, and ``best.pt`` holds it unless another candidate's gain over it is significant
(:class:`ModelSelection`) at confidence :data:`CONFIDENCE` **over the run**: the gains of all the
run's candidates over the simplest are tested together, at the end of the run, by the studentized
max-T step-down bootstrap over validation classes
(:func:`retrieval.evaluation.significance.simultaneous_bootstrap`), so the chance that any
candidate whose gain is noise is kept is at most 5 % whatever the candidates' correlation, and
candidates that are nearly the same (Lw at successive epochs) cost nearly one comparison, not one
each as under Bonferroni (``multiplicity="bonferroni"``, the earlier rule, kept for comparison).
Among significant candidates the highest validation mAP is kept. Until the run ends ``best.pt``
holds the simplest candidate, and the weights of every step that could still be kept (one with a
candidate above the simplest's validation mAP: :meth:`ModelSelection.worth_keeping`) wait in the
run folder (``candidates/``, written atomically by the engine and removed once ``best.pt`` is
written). With fewer validation classes than :func:`classes_needed` no call is made
(:func:`~retrieval.evaluation.significance.min_groups` at Bonferroni's per-comparison level: a
floor that holds whatever the correlation) and the simplest is kept; :func:`split_for_selection`
sizes the validation split so the call can be made where the data allows (:func:`classes_wanted`).
:meth:`ModelSelection.why` is the sentence the summary prints; :meth:`ModelSelection.summary`
is ``--json``'s ``selection``.

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
measures the candidates, and :meth:`ModelSelection.fallback` applies a fixed rule instead:
``best.pt`` is the last step, with Lw under ``auto`` when the training pairs number at least the
descriptor dimension (a full-rank covariance: the regime where Lw is known to help) and no
whitening otherwise; a forced value is kept.

**Validation that cannot choose.** :meth:`ModelSelection.check_validation` warns when the
validation set has too few classes to make the call, :meth:`ModelSelection.check_start` when the
starting network already scores ≥ :data:`SATURATED` (no step can beat it);
:meth:`ModelSelection.report` says when the validation mAP never moved.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from retrieval.core.errors import DataError
from retrieval.evaluation.significance import Gain, min_groups, paired_bootstrap, simultaneous_bootstrap
from retrieval.model.whitening import Whitening, learn_whitening, pca_whitening
from retrieval.training.pairs import PairSet
from retrieval.training.validation import describe_pairs, query_aps, sample_pairs

Log = Callable[[str], None]

#: The values of ``train.whitening``.
WHITENING_CHOICES = ("auto", "lw", "pca", "none")
#: The whitenings of one step from simplest to most complex (the order candidates are met in).
KINDS = ("none", "pca", "lw")
NAMES = {"none": "none", "pca": "PCA-w", "lw": "Lw"}
#: The confidence, over the whole run, that a kept candidate's gain over the simplest is real.
CONFIDENCE = 0.95
#: Bootstrap resamples of one comparison: at least MIN, about TAIL beyond the bound, at most MAX.
MIN_RESAMPLES, TAIL_RESAMPLES, MAX_RESAMPLES = 10_000, 200, 200_000
#: How the confidence is shared among the run's comparisons (:class:`ModelSelection`): ``maxt``
#: (the default: a simultaneous bootstrap over every candidate) or ``bonferroni``.
MULTIPLICITY = ("maxt", "bonferroni")
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


def _mean(a: np.ndarray) -> float:
    return float(a.mean()) if a.size else float("nan")


@dataclass
class StepScore:
    """The validation of one step: ``maps`` (kind → validation mAP; NaN where not scored), the
    whitenings learned at that step (kind → :class:`Whitening` cut to its kept dimensions), the
    per-query APs behind each mAP (kind → ``(Q,)`` float64) and the class of each validation
    query (``groups``, ``(Q,)`` int64; the same queries for every kind and step)."""

    step: int
    maps: Dict[str, float]
    whitenings: Dict[str, Whitening] = field(default_factory=dict)
    aps: Dict[str, np.ndarray] = field(default_factory=dict)
    groups: Optional[np.ndarray] = None

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
    aps: Dict[str, np.ndarray] = {}
    aps["none"], groups = query_aps(V, val)
    maps["none"] = _mean(aps["none"])
    whitenings: Dict[str, Whitening] = {}
    wanted = [k for k in kinds if k != "none"]
    if wanted and train_pairs is not None and train_pairs.n_pairs >= 2:
        sub = sample_pairs(train_pairs, max_pairs, seed)
        X, sub = describe_pairs(net, sub, desc="whitening", **common)
        whitenings = fit_whitenings(X, sub, wanted, shrinkage)
        for k, w in whitenings.items():
            aps[k] = query_aps(w.apply(V), val)[0]
            maps[k] = _mean(aps[k])
    return StepScore(step, maps, whitenings, aps, groups)


def comparisons(steps: int, kinds: Sequence[str], with_start: bool = True) -> int:
    """How many candidates a run compares with its simplest one: ``(steps + 1)·len(kinds) − 1``
    (``steps`` without the starting network), at least 1."""
    return max(1, (int(steps) + int(with_start)) * len(kinds) - 1)


def classes_needed(steps: int, kinds: Sequence[str], with_start: bool = True,
                   confidence: float = CONFIDENCE) -> int:
    """The fewest validation classes with which a gain can be called significant in a run of
    ``steps`` steps (:func:`~retrieval.evaluation.significance.min_groups` at the per-comparison
    level ``(1 − confidence) / comparisons``): 8 for 3 epochs × 3 whitenings, 9 for 6."""
    return min_groups((1.0 - confidence) / comparisons(steps, kinds, with_start))


def classes_wanted(n_paired: int, need: int) -> int:
    """The validation classes :func:`split_for_selection` aims for among ``n_paired`` classes with
    pairs when the call needs ``need``: ``max(need, min(2·need, n_paired // 2))`` — the floor, and
    up to twice it where that still leaves at least as many classes to train on.

    Why twice: at the floor only the outcome "every validation class gains" reaches the level (the
    sign-flip bound of :func:`~retrieval.evaluation.significance.min_groups`), so one class that
    loses by noise blocks any gain however large; with twice the floor a gain still passes with a
    few classes losing, and the interval is about 1/√2 as wide. Beyond that, each class held out is
    one fewer to train on, for a power that grows only with the square root."""
    return max(int(need), min(2 * int(need), int(n_paired) // 2))


def split_for_selection(pairs: PairSet, val_fraction: float, *, seed: int, by: str, steps: int, mode: str,
                        with_start: bool = True, log: Log = print) -> Tuple[PairSet, PairSet]:
    """``pairs.split`` sized so the validation can make the call: with ``by="classes"``, when
    ``val_fraction`` would hold out fewer than :func:`classes_wanted` classes (at least
    :func:`classes_needed`, up to twice that while as many are left to train on), that many are
    held out instead; when the data has fewer than twice :func:`classes_needed`, the fraction's
    split, and the run warns (:meth:`ModelSelection.check_validation`). ``by="images"`` holds out
    views of every class of 4 or more images, so its class count is already the most the data has.
    Raises ``DataError`` where :meth:`~retrieval.training.pairs.PairSet.split` does."""
    kinds = KINDS if whitening_mode(mode) == "auto" else (whitening_mode(mode),)
    need = classes_needed(steps, kinds, with_start)
    n_paired = int(np.unique(pairs.labels[pairs.qidx]).size)
    n_frac = max(2, int(round(val_fraction * n_paired)))
    want = classes_wanted(n_paired, need)
    if by != "classes" or val_fraction == 0.0 or n_frac >= want or 2 * need > n_paired:
        return pairs.split(val_fraction, seed=seed, by=by)
    log(f"validation: holding out {want} of {n_paired} classes (train.val_fraction {val_fraction:g} gives {n_frac}): "
        f"the call over the run's {comparisons(steps, kinds, with_start) + 1} candidates needs at least {need}, "
        "and up to twice that while as many are left to train on (docs/training.md)")
    return pairs.split(val_fraction, seed=seed, by=by, min_val_classes=want)


def _name(unit: str, step: int, kind: str) -> str:
    return f"{unit} {step} + {NAMES[kind] if kind != 'none' else 'no whitening'}"


def _points(g: Gain) -> str:
    """A gain in mAP points with its interval: ``+1.16 [−2.03, +4.10]``."""
    return f"{100 * g.estimate:+.2f} [{100 * g.low:+.2f}, {100 * g.high:+.2f}]"


def _gain_dict(g: Optional[Gain]) -> Optional[Dict[str, Any]]:
    if g is None:
        return None
    return {"estimate": g.estimate, "low": g.low, "high": g.high, "confidence": g.confidence,
            "p_value": g.p_value, "queries": g.queries, "classes": g.groups, "resamples": g.resamples,
            "significant": g.significant, "critical": g.critical if math.isfinite(g.critical) else None}


def _gain_from(d: Optional[Dict[str, Any]]) -> Optional[Gain]:
    if not d:
        return None
    return Gain(float(d["estimate"]), float(d["low"]), float(d["high"]), float(d["confidence"]),
                float(d["p_value"]), int(d["queries"]), int(d["classes"]), int(d["resamples"]),
                float("nan") if d.get("critical") is None else float(d["critical"]))


@dataclass
class Choice:
    """A candidate: the step, the whitening, its validation mAP and its gain over the simplest
    candidate (``None`` for the simplest itself, and where the call could not be made)."""

    step: int
    kind: str
    val_map: float
    gain: Optional[Gain] = None

    def to_dict(self) -> Dict[str, Any]:
        return {"step": self.step, "kind": self.kind, "val_map": self.val_map, "gain": _gain_dict(self.gain)}

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "Choice":
        return cls(int(d["step"]), str(d["kind"]), float(d["val_map"]), _gain_from(d.get("gain")))


class ModelSelection:
    """The bookkeeping of :mod:`this module <retrieval.training.selection>`'s rule over a run.

    Candidates are recorded as the run scores them (:meth:`consider`); the call is made once, at
    the end (:meth:`decide`), over all of them together.

    Args:
        mode: ``train.whitening`` (:func:`whitening_mode` applied).
        unit: ``epoch`` or ``period`` (for the messages).
        log: where warnings and the report go.
        steps: the run's steps after the start (epochs or periods): with ``kinds``, how many
            comparisons the run makes (:func:`comparisons`).
        with_start: the starting network is scored (``train.validate_before``).
        seed: of the bootstrap (every rank of a DDP run draws the same resamples).
        confidence: that no kept gain is noise, over the whole run (:data:`CONFIDENCE`).
        multiplicity: how that confidence is shared (:data:`MULTIPLICITY`): ``maxt``, the
            simultaneous max-T step-down bootstrap over every candidate
            (:func:`~retrieval.evaluation.significance.simultaneous_bootstrap`), or ``bonferroni``,
            each comparison's own bootstrap at ``1 − (1 − confidence) / comparisons``.
    """

    def __init__(self, mode: str, unit: str = "epoch", log: Log = print, *, steps: int = 1,
                 with_start: bool = True, seed: int = 0, confidence: float = CONFIDENCE,
                 multiplicity: str = "maxt") -> None:
        if multiplicity not in MULTIPLICITY:
            raise ValueError(f"multiplicity: one of {', '.join(MULTIPLICITY)}, not {multiplicity!r}")
        self.mode, self.unit, self.log = whitening_mode(mode), unit, log
        self.steps, self.with_start, self.seed, self.confidence = int(steps), bool(with_start), int(seed), confidence
        self.multiplicity = multiplicity
        self.best: Optional[Choice] = None  # the simplest until decide() says otherwise
        self.base: Optional[Choice] = None  # the simplest candidate: every gain is measured against it
        self._base_aps: Optional[np.ndarray] = None
        self._groups: Optional[np.ndarray] = None
        self.tested: List[Choice] = []  # every other candidate, with its gain once decided (None: no call)
        self._aps: List[Optional[np.ndarray]] = []  # the per-query APs of each of ``tested``
        self.scores: List[Dict[str, Any]] = []  # one {"step", "none", "pca", "lw"} per scored step
        #: the last step of a run that already ended (its candidates' weights were removed then,
        #: but for the one best.pt holds); ``None`` while no decision has released them
        self.released: Optional[int] = None
        #: :meth:`decide` kept what best.pt held only because the simplest's weights are gone
        self.held = False
        self._warned_pairs = False

    @property
    def kinds(self) -> Tuple[str, ...]:
        """The whitenings that compete (``auto``: all three; otherwise the forced one)."""
        return KINDS if self.mode == "auto" else (self.mode,)

    @property
    def n_comparisons(self) -> int:
        """The run's comparisons with the simplest candidate (:func:`comparisons`)."""
        return comparisons(self.steps, self.kinds, self.with_start)

    @property
    def level(self) -> float:
        """Bonferroni's confidence of each comparison, ``1 − (1 − confidence) / comparisons``: the
        level of ``bonferroni``, and the floor on the validation classes of both (:attr:`needed`)."""
        return 1.0 - (1.0 - self.confidence) / self.n_comparisons

    @property
    def needed(self) -> int:
        """Validation classes needed to make the call (:func:`classes_needed`)."""
        return classes_needed(self.steps, self.kinds, self.with_start, self.confidence)

    @property
    def n_classes(self) -> int:
        return int(np.unique(self._groups).size) if self._groups is not None else 0

    @property
    def can_call(self) -> bool:
        """The validation has enough classes for a gain to be called significant."""
        return self._groups is not None and self.n_classes >= self.needed

    # -- checks that warn -------------------------------------------------------------------
    def check_validation(self, val: PairSet) -> None:
        """Warn when ``val`` has too few classes for a gain to be told from noise."""
        queries, _ = val.ground_truth()
        n_cls = int(np.unique(val.labels[queries]).size) if len(queries) else 0
        if n_cls < self.needed:
            self.log(f"warning: validation has {n_cls} class(es) and {len(queries)} queries: too few to tell a real "
                     f"gain from noise (at least {self.needed} classes for {100 * self.confidence:g} % confidence "
                     f"over the run's {self.n_comparisons + 1} candidates), so best.pt will be the simplest candidate, "
                     f"the starting network with {self._start_kind()}; raise train.val_fraction or give "
                     f"train.val_data")

    def _start_kind(self) -> str:
        k = self.kinds[0]
        return "no whitening" if k == "none" else NAMES[k]

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
    def _resamples(self, level: float) -> int:
        return int(min(MAX_RESAMPLES, max(MIN_RESAMPLES, math.ceil(TAIL_RESAMPLES / (1.0 - level)))))

    def consider(self, score: StepScore) -> Optional[Choice]:
        """Record ``score``'s candidates (:meth:`decide` makes the call at the end). Returns the
        simplest candidate when ``score`` holds it (the first candidate met: ``best.pt`` holds it
        until the run is decided), else ``None``."""
        self.scores.append({"step": score.step, **{k: score.maps.get(k, float("nan")) for k in KINDS}})
        new = None
        for kind in self.kinds:
            if kind != "none" and kind not in score.whitenings:
                continue
            m = score.maps.get(kind, float("nan"))
            if math.isnan(m):
                continue
            aps = score.aps.get(kind)
            aps = None if aps is None else np.asarray(aps, dtype=np.float64)
            if self.base is None:  # the simplest candidate: kept unless something beats it for real
                self.base = self.best = new = Choice(score.step, kind, m)
                self._base_aps = aps
                self._groups = None if score.groups is None else np.asarray(score.groups, dtype=np.int64)
                continue
            self.tested.append(Choice(score.step, kind, m))
            self._aps.append(aps)
        return new

    def worth_keeping(self, step: int) -> bool:
        """Whether ``step``'s network can end up in ``best.pt``: the simplest candidate's step, or
        a step with a candidate scoring above it (no other can show a gain). The engine keeps these
        steps' weights on disk until :meth:`decide`."""
        if self.base is None:
            return False
        return step == self.base.step or any(t.step == step and t.val_map > self.base.val_map for t in self.tested)

    def available(self, c: Choice) -> bool:
        """Whether ``c``'s network is at hand for ``best.pt``: always, unless a run that already
        ended released the weights of its steps (:attr:`released`; ``best.pt`` keeps the one it holds)."""
        if self.released is None or c.step > self.released:
            return True
        return self.best is not None and (c.step, c.kind) == (self.best.step, self.best.kind)

    def _gains(self) -> List[Optional[Gain]]:
        """Each tested candidate's gain over the simplest (``None`` where no call can be made)."""
        ok = [i for i, a in enumerate(self._aps)
              if a is not None and self._base_aps is not None and a.shape == self._base_aps.shape]
        out: List[Optional[Gain]] = [None] * len(self.tested)
        if not self.can_call or not ok:
            return out
        if self.multiplicity == "maxt":
            gains = simultaneous_bootstrap(self._base_aps, [self._aps[i] for i in ok], self._groups,
                                           confidence=self.confidence, resamples=self._resamples(self.confidence),
                                           seed=self.seed)
            for i, g in zip(ok, gains):
                out[i] = g
        else:
            for i in ok:
                out[i] = paired_bootstrap(self._base_aps, self._aps[i], self._groups, confidence=self.level,
                                          resamples=self._resamples(self.level), seed=self.seed)
        return out

    def decide(self) -> Optional[Choice]:
        """Make the call over every recorded candidate: each one's gain over the simplest
        (:attr:`multiplicity`), and ``best`` is the candidate of highest validation mAP among those
        whose gain is significant (and whose weights are :meth:`available`), else the simplest.
        Returns ``best`` (``None`` before any candidate). The same state gives the same call."""
        if self.base is None:
            return None
        for t, g in zip(self.tested, self._gains()):
            t.gain = g
        sig = [t for t in self.tested if t.gain is not None and t.gain.significant and t.val_map > self.base.val_map
               and self.available(t)]
        if sig:
            self.best = max(sig, key=lambda t: t.val_map)  # max keeps the first of ties: the simpler
        elif self.available(self.base):
            self.best = self.base
        elif self.best is not None:  # the simplest's weights went with a run that ended: best.pt keeps its own
            key = (self.best.step, self.best.kind)
            self.best = next((t for t in self.tested if (t.step, t.kind) == key), self.best)
        self.held = sig == [] and self.best is not self.base
        return self.best

    def restore(self, state: Dict[str, Any]) -> None:
        """Continue from :meth:`state` (a resumed run)."""
        self.scores = list(state.get("scores", []))
        b, base = state.get("best"), state.get("base")
        self.best = Choice.from_dict(b) if b else None
        self.base = Choice.from_dict(base) if base else None
        if self.best is not None and self.base is not None and (self.best.step, self.best.kind) == (
                self.base.step, self.base.kind):
            self.best = self.base
        self.tested = [Choice.from_dict(t) for t in state.get("tested", [])]
        self._aps = [None if a is None else np.asarray(a, dtype=np.float64)
                     for a in state.get("tested_aps", [None] * len(self.tested))]
        if state.get("base_aps") is not None:
            self._base_aps = np.asarray(state["base_aps"], dtype=np.float64)
            self._groups = np.asarray(state["groups"], dtype=np.int64)
        self.released = None if state.get("released") is None else int(state["released"])

    def state(self) -> Dict[str, Any]:
        """The selection so far, for checkpoints: ``{"mode", "multiplicity", "scores", "best",
        "base", "tested", "base_aps", "tested_aps", "groups", "released"}`` (every candidate's
        per-query APs: what the call at the end is made on, after a resume too)."""
        def floats(a: Optional[np.ndarray]) -> Optional[List[float]]:
            return None if a is None else [float(x) for x in a]

        return {"mode": self.mode, "multiplicity": self.multiplicity, "scores": list(self.scores),
                "best": None if self.best is None else self.best.to_dict(),
                "base": None if self.base is None else self.base.to_dict(),
                "tested": [t.to_dict() for t in self.tested],
                "base_aps": floats(self._base_aps), "tested_aps": [floats(a) for a in self._aps],
                "groups": None if self._groups is None else [int(x) for x in self._groups],
                "released": self.released}

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

    # -- what was kept, and why ---------------------------------------------------------------
    def _rival(self) -> Optional[Choice]:
        """The best-scoring candidate that was not kept, when it scored above the kept one."""
        b = self.best
        if b is None:
            return None
        rivals = [t for t in self.tested if t.val_map > b.val_map and (t.step, t.kind) != (b.step, b.kind)]
        return max(rivals, key=lambda t: t.val_map) if rivals else None

    def _how(self) -> str:
        """How the confidence was shared, for the report."""
        if self.multiplicity == "bonferroni":
            return f"{100 * self.level:.2f} % one-sided each, {100 * self.confidence:g} % over {self.n_comparisons}"
        crit = [t.gain.critical for t in self.tested if t.gain is not None and math.isfinite(t.gain.critical)]
        z = NormalDist().inv_cdf(self.level)
        c = (f", critical value {max(crit):.2f} standard errors where Bonferroni's would be about {z:.2f}"
             if crit else "")
        return f"{100 * self.confidence:g} % over {self.n_comparisons} together, max-T step-down bootstrap{c}"

    def why(self) -> str:
        """One sentence: why ``best.pt`` holds what it holds."""
        b, base = self.best, self.base
        if b is None or base is None:
            return ""
        what = "fine-tuning" if self.unit == "epoch" else "training"
        conf = f"{100 * self.confidence:g} % confidence over {self.n_comparisons} comparisons"
        if self.held:  # the simplest's weights went with an earlier, ended run
            return (f"best.pt is {_name(self.unit, b.step, b.kind)}, kept from the run that ended at {self.unit} "
                    f"{self.released}: no candidate of this run shows a significant gain and the starting "
                    "network's weights were removed when that run ended")
        if b is not base:
            return (f"best.pt is {_name(self.unit, b.step, b.kind)}: its gain over {_name(self.unit, base.step, base.kind)}, "
                    f"{_points(b.gain)} mAP points, is significant ({conf}, bootstrap over {b.gain.groups} classes)")
        start = ("the starting network" if base.step == 0 else _name(self.unit, base.step, base.kind))
        r = self._rival()
        if r is None:
            return f"best.pt is {start} with {self._start_kind()}: {what} did not improve validation mAP"
        if r.gain is None:
            return (f"best.pt is {start} with {self._start_kind()}: {_name(self.unit, r.step, r.kind)} scored "
                    f"{100 * r.val_map:.2f} against {100 * base.val_map:.2f}, but validation has {self.n_classes} "
                    f"class(es), too few to tell a gain from noise (at least {self.needed} for {conf})")
        return (f"best.pt is {start} with {self._start_kind()}: the best-scoring candidate, "
                f"{_name(self.unit, r.step, r.kind)} ({100 * r.val_map:.2f}), gains {_points(r.gain)} mAP points: "
                f"not significant ({conf})")

    def summary(self) -> Dict[str, Any]:
        """What ``--json`` says about the choice: the kept and the simplest candidate, the kept
        gain with its interval, the sentence of :meth:`why`, the confidence, how it is shared
        (``multiplicity``), the comparisons, Bonferroni's per-comparison ``level``, the validation
        classes (and how many the call needs), and every tested candidate."""
        return {"kept": None if self.best is None else self.best.to_dict(),
                "simplest": None if self.base is None else self.base.to_dict(),
                "why": self.why(), "confidence": self.confidence, "multiplicity": self.multiplicity,
                "comparisons": self.n_comparisons, "level": self.level, "classes": self.n_classes,
                "classes_needed": self.needed, "candidates": [t.to_dict() for t in self.tested]}

    def report(self, pairs_note: Optional[str] = None) -> str:
        """What was kept and each alternative's validation mAP (several lines; the sentence of
        :meth:`why` is the summary's, not repeated here); ``pairs_note`` says what the
        whitenings were learned on."""
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
        sig = [t for t in self.tested if t.gain is not None and t.gain.significant]
        lines.append(f"selection: {len(self.tested)} candidate(s) tested against the simplest, "
                     f"{len(sig)} significant ({self._how()}; {self.n_classes} validation classes"
                     + ("" if self.can_call else f", {self.needed} needed: no call made") + ")")
        r = self._rival()
        if r is not None and b is not self.base and r.gain is not None:
            lines.append(f"not kept: {_name(self.unit, r.step, r.kind)} scored {100 * r.val_map:.2f} but its gain "
                         f"{_points(r.gain)} is " + ("significant yet below the kept one" if r.gain.significant
                                                     else "not significant"))
        plain = [s["none"] for s in self.scores if not math.isnan(s["none"])]
        if len(plain) > 1 and max(plain) - min(plain) < 1e-9:
            lines.append(f"warning: validation mAP never moved ({100 * plain[0]:.2f} at every {self.unit}): "
                         "it cannot choose; validate on more or harder data")
        return "\n".join(lines)


def summary_lines(unit: str, best: int, best_map: float, whitening: str, maps: Dict[str, float], best_path: Path,
                  out_dir: Path, extraction: Dict[str, Any], why: str = "") -> str:
    """The run summary of both drivers: the kept step and whitening, the alternatives' validation
    mAP, why it was kept (``why``: :meth:`ModelSelection.why`, said once here and not in the log's
    report), and how (and at which settings) to index."""
    names = {"none": "no whitening", "pca": "PCA-w", "lw": "Lw"}
    val = f", val mAP {100 * best_map:.2f}" if best_map == best_map else ", not validated"
    alts = "  ".join(f"{names[k]} {100 * v:.2f}" for k, v in maps.items() if v == v)
    lines = [f"best.pt = {unit} {best} + {names.get(whitening, whitening)}{val} -> {best_path}"
             + (f"\n  validation mAP at that {unit}: {alts}" if alts else "")]
    if why:
        lines.append(why)
    lines.append(f"log: {out_dir / 'log.csv'}")
    if extraction:
        sc = ", ".join(f"{s:g}" for s in extraction["scales"])
        lines.append(f"index with: python tools/index.py --images IMAGES --model {best_path}  "
                     f"(describes images at {extraction['image_size']} px, scales {sc}: model.image_size / model.scales)")
    else:
        lines.append(f"index with: python tools/index.py --images IMAGES --model {best_path}")
    return "\n".join(lines)
