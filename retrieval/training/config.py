"""The sections of a training config: ``train:`` (:class:`TrainConfig`: data, loss, optimiser,
tuples, compute, whitening) and ``unsupervised:`` (:class:`UnsupervisedConfig`: the periods and
clustering of training with no labels).

``train:`` is read by both training drivers (:mod:`retrieval.training.supervised` and, with the
``unsupervised:`` section beside it, :mod:`retrieval.training.unsupervised`) and by the shared loop
(:mod:`retrieval.training.engine`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Union

from retrieval.core.errors import ConfigError
from retrieval.training.loss import default_margin
from retrieval.training.pairs import MAX_PAIRS_PER_CLASS
from retrieval.training.selection import WHITENING_CHOICES, whitening_mode
from retrieval.training.toy_data import ToyData


@dataclass
class TrainConfig:
    """The ``train:`` section of a training config (the ``model:`` section is a ModelConfig).

    Data:
        data: class folders ``DIR/<class>/*``, a ``.csv`` of ``query,positive[,cluster]``, an
            SfM-120k ``.pkl``, or ``toy`` (the generated collection described by ``toy``);
            data_kind: ``auto`` | ``folders`` | ``csv`` | ``sfm``; ims_root: the SfM image folder
            (default ``ims`` beside the pickle) or the CSV's path root.
        val_data: a separate validation source (same kinds); otherwise ``val_fraction`` of the
            data is held out (0 = no validation; ``best.pt`` is then the last epoch): whole classes
            (``val_split: classes``, retrieval of unseen objects) or that fraction of the images of
            every class (``val_split: images``, unseen views of the trained objects).
        max_pairs_per_class: ordered pairs kept per class of the folder source.
        check_images: decode every image once before training; unreadable ones are skipped and
            reported.
    Loss and optimiser:
        loss: ``contrastive`` | ``triplet``; margin: ``None`` = 0.85 (0.75 for VGG) for the
            contrastive loss, 0.1 for the triplet loss.
        lr, p_lr_mult, weight_decay (backbone only), lr_decay (per epoch, exponential), epochs.
    Tuples:
        nnum negatives per tuple, qsize tuples per epoch, poolsize images in the negative pool,
        batch tuples per forward pass, accumulate forward passes per optimiser step.
    Images and compute:
        image_size (``None`` = the model's), resize ``pad`` | ``square``, workers (decoding
        processes), mine_batch (images per forward when mining/validating), device (``None`` =
        CUDA when available), seed, deterministic (``torch.use_deterministic_algorithms``),
        freeze_bn (BatchNorm running statistics frozen, as in the paper; ``false`` lets them adapt,
        which a randomly initialised network needs), freeze_stages (the first N stages of the
        backbone, in ``backbone.layer_names()`` order, are not trained: a faster backward pass,
        and the generic low-level filters kept, which lets a larger lr train the rest stably).
    Choosing best.pt (:mod:`retrieval.training.selection`):
        whitening: ``auto`` (default: ``best.pt`` is the best validated (step, whitening) among the
        starting network and every step, each with none / PCA-w / Lw) | ``lw`` | ``pca`` |
        ``none`` (that whitening forced; the step still chosen by validation mAP). ``true`` (the
        old switch) reads as ``lw``, ``false`` as ``none``. whiten_pairs: the training pairs
        sampled to learn a whitening; whiten_shrinkage: α of
        :func:`retrieval.model.whitening.learn_whitening` (``None`` = Ledoit–Wolf, near 0 with
        plenty of pairs, essential with fewer pairs than dimensions).
    """

    data: Optional[str] = None
    toy: ToyData = field(default_factory=ToyData)
    data_kind: str = "auto"
    ims_root: Optional[str] = None
    val_data: Optional[str] = None
    val_fraction: float = 0.1
    val_split: str = "classes"
    max_pairs_per_class: Optional[int] = MAX_PAIRS_PER_CLASS
    check_images: bool = True
    loss: str = "contrastive"
    margin: Optional[float] = None
    lr: float = 1e-6
    p_lr_mult: float = 10.0
    weight_decay: float = 1e-6
    lr_decay: float = 0.01
    epochs: int = 100
    nnum: int = 5
    qsize: int = 2000
    poolsize: int = 20000
    batch: int = 5
    accumulate: int = 1
    image_size: Optional[int] = None
    resize: str = "pad"
    workers: int = 2
    mine_batch: int = 16
    device: Optional[str] = None
    seed: int = 0
    deterministic: bool = False
    freeze_bn: bool = True
    freeze_stages: int = 0
    validate_before: bool = True
    whitening: Union[str, bool] = "auto"
    whiten_pairs: int = 5000
    whiten_shrinkage: Optional[float] = None

    def __post_init__(self) -> None:
        self.whitening = whitening_mode(self.whitening)

    def validate(self) -> None:
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ConfigError(f"train.{msg}")

        need(self.data_kind in ("auto", "folders", "csv", "sfm"),
             f"data_kind: '{self.data_kind}' is not one of auto, folders, csv, sfm")
        need(self.loss in ("contrastive", "triplet"), f"loss: '{self.loss}' is not one of contrastive, triplet")
        self.whitening = whitening_mode(self.whitening)
        need(self.whitening in WHITENING_CHOICES,
             f"whitening: '{self.whitening}' is not one of {', '.join(WHITENING_CHOICES)}")
        need(self.resize in ("pad", "square"), f"resize: '{self.resize}' is not one of pad, square")
        need(self.val_split in ("classes", "images"),
             f"val_split: '{self.val_split}' is not one of classes, images")
        need(0.0 <= self.val_fraction < 1.0, f"val_fraction: must be in [0, 1), got {self.val_fraction}")
        need(self.lr > 0, f"lr: must be positive, got {self.lr}")
        need(self.p_lr_mult >= 0, f"p_lr_mult: must be ≥ 0, got {self.p_lr_mult}")
        need(self.weight_decay >= 0, f"weight_decay: must be ≥ 0, got {self.weight_decay}")
        need(self.lr_decay >= 0, f"lr_decay: must be ≥ 0, got {self.lr_decay}")
        need(self.margin is None or self.margin > 0, f"margin: must be positive, got {self.margin}")
        need(self.whiten_shrinkage is None or 0 <= self.whiten_shrinkage <= 1,
             f"whiten_shrinkage: must be in [0, 1] (or null = automatic), got {self.whiten_shrinkage}")
        for name in ("epochs", "qsize", "poolsize", "batch", "accumulate", "mine_batch", "whiten_pairs"):
            need(getattr(self, name) >= 1, f"{name}: must be ≥ 1, got {getattr(self, name)}")
        need(self.nnum >= (1 if self.loss == "triplet" else 0), f"nnum: too small ({self.nnum})")
        need(self.workers >= 0, f"workers: must be ≥ 0, got {self.workers}")
        need(self.freeze_stages >= 0, f"freeze_stages: must be ≥ 0, got {self.freeze_stages}")
        need(self.image_size is None or self.image_size >= 16, f"image_size: at least 16, got {self.image_size}")
        need(self.max_pairs_per_class is None or self.max_pairs_per_class >= 1,
             f"max_pairs_per_class: must be ≥ 1, got {self.max_pairs_per_class}")

    def resolved_margin(self, backbone: str) -> float:
        if self.margin is not None:
            return float(self.margin)
        return default_margin(backbone) if self.loss == "contrastive" else 0.1


@dataclass
class UnsupervisedConfig:
    """The ``unsupervised:`` section of a training config (with ``train:`` = TrainConfig).

    Attributes:
        pairs: where the matching pairs come from; ``cluster`` (the only source of this section).
        images: the unlabeled training images (a folder, recursive, or a .txt list); default
            ``train.data``.
        eval_labels: ``folders`` — images in ``DIR/<class>/`` get that class and images directly
            in ``DIR`` are their own class, **for NMI/ARI/accuracy only**; ``none`` — no metrics.
        periods: number of cluster-then-train periods.
        epochs_per_period: training epochs in each period.
        eta: unfolding rate η in (0, 1]: each period merges ``ceil(η·K)`` of its K clusters.
        final_clusters: clusters after the last period (``None`` = a quarter of the images).
        recluster: ``continue`` (JULE: merge on from the previous period's clusters with the new
            descriptors) or ``scratch`` (re-cluster from the 1-NN components each period).
        ks, kc, merge_batch: :func:`retrieval.training.cluster.agglomerative`'s K_s, K_c and
            ``batch`` (the clustering settings of the run).
        max_pairs_per_cluster: ordered pairs kept per cluster (sampled, seeded).
        validation: where the validation mAP comes from: ``held-out`` — ``train.val_data`` when set,
            else ``train.val_fraction`` of the labeled data split off exactly as supervised training
            does (those images are not trained on); ``transductive`` — the training images
            themselves with their ``eval_labels`` (retrieval within the unlabeled pile, labels for
            evaluation only); ``none``.
        negatives: ``hard`` — the most similar images of other clusters (one per cluster) under
            the current network, as in supervised fine-tuning, but skipping each query's
            ``exclude_knn`` nearest neighbours: pseudo-labels split an object over several
            clusters, and its other views would otherwise be the "hardest negatives";
            ``random`` — drawn from other clusters, as JULE does.
        exclude_knn: see ``negatives`` (0 = plain hardest negatives).
    """

    pairs: str = "cluster"
    images: Optional[str] = None
    eval_labels: str = "folders"
    periods: int = 4
    epochs_per_period: int = 1
    eta: float = 0.5
    final_clusters: Optional[int] = None
    recluster: str = "continue"
    ks: int = 10
    kc: int = 5
    merge_batch: float = 0.1
    max_pairs_per_cluster: int = 200
    negatives: str = "hard"
    exclude_knn: int = 5
    validation: str = "held-out"

    def validate(self) -> None:
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ConfigError(f"unsupervised.{msg}")

        need(self.pairs == "cluster", f"pairs: '{self.pairs}' is not a source of this section (cluster)")
        need(self.eval_labels in ("folders", "none"), f"eval_labels: '{self.eval_labels}' is not one of folders, none")
        need(self.recluster in ("continue", "scratch"),
             f"recluster: '{self.recluster}' is not one of continue, scratch")
        need(self.periods >= 1, f"periods: must be ≥ 1, got {self.periods}")
        need(self.epochs_per_period >= 1, f"epochs_per_period: must be ≥ 1, got {self.epochs_per_period}")
        need(0.0 < self.eta <= 1.0, f"eta: must be in (0, 1], got {self.eta}")
        need(self.final_clusters is None or self.final_clusters >= 2,
             f"final_clusters: must be ≥ 2, got {self.final_clusters}")
        need(self.ks >= 1 and self.kc >= 1, f"ks/kc: must be ≥ 1, got {self.ks}/{self.kc}")
        need(0.0 < self.merge_batch <= 1.0, f"merge_batch: must be in (0, 1], got {self.merge_batch}")
        need(self.validation in ("held-out", "transductive", "none"),
             f"validation: '{self.validation}' is not one of held-out, transductive, none")
        need(self.negatives in ("hard", "random"), f"negatives: '{self.negatives}' is not one of hard, random")
        need(self.exclude_knn >= 0, f"exclude_knn: must be ≥ 0, got {self.exclude_knn}")
        need(self.max_pairs_per_cluster >= 1, f"max_pairs_per_cluster: must be ≥ 1, got {self.max_pairs_per_cluster}")
