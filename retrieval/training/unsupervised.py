"""Training with no labels: agglomerative pseudo-labels, re-clustered as the descriptor improves.

Following JULE (Yang, Parikh & Batra, CVPR 2016), good clusters give good representations and the
reverse. The pairs source ``cluster`` runs *periods*; in each period:

1. describe every training image with the current network (single scale, eval mode);
2. cluster the descriptors with :func:`retrieval.training.cluster.agglomerative`, continuing from
   the previous period's clusters (JULE's recurrent process; the first period starts from the
   components of the 1-NN graph, or from singletons when those components are already fewer than
   the final target). The target shrinks by the **unfolding rate** η: a period that starts with K
   clusters stops at ``max(final_clusters, K − ceil(η·K))``; the last period always reaches
   ``final_clusters``. (``recluster: scratch`` re-clusters from the 1-NN components every period
   instead, to the same target.)
3. turn the clusters into matching pairs (:meth:`retrieval.training.pairs.PairSet.from_labels`):
   any two images of a cluster match. A singleton cluster gives no pair, so it is never a query;
   it still serves as a negative;
4. train ``epochs_per_period`` epochs exactly as label-supervised fine-tuning does (hard negatives
   re-mined each epoch from other clusters, contrastive loss, Adam;
   :mod:`retrieval.training.engine`), with one optimiser and one learning-rate schedule across all
   periods (epochs are counted across the run);
5. log the period: cluster count, NMI / ARI / accuracy against ground-truth labels **when the data
   has them (evaluation only: they never reach the training)**, validation mAP, loss.

This module is the unsupervised driver of :mod:`retrieval.training.engine`: a step is one period.
The clustering settings (``ks``, ``kc``, ``merge_batch``) are read from the ``unsupervised:``
section (:class:`retrieval.training.config.UnsupervisedConfig`); a separate ``cluster:`` section is
refused (see :mod:`retrieval.settings`).

Files in the run folder: ``log.csv`` (one row per period, period 0 = the network before training),
``last.pt`` (after every period), ``best.pt`` (chosen among the (period, whitening) pairs of the
network before training (period 0) and every period, as in supervised training
(:mod:`retrieval.training.selection`): the simplest unless a gain is significant; the
whitenings of a period are learned on the pairs of the clusters it trained on), ``clusters.csv`` (the last period's cluster
of every image). The result: a :class:`~retrieval.training.results.TrainResult` of periods, the
last period's clusters in ``labels``.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from retrieval.core.config import to_dict
from retrieval.core.errors import ConfigError, DataError
from retrieval.core.image_listing import list_images
from retrieval.core.io import write_csv_atomic
from retrieval.search.extract import extract_descriptors
from retrieval.training.cluster import agglomerative, cluster_metrics, initial_clusters
from retrieval.training.config import TrainConfig, UnsupervisedConfig
from retrieval.training.engine import Engine
from retrieval.training.epoch import gem_p
from retrieval.training.mining import Tuples, hardest_negatives, random_tuples
from retrieval.training.pairs import PairSet, load_pairs
from retrieval.training.results import COLUMNS, StepStats, TrainResult, val_columns
from retrieval.training.selection import score_step, split_for_selection
from retrieval.training.toy_data import prepare_toy_data

PathLike = Union[str, Path]
Log = Callable[[str], None]

#: the columns of ``log.csv``: a period row's (:data:`retrieval.training.results.COLUMNS`)
LOG_FIELDS = COLUMNS["period"]


# ----------------------------------------------------------------------------------------------
def load_unlabeled(source: PathLike, eval_labels: str = "folders") -> Tuple[List[Path], Optional[np.ndarray]]:
    """The training images and, for evaluation only, their ground truth.

    With ``eval_labels="folders"`` and a folder source: an image in ``DIR/<class>/…`` gets the class
    of its first-level sub-folder, an image directly in ``DIR`` a class of its own. Returns
    ``(paths, truth (N,) int64 or None)``.
    """
    root = Path(source).expanduser()
    paths = list_images(root)
    if len(paths) < 4:
        raise DataError(f"{root}: {len(paths)} image(s); unsupervised training needs at least 4")
    if eval_labels == "none" or not root.is_dir():
        return paths, None
    names: Dict[str, int] = {}
    truth = np.empty(len(paths), np.int64)
    for i, p in enumerate(paths):
        rel = p.relative_to(root).parts
        key = rel[0] if len(rel) > 1 else f"\0{i}"
        truth[i] = names.setdefault(key, len(names))
    if len(names) == len(paths):  # a flat folder: no labels to evaluate with
        return paths, None
    return paths, truth


def period_targets(k0: int, final: int, eta: float, periods: int) -> List[int]:
    """The cluster target of each period: K → max(final, K − ceil(η·K)); the last is ``final``."""
    out, k = [], int(k0)
    for p in range(periods):
        k = max(final, k - int(math.ceil(eta * k)))
        out.append(final if p == periods - 1 else k)
    return out


def _start_clusters(X: np.ndarray, final: int) -> np.ndarray:
    """JULE's start: the 1-NN graph's components, or every image alone when those are already no
    more than ``final`` (small sets of near-duplicates)."""
    start = initial_clusters(X)
    if int(start.max()) + 1 <= final:
        return np.arange(X.shape[0], dtype=np.int64)
    return start


def cluster_tuples(X: np.ndarray, pairs: PairSet, nnum: int, qsize: int, seed: int = 0,
                   exclude_knn: int = 0, chunk: int = 512) -> Tuples:
    """Training tuples from pseudo-label pairs, negatives mined on precomputed descriptors.

    Args:
        X: (N, D) float32 descriptors of ``pairs.paths`` (the current network).
        pairs: :class:`~retrieval.training.pairs.PairSet` of the clusters.
        nnum: negatives per tuple (capped by the number of other clusters); qsize: tuples.
        exclude_knn: a query's ``exclude_knn`` nearest images are never its negatives.
    Returns:
        :class:`~retrieval.training.mining.Tuples` (negatives hardest first, one per cluster).
    """
    rng = np.random.default_rng(seed)
    sel = rng.permutation(pairs.n_pairs)[: min(qsize, pairs.n_pairs)]
    q, p = pairs.qidx[sel], pairs.pidx[sel]
    n_eff = min(nnum, pairs.n_classes - 1)
    Xt = torch.from_numpy(np.ascontiguousarray(X, np.float32))
    nidx = np.empty((q.size, n_eff), np.int64)
    dist = 0.0
    for s in range(0, q.size, chunk):
        qs = q[s:s + chunk]
        Xq = Xt[torch.from_numpy(qs)]
        S = Xq @ Xt.T
        if exclude_knn > 0:
            nn = torch.topk(S, min(exclude_knn + 1, S.shape[1]), dim=1).indices  # itself included
            S.scatter_(1, nn, float("-inf"))
        nidx[s:s + chunk] = hardest_negatives(S, pairs.labels[qs], pairs.labels, n_eff)
        dist += float((Xq[:, None, :] - Xt[torch.from_numpy(nidx[s:s + chunk])]).norm(dim=-1).sum())
    return Tuples(q, p, nidx, avg_neg_distance=dist / max(nidx.size, 1))


def train_unsupervised(net: torch.nn.Module, images: Sequence[PathLike], cfg: TrainConfig,
                       ucfg: UnsupervisedConfig, out_dir: PathLike, *, val: Optional[PairSet] = None,
                       truth: Optional[np.ndarray] = None, val_on_train: bool = False, progress: bool = True,
                       log: Log = print) -> TrainResult:
    """Cluster–train periods on unlabeled ``images`` (module docstring).

    Args:
        net: a :class:`~retrieval.model.network.DescriptorNet` (its whitening slot is emptied).
        images: N image paths (unreadable ones are dropped at the first description).
        cfg: :class:`~retrieval.training.config.TrainConfig` (optimiser, loss, mining, image size,
            device, whitening).
        ucfg: :class:`~retrieval.training.config.UnsupervisedConfig`.
        out_dir: the run folder.
        val: labeled :class:`~retrieval.training.pairs.PairSet` for the validation mAP (``None``: none).
        truth: (N,) int ground truth of ``images`` for NMI/ARI/accuracy only (``None``: none).
        val_on_train: validate on the training images themselves with ``truth`` (transductive;
            reuses the descriptors computed for clustering, no extra pass); ``val`` is then ignored.

    Returns:
        :class:`~retrieval.training.results.TrainResult` (``unit="period"``, ``labels``).
    """
    cfg.validate()
    ucfg.validate()
    val = val if val is not None and val.n_images else None
    if val_on_train:
        if truth is None:
            raise DataError("validation on the training images needs their labels (truth)")
        val = None
    paths = [Path(p) for p in images]
    truth = None if truth is None else np.asarray(truth, np.int64).reshape(-1)
    if truth is not None and truth.shape != (len(paths),):
        raise DataError(f"truth must have one label per image ({len(paths)}), got {truth.shape}")
    final = int(ucfg.final_clusters or max(2, len(paths) // 4))
    if final >= len(paths):
        raise ConfigError(f"unsupervised.final_clusters: {final} must be below the number of images ({len(paths)})")

    epoch = 0  # epochs trained, counted across the periods (the lr schedule and the seeds follow it)

    def state(period: int) -> Dict[str, Any]:  # the checkpoints' extra (no optimizer: no resume)
        return {"period": period, "epoch": epoch, "history": [h.to_dict() for h in run.history],
                "train_config": to_dict(cfg), "unsupervised_config": to_dict(ucfg)}

    run = Engine(net, cfg, out_dir, total=ucfg.periods, state=state, progress=progress, log=log, unit="period")

    def describe() -> np.ndarray:
        nonlocal paths, truth
        with run.describing():
            ex = extract_descriptors(net, paths, image_size=run.image_size, scales=[1.0], batch_size=cfg.mine_batch,
                                     workers=cfg.workers, device=run.device, progress=progress, desc="describe")
        if ex.failures and run.history:
            raise DataError(f"{ex.failures[0][0]} became unreadable during training ({ex.failures[0][1]})")
        if ex.failures:
            keep = {str(p) for p in ex.paths}
            mask = np.array([str(p) in keep for p in paths])
            log(f"skipped {len(ex.failures)} unreadable image(s), e.g. {ex.failures[0][0]} ({ex.failures[0][1]})")
            paths = [p for p, k in zip(paths, mask) if k]
            truth = truth[mask] if truth is not None else None
        return ex.descriptors

    def metrics(labels: np.ndarray) -> Dict[str, float]:
        if truth is None:
            return {"nmi": float("nan"), "ari": float("nan"), "acc": float("nan")}
        return cluster_metrics(labels, truth)

    has_val = val is not None or val_on_train
    train_val: Optional[PairSet] = None  # the training images with their labels (val_on_train)

    def scored(step: int, X: np.ndarray, pairs: Optional[PairSet]):
        """The step's validation (:meth:`Engine.validate_step`); transductive validation reuses ``X``
        when it was described as the index will describe (one scale at the model's size)."""
        if not has_val:
            return None
        if val_on_train:
            same = run.extraction == dict(image_size=run.image_size, scales=[1.0])
            with run.describing():
                return score_step(net, step, pairs, train_val, run.selection.kinds, max_pairs=cfg.whiten_pairs,
                                  shrinkage="auto" if cfg.whiten_shrinkage is None else cfg.whiten_shrinkage,
                                  batch_size=cfg.mine_batch, workers=cfg.workers, device=run.device, seed=cfg.seed,
                                  progress=progress, val_descriptors=X if same else None, **run.extraction)
        return run.validate_step(step, val, pairs)

    def nmi_at_final(X: np.ndarray) -> float:
        if truth is None:
            return float("nan")
        lab = agglomerative(X, final, ks=ucfg.ks, kc=ucfg.kc, batch=ucfg.merge_batch,
                            init=_start_clusters(X, final), seed=cfg.seed)
        return cluster_metrics(lab, truth)["nmi"]

    t0 = time.perf_counter()
    X = describe()  # drops unreadable images once; later passes refuse new failures, so paths stay fixed
    if val_on_train:
        train_val = PairSet.from_labels(paths, truth, max_pairs_per_class=1)
    start = _start_clusters(X, final)
    targets = period_targets(int(start.max()) + 1, final, ucfg.eta, ucfg.periods)
    m0 = metrics(start)
    if val is not None:
        run.selection.check_validation(val)
    elif val_on_train:
        run.selection.check_validation(train_val)
    start_pairs = PairSet.from_labels(paths, start, max_pairs_per_class=ucfg.max_pairs_per_cluster, seed=cfg.seed,
                                      source="the starting clusters")
    s0 = scored(0, X, start_pairs)
    run.record_start(StepStats(period=0, clusters=int(start.max()) + 1, target=int(start.max()) + 1,
                               nmi=m0["nmi"], ari=m0["ari"], acc=m0["acc"], nmi_final=nmi_at_final(X),
                               p=gem_p(net), seconds=time.perf_counter() - t0, **val_columns(s0)), s0)
    labels = start

    for period in range(1, ucfg.periods + 1):
        t0 = time.perf_counter()
        init = labels if ucfg.recluster == "continue" else _start_clusters(X, final)
        target = targets[period - 1]
        labels = agglomerative(X, target, ks=ucfg.ks, kc=ucfg.kc, batch=ucfg.merge_batch, init=init,
                               seed=cfg.seed)
        t_cluster = time.perf_counter() - t0
        pairs = PairSet.from_labels(paths, labels, max_pairs_per_class=ucfg.max_pairs_per_cluster,
                                    seed=cfg.seed + period, source=f"clusters of period {period}")
        if pairs.n_pairs == 0 or pairs.n_classes < 2:
            raise DataError(f"period {period}: the clusters give no training pairs "
                            f"({pairs.n_classes} clusters); lower final_clusters or eta")
        paired = int(np.unique(np.r_[pairs.qidx, pairs.pidx]).size)
        losses: List[float] = []
        lr = float("nan")
        t1 = time.perf_counter()
        for e in range(ucfg.epochs_per_period):
            epoch += 1

            def make_tuples(seed: int, first: bool = e == 0) -> Tuples:
                if ucfg.negatives == "random":
                    return random_tuples(pairs, cfg.nnum, cfg.qsize, seed=seed)
                Xe = X if first else describe()
                return cluster_tuples(Xe, pairs, cfg.nnum, cfg.qsize, seed=seed, exclude_knn=ucfg.exclude_knn)

            ep = run.train_epoch(epoch, pairs, make_tuples)
            losses.append(ep.loss)
            lr = ep.lr
        t_train = time.perf_counter() - t1
        m = metrics(labels)
        X = describe()  # the next period clusters with the network trained here
        score = scored(period, X, pairs)
        nmi_f = nmi_at_final(X)
        stats = StepStats(period=period, clusters=int(labels.max()) + 1, target=target,
                          paired_images=paired, pairs=pairs.n_pairs, nmi=m["nmi"], ari=m["ari"],
                          acc=m["acc"], nmi_final=nmi_f, loss=float(np.mean(losses)), p=gem_p(net),
                          lr=lr, cluster_seconds=t_cluster, train_seconds=t_train,
                          seconds=time.perf_counter() - t0, **val_columns(score))
        run.record(period, stats, validated=has_val, score=score)
        write_csv_atomic(run.out / "clusters.csv", ["path", "cluster"],
                         ((str(p), int(c)) for p, c in zip(paths, labels)))

    final_pairs = PairSet.from_labels(paths, labels, max_pairs_per_class=ucfg.max_pairs_per_cluster,
                                      seed=cfg.seed)
    whitening_map = run.finish(final_pairs, train_val if val_on_train else val, validated=has_val,
                               pairs_note="the clusters' pairs")
    return run.result(whitening_map, validated=has_val, labels=labels)


def load_unlabeled_data(cfg: TrainConfig, ucfg: UnsupervisedConfig, data: Optional[PathLike] = None, *,
                        where: str = "config",
                        log: Log = print) -> Tuple[List[Path], Optional[np.ndarray], Optional[PairSet]]:
    """The images, evaluation-only labels and validation pairs of an unsupervised run.

    The images: ``data`` > ``unsupervised.images`` > ``train.data`` (``toy``: the generated
    collection of ``train.toy``). Validation (``unsupervised.validation``): ``held-out`` —
    ``train.val_data``, else ``train.val_fraction`` of the labeled images split off as supervised
    training does (and not trained on); ``transductive`` — needs the folder labels; ``none``.

    Returns:
        ``(paths, truth (N,) int64 or None, val PairSet or None)``.
    """
    src = data or ucfg.images or cfg.data
    if not src:
        raise ConfigError(f"{where}: no training images (set unsupervised.images or train.data, or pass --data)")
    if str(src) == "toy":
        src = prepare_toy_data(cfg.toy, log=log)
    paths, truth = load_unlabeled(src, ucfg.eval_labels)
    val = None
    if ucfg.validation == "held-out" and cfg.val_data:
        val = load_pairs(cfg.val_data, cfg.data_kind, cfg.ims_root, "val", cfg.max_pairs_per_class, cfg.seed)
    elif ucfg.validation == "held-out" and truth is not None and cfg.val_fraction > 0:
        labeled = PairSet.from_labels(paths, truth, cfg.max_pairs_per_class, seed=cfg.seed)
        train_part, val = split_for_selection(labeled, cfg.val_fraction, seed=cfg.seed, by=cfg.val_split,
                                              steps=ucfg.periods, mode=cfg.whitening, log=log)
        paths, truth = list(train_part.paths), train_part.labels
    elif ucfg.validation == "transductive" and truth is None:
        raise ConfigError("unsupervised.validation: transductive needs class sub-folders to evaluate with "
                          "(eval_labels: folders)")
    log(f"train: {len(paths)} unlabeled images from {src}"
        + ("" if truth is None else f" ({np.unique(truth).size} ground-truth classes, for NMI only)"))
    if val is not None:
        log(f"val:   {val.summary()}")
    if ucfg.validation == "transductive":
        log(f"val:   the {len(paths)} training images themselves, their folder labels used for evaluation only")
    return paths, truth, val
