"""Fine-tuning a descriptor network on matching pairs (Radenović, Tolias, Chum, TPAMI 2018).

Each epoch: re-mine tuples (query, positive, n hard negatives) with the current network
(:mod:`retrieval.mining`), train on them, validate (mAP on held-out classes), checkpoint. Training:

* tuples forwarded in real batches: the images of ``batch`` tuples (``batch · (2 + n)`` images) go
  through the network in one forward pass. Images keep their aspect ratio (long side
  ``image_size``) and are zero-padded to a common size; the padding is masked out of the pooling
  (masked GeM / MAC / SPoC), so a padded image pools like the unpadded one up to the convolutions'
  border effects. ``resize: square`` squashes every image to ``image_size²`` instead;
* BatchNorm frozen (running statistics not updated; the affine parameters still learn);
* Adam, backbone lr ``lr``, GeM p at ``p_lr_mult · lr`` without weight decay; exponential decay
  ``lr_e = lr · exp(−lr_decay · e)``; gradient accumulation over ``accumulate`` steps; bf16 autocast
  on CUDA (float32 on CPU);
* seeds: epoch ``e`` draws its pairs, pool and batch order from ``seed`` and ``e`` only, so a run
  resumed after epoch ``e`` continues exactly as the uninterrupted run would (CPU);
* the training runs without the whitening slot; after the last epoch, learned whitening (Lw) is
  learned on the training pairs with the network kept in ``best.pt`` and stored in it.

Files in the run folder: ``last.pt`` (every epoch: weights, model config, optimizer, epoch, history,
training config), ``best.pt`` (best validation mAP, with Lw), ``log.csv`` (one row per epoch).
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from retrieval.core.config import to_dict
from retrieval.core.errors import ConfigError, DataError
from retrieval.core.images import ImageDataset
from retrieval.core.io import atomic_path, write_log_csv
from retrieval.evaluation.metrics import compute_map
from retrieval.model.checkpoint import network_from_checkpoint, read_checkpoint, save_checkpoint
from retrieval.model.whitening import Whitening, learn_whitening, pca_whitening
from retrieval.search.extract import extract_descriptors, resolve_device
from retrieval.toy.collection import export_class_folders, make_retrieval_collection
from retrieval.training.loss import build_loss, default_margin
from retrieval.training.mining import Tuples, mine_tuples
from retrieval.training.pairs import MAX_PAIRS_PER_CLASS, PairSet, drop_unreadable, load_pairs

PathLike = Union[str, Path]
Log = Callable[[str], None]

LOG_FIELDS = ("epoch", "loss", "val_map", "p", "lr", "avg_neg_distance", "tuples",
              "mine_seconds", "train_seconds", "seconds")


@dataclass
class ToyData:
    """The generated collection used when ``train.data`` is ``toy`` (:mod:`retrieval.toydata`):
    ``n_objects`` objects × ``views`` views of ``image_size``² pixels, exported as class folders
    under ``root/classes`` (made once, remade when these settings change). ``include_junk`` keeps
    the views where the object is barely visible (off by default: they are not real matches)."""

    root: str = "runs/toy_train_data"
    n_objects: int = 40
    views: int = 6
    image_size: int = 96
    source: str = "synthetic"
    clutter: float = 0.0
    seed: int = 0
    include_junk: bool = False

    def validate(self) -> None:
        if self.source not in ("synthetic", "photos"):
            raise ConfigError(f"train.toy.source: '{self.source}' is not one of synthetic, photos")
        if self.n_objects < 2 or self.views < 2:
            raise ConfigError("train.toy: need n_objects ≥ 2 and views ≥ 2")


@dataclass
class TrainConfig:
    """The ``train:`` section of a training config (the ``model:`` section is a ModelConfig).

    Data:
        data: class folders ``DIR/<class>/*``, a ``.csv`` of ``query,positive[,cluster]``, an
            SfM-120k ``.pkl``, or ``toy`` (the generated collection described by ``toy``);
            data_kind: ``auto`` | ``folders`` | ``csv`` | ``sfm``; ims_root: the SfM image folder (default ``ims`` beside the pickle) or the CSV's path root.
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
    After training:
        whitening: learn Lw on the training pairs and store it in ``best.pt``; whiten_pairs: the
        pairs sampled for it; whiten_shrinkage: α of :func:`retrieval.whitening.learn_whitening`
        (``None`` = Ledoit–Wolf, near 0 with plenty of pairs, essential with fewer pairs than
        dimensions).
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
    whitening: bool = True
    whiten_pairs: int = 5000
    whiten_shrinkage: Optional[float] = None

    def validate(self) -> None:
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ConfigError(f"train.{msg}")

        need(self.data_kind in ("auto", "folders", "csv", "sfm"),
             f"data_kind: '{self.data_kind}' is not one of auto, folders, csv, sfm")
        need(self.loss in ("contrastive", "triplet"), f"loss: '{self.loss}' is not one of contrastive, triplet")
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


def prepare_toy_data(toy: ToyData, log: Log = print) -> Path:
    """Generate the toy collection of ``toy`` (unless already there with the same settings) and
    export it as class folders; returns ``root/classes``."""
    import json
    import shutil

    root = Path(toy.root)
    classes = root / "classes"
    params = dict(n_objects=toy.n_objects, views=toy.views, image_size=toy.image_size, seed=toy.seed,
                  clutter=float(toy.clutter), source=toy.source, distractors=0,
                  include_junk=toy.include_junk)
    stamp = root / "params.json"
    if classes.is_dir() and stamp.is_file() and json.loads(stamp.read_text()) == params:
        return classes
    log(f"generating the toy collection in {root} ({toy.n_objects} objects x {toy.views} views, "
        f"{toy.image_size} px, {toy.source})")
    col = make_retrieval_collection(root / "collection", n_objects=toy.n_objects, views=toy.views,
                                    distractors=0, image_size=toy.image_size, seed=toy.seed,
                                    clutter=toy.clutter, source=toy.source)
    if classes.exists():
        shutil.rmtree(classes)
    export_class_folders(col, classes, include_junk=toy.include_junk)
    with atomic_path(stamp) as tmp:
        tmp.write_text(json.dumps(params))
    return classes


class TupleDataset(torch.utils.data.Dataset):
    """Training tuples as images: item ``t`` is ``(list of 2 + n tensors (3, H, W) float32, reason)``;
    a tuple with an unreadable image gives ``(None, reason)``."""

    def __init__(self, paths: Sequence[PathLike], tuples: np.ndarray, image_size: int,
                 mean: Sequence[float], std: Sequence[float], square: bool = False) -> None:
        self.tuples = np.asarray(tuples, dtype=np.int64)
        self.images = ImageDataset(paths, image_size, mean=mean, std=std)
        self.square = square
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.tuples)

    def __getitem__(self, t: int):
        out = []
        for i in self.tuples[t].tolist():
            _, x, reason = self.images[i]
            if x is None:
                return None, f"{self.images.paths[i]}: {reason}"
            if self.square and tuple(x.shape[-2:]) != (self.image_size, self.image_size):
                x = F.interpolate(x[None], size=(self.image_size, self.image_size), mode="bilinear",
                                  align_corners=False, antialias=True)[0]
            out.append(x)
        return out, None


def collate_tuples(items: List[Tuple[Optional[List[torch.Tensor]], Optional[str]]]):
    """Stack the images of several tuples: ``(x (B·S, 3, H, W), mask (B·S, H, W) bool or None,
    B, failures)``; images are zero-padded at the bottom/right to the largest H and W (``mask`` marks
    the real pixels, ``None`` when no padding was needed)."""
    good = [imgs for imgs, _ in items if imgs is not None]
    failures = [r for imgs, r in items if imgs is None]
    if not good:
        return None, None, 0, failures
    flat = [x for imgs in good for x in imgs]
    H = max(x.shape[-2] for x in flat)
    W = max(x.shape[-1] for x in flat)
    if all(x.shape[-2:] == (H, W) for x in flat):
        return torch.stack(flat), None, len(good), failures
    x = torch.zeros(len(flat), 3, H, W)
    mask = torch.zeros(len(flat), H, W, dtype=torch.bool)
    for i, t in enumerate(flat):
        h, w = t.shape[-2:]
        x[i, :, :h, :w] = t
        mask[i, :h, :w] = True
    return x, mask, len(good), failures


# ----------------------------------------------------------------------------------------------
# Network pieces
# ----------------------------------------------------------------------------------------------
def freeze_batchnorm(net: nn.Module) -> None:
    """Put every BatchNorm layer in eval mode (running statistics frozen)."""
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def set_train_mode(net: nn.Module, freeze_bn: bool = True) -> None:
    """``net.train()``, with BatchNorm frozen unless ``freeze_bn`` is false."""
    net.train()
    if freeze_bn:
        freeze_batchnorm(net)


def gem_p(net: nn.Module) -> float:
    """The pooling's current p (NaN for a pooling without one)."""
    p = getattr(net.pool, "p", None)
    return float(p.detach()) if isinstance(p, torch.Tensor) else float("nan")


def describe_training_batch(net: nn.Module, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Descriptors with gradients: ``x (B, 3, H, W)`` float32 (+ optional ``mask (B, H, W)`` bool of
    real pixels) → ``(B, D)`` float32, L2 rows. bf16 autocast for the backbone on CUDA."""
    if x.device.type == "cuda":
        with torch.autocast("cuda", dtype=torch.bfloat16):
            fmap = net.features(x)
    else:
        fmap = net.features(x)
    fmap = fmap.float()
    if mask is None:
        f = net.pool(fmap)
    else:
        m = F.interpolate(mask[:, None].to(fmap.dtype), size=fmap.shape[-2:], mode="area")[:, 0]
        f = net.pool(fmap, m)
    return net.head(F.normalize(f, dim=-1))


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


def _epoch_seed(seed: int, epoch: int) -> int:
    return (int(seed) * 1_000_003 + int(epoch)) % (2 ** 63)


def _oom_hint(cfg: TrainConfig, n_images: int, size: int) -> ConfigError:
    return ConfigError(
        f"out of GPU memory with train.batch {cfg.batch} ({n_images} images of {size} px per forward); "
        f"lower train.batch (raise train.accumulate to keep the effective batch) or train.image_size")


def train_epoch(net: nn.Module, pairs: PairSet, tuples: Tuples, optimizer: torch.optim.Optimizer,
                loss_fn: nn.Module, cfg: TrainConfig, epoch: int, *, image_size: int,
                device: torch.device, progress: bool = True) -> Tuple[float, int, List[str]]:
    """One pass over ``tuples``: ``batch`` tuples per forward, a step every ``accumulate`` forwards.

    Returns ``(mean loss per tuple, tuples used, failures)``.
    """
    S = tuples.size
    ds = TupleDataset(pairs.paths, tuples.images(), image_size, net.backbone.mean, net.backbone.std,
                      square=cfg.resize == "square")
    g = torch.Generator().manual_seed(_epoch_seed(cfg.seed, epoch))
    loader = torch.utils.data.DataLoader(ds, batch_size=cfg.batch, shuffle=True, generator=g,
                                         num_workers=cfg.workers, collate_fn=collate_tuples,
                                         pin_memory=device.type == "cuda")
    set_train_mode(net, cfg.freeze_bn)
    optimizer.zero_grad(set_to_none=True)
    total, used, pending = 0.0, 0, 0
    failures: List[str] = []
    with tqdm(total=len(ds), desc=f"epoch {epoch}", unit="tuple", disable=not progress, leave=False) as bar:
        for x, mask, b, bad in loader:
            failures += bad
            bar.update(b + len(bad))
            if b == 0:
                continue
            x = x.to(device, non_blocking=True)
            mask = mask.to(device) if mask is not None else None
            try:
                d = describe_training_batch(net, x, mask).view(b, S, -1)
                loss = loss_fn(d)
                (loss / cfg.accumulate).backward()
            except torch.cuda.OutOfMemoryError:
                optimizer.zero_grad(set_to_none=True)
                torch.cuda.empty_cache()
                raise _oom_hint(cfg, b * S, image_size) from None
            total += float(loss.detach()) * b
            used += b
            pending += 1
            if pending == cfg.accumulate:
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                pending = 0
            bar.set_postfix(loss=f"{total / used:.4f}")
    if pending:
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    net.eval()
    return (total / used if used else float("nan")), used, failures


# ----------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------
def describe_pairs(net: nn.Module, pairs: PairSet, *, image_size: int, batch_size: int = 16,
                   workers: Optional[int] = None, device: Optional[torch.device] = None,
                   progress: bool = False, desc: str = "describe") -> Tuple[np.ndarray, PairSet]:
    """Descriptors of every image of ``pairs`` (single scale): ``(X (N', D) float32, pairs')`` where
    ``pairs'`` is ``pairs`` without the images that could not be read."""
    ex = extract_descriptors(net, pairs.paths, image_size=image_size, scales=[1.0], batch_size=batch_size,
                             workers=workers, device=device, progress=progress, desc=desc)
    if ex.failures:
        loaded = set(ex.paths)
        pairs = pairs.subset(np.array([str(p) in loaded for p in pairs.paths]))
    return ex.descriptors, pairs


def mean_ap(X: np.ndarray, pairs: PairSet) -> float:
    """mAP with every image of ``pairs`` as a query against all of them (itself ignored),
    positives = its cluster. ``X``: ``(N, D)`` float32 descriptors of ``pairs.paths``."""
    queries, gnd = pairs.ground_truth()
    if len(queries) == 0:
        return float("nan")
    scores = X[queries] @ X.T
    ranks = np.argsort(-scores, axis=1, kind="stable")
    return float(compute_map(ranks, gnd).map)


def validate(net: nn.Module, val: PairSet, *, image_size: int, batch_size: int = 16,
             workers: Optional[int] = None, device: Optional[torch.device] = None,
             progress: bool = False) -> float:
    """Validation mAP of ``net`` on ``val`` (see :func:`mean_ap`); NaN for an empty set."""
    if val.n_images == 0:
        return float("nan")
    X, val = describe_pairs(net, val, image_size=image_size, batch_size=batch_size, workers=workers,
                            device=device, progress=progress, desc="validate")
    return mean_ap(X, val)


def sample_pairs(pairs: PairSet, n: int, seed: int = 0) -> PairSet:
    """At most ``n`` of the matching pairs, with only the images they use."""
    if pairs.n_pairs > n:
        sel = np.sort(np.random.default_rng(seed).permutation(pairs.n_pairs)[:n])
        pairs = dataclasses.replace(pairs, qidx=pairs.qidx[sel], pidx=pairs.pidx[sel])
    used = np.zeros(pairs.n_images, dtype=bool)
    used[pairs.qidx] = True
    used[pairs.pidx] = True
    return pairs.subset(used)


def learn_whitenings(net: nn.Module, train_pairs: PairSet, val: Optional[PairSet] = None, *,
                     image_size: int, max_pairs: int = 5000, shrinkage: Union[float, str] = "auto",
                     batch_size: int = 16,
                     workers: Optional[int] = None, device: Optional[torch.device] = None,
                     seed: int = 0, progress: bool = False) -> Tuple[Whitening, Whitening, Dict[str, float]]:
    """Learn Lw (from the matching pairs) and PCA-w (from the same images) with ``net`` (its
    whitening slot must be empty), and the validation mAP with none / PCA-w / Lw.

    Returns ``(lw, pca, {"none": mAP, "pca": mAP, "lw": mAP})`` (mAPs NaN without ``val``).
    """
    if getattr(net, "has_whitening", False):
        raise ValueError("learn whitening on a network whose whitening slot is empty")
    sub = sample_pairs(train_pairs, max_pairs, seed)
    X, sub = describe_pairs(net, sub, image_size=image_size, batch_size=batch_size, workers=workers,
                            device=device, progress=progress, desc="whitening")
    lw = learn_whitening(X, sub.qidx, sub.pidx, shrinkage=shrinkage)
    pca = pca_whitening(X)
    maps = {"none": float("nan"), "pca": float("nan"), "lw": float("nan")}
    if val is not None and val.n_images:
        V, val = describe_pairs(net, val, image_size=image_size, batch_size=batch_size, workers=workers,
                                device=device, progress=progress, desc="validate")
        maps = {"none": mean_ap(V, val), "pca": mean_ap(pca.apply(V), val), "lw": mean_ap(lw.apply(V), val)}
    return lw, pca, maps


# ----------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------
def _comparable(cfg: Dict[str, Any]) -> Dict[str, Any]:
    return {k: v for k, v in cfg.items() if k not in ("weights", "whitening", "dim")}


def _save(net: nn.Module, path: Path, extra: Dict[str, Any]) -> None:
    save_checkpoint(net, path, extra=extra)


def train(net: nn.Module, pairs: PairSet, cfg: TrainConfig, out_dir: PathLike, *,
          val: Optional[PairSet] = None, resume: bool = False, epochs: Optional[int] = None,
          skipped: Optional[List[Tuple[str, str]]] = None, progress: bool = True,
          log: Log = print) -> TrainResult:
    """Fine-tune ``net`` on ``pairs``; checkpoints, log and ``best.pt`` go to ``out_dir``.

    Args:
        net: a :class:`~retrieval.network.DescriptorNet` (its whitening slot is emptied for training).
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
        ConfigError: a resume from another model config, or an out-of-memory batch on the GPU.
    """
    cfg.validate()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    last_path, best_path, log_path = out / "last.pt", out / "best.pt", out / "log.csv"
    n_epochs = int(epochs if epochs is not None else cfg.epochs)
    device = resolve_device(cfg.device)
    image_size = int(cfg.image_size or net.config.image_size)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    if getattr(net, "has_whitening", False):
        net.clear_whitening()
    net.to(device)
    val = val if val is not None and val.n_images else None

    optimizer = make_optimizer(net, cfg)
    loss_fn = build_loss(cfg.loss, cfg.resolved_margin(net.config.backbone))
    history: List[EpochStats] = []
    best_epoch, best_map, start = 0, -math.inf, 1
    if resume:
        if not last_path.is_file():
            raise ConfigError(f"--resume: no checkpoint to resume from at {last_path}")
        ck = read_checkpoint(last_path)
        if _comparable(ck["config"]) != _comparable(to_dict(net.config)):
            raise ConfigError(f"--resume: {last_path} was trained with another model config; "
                              "use the same config or another --out folder")
        net.load_state_dict(ck["state_dict"])
        extra = ck["extra"]
        optimizer.load_state_dict(extra["optimizer"])
        history = [EpochStats(**h) for h in extra["history"]]
        best_epoch, best_map, start = int(extra["best_epoch"]), float(extra["best_map"]), int(extra["epoch"]) + 1
        if isinstance(extra.get("torch_rng"), torch.Tensor):
            torch.set_rng_state(extra["torch_rng"])
        net.to(device)
        log(f"resumed {last_path} after epoch {start - 1}")

    def extra_state(epoch: int) -> Dict[str, Any]:
        return {"optimizer": optimizer.state_dict(), "epoch": epoch, "history": [dataclasses.asdict(h) for h in history],
                "best_epoch": best_epoch, "best_map": best_map, "train_config": to_dict(cfg),
                "torch_rng": torch.get_rng_state()}

    common = dict(image_size=image_size, batch_size=cfg.mine_batch, workers=cfg.workers, device=device)
    if start == 1 and val is not None and cfg.validate_before and not history:
        t0 = time.perf_counter()
        m0 = validate(net, val, **common)
        history.append(EpochStats(epoch=0, val_map=m0, p=gem_p(net), seconds=time.perf_counter() - t0))
        log(history[-1].line(n_epochs))
        write_log_csv(log_path, LOG_FIELDS, history)

    for epoch in range(start, n_epochs + 1):
        t0 = time.perf_counter()
        torch.manual_seed(_epoch_seed(cfg.seed, epoch))
        lr = set_epoch_lr(optimizer, cfg, epoch)
        try:
            tuples = mine_tuples(net, pairs, nnum=cfg.nnum, qsize=cfg.qsize, poolsize=cfg.poolsize,
                                 seed=_epoch_seed(cfg.seed, epoch), progress=progress, **common)
            t1 = time.perf_counter()
            loss, used, bad = train_epoch(net, pairs, tuples, optimizer, loss_fn, cfg, epoch,
                                          image_size=image_size, device=device, progress=progress)
            t2 = time.perf_counter()
            vmap = validate(net, val, **common) if val is not None else float("nan")
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            raise ConfigError(f"out of GPU memory describing {cfg.mine_batch} images of {image_size} px "
                              "for mining/validation; lower train.mine_batch") from None
        stats = EpochStats(epoch=epoch, loss=loss, val_map=vmap, p=gem_p(net), lr=lr,
                           avg_neg_distance=tuples.avg_neg_distance, tuples=used, mine_seconds=t1 - t0,
                           train_seconds=t2 - t1, seconds=time.perf_counter() - t0)
        history.append(stats)
        score = vmap if val is not None else float(epoch)
        improved = score > best_map
        if improved:
            best_epoch, best_map = epoch, score
        _save(net, last_path, extra_state(epoch))
        if improved and val is not None:
            _save(net, best_path, extra_state(epoch))
        write_log_csv(log_path, LOG_FIELDS, history)
        log(stats.line(n_epochs) + ("  *best" if improved and val is not None else ""))
        if bad:
            log(f"epoch {epoch}: skipped {len(bad)} tuple(s) with unreadable images, e.g. {bad[0]}")

    if val is None or not best_path.is_file():  # no validation: the last epoch is the best
        best_epoch = max(start - 1, n_epochs) if val is None else n_epochs
        _save(net, best_path, extra_state(best_epoch))
    whitening_map: Dict[str, float] = {}
    if cfg.whitening:
        best_ck = read_checkpoint(best_path)
        best_net = network_from_checkpoint(best_ck, source=str(best_path))
        best_net.clear_whitening()
        shrink = "auto" if cfg.whiten_shrinkage is None else cfg.whiten_shrinkage
        lw, _, whitening_map = learn_whitenings(best_net, pairs, val, max_pairs=cfg.whiten_pairs,
                                                shrinkage=shrink, seed=cfg.seed, progress=progress, **common)
        best_net.set_whitening(lw.m, lw.P, kind="lw")
        extra = dict(best_ck["extra"])
        extra["whitening_map"] = whitening_map
        extra["whitening_shrinkage"] = lw.shrinkage
        _save(best_net, best_path, extra)
        if val is not None:
            log("best epoch {}: val mAP none {:.2f}  PCA-w {:.2f}  Lw {:.2f} (shrinkage {:.3f}; Lw stored in {})".format(
                best_epoch, 100 * whitening_map["none"], 100 * whitening_map["pca"],
                100 * whitening_map["lw"], lw.shrinkage, best_path))
    return TrainResult(out, history, best_epoch, best_map if val is not None else float("nan"),
                       best_path, last_path, whitening_map, list(skipped or []))
