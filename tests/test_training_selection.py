"""retrieval.training.selection: which model best.pt holds: never a validated model worse than the starting network."""
from __future__ import annotations

import math
from pathlib import Path
from typing import List

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance

from retrieval.model.checkpoint import load_checkpoint, read_checkpoint
from retrieval.model.network import ModelConfig, build_network
from retrieval.training.config import TrainConfig
from retrieval.training.pairs import PairSet, pairs_from_folders
from retrieval.training.selection import ModelSelection, StepScore, fit_whitenings, whitening_dim
from retrieval.training.supervised import load_training_pairs, train
from retrieval.training.validation import describe_pairs, mean_ap

QUIET = dict(progress=False, log=lambda s: None)


# ----------------------------------------------------------------------------------------------
# The rule, on scores
# ----------------------------------------------------------------------------------------------
def _score(step: int, none: float, pca: float = math.nan, lw: float = math.nan) -> StepScore:
    from retrieval.model.whitening import Whitening

    w = {k: Whitening(np.zeros(2, np.float32), np.eye(2, dtype=np.float32), k)
         for k, v in (("pca", pca), ("lw", lw)) if not math.isnan(v)}
    return StepScore(step, {"none": none, "pca": pca, "lw": lw}, w)


def test_auto_keeps_the_best_candidate_and_ties_keep_the_start():
    lines: List[str] = []
    sel = ModelSelection("auto", log=lines.append)
    assert sel.consider(_score(0, 0.81, 0.40, 0.79)).kind == "none"
    assert sel.consider(_score(1, 0.81, 0.50, 0.80)) is None  # a tie is not an improvement
    assert sel.consider(_score(2, 0.80, 0.30, 0.82)).kind == "lw"  # Lw of epoch 2 beats all
    assert (sel.best.step, sel.best.kind) == (2, "lw")
    sel2 = ModelSelection("auto", log=lines.append)
    for s in (_score(0, 0.813, 0.4, 0.80), _score(1, 0.809, 0.4, 0.81), _score(2, 0.805, 0.4, 0.79)):
        sel2.consider(s)
    assert (sel2.best.step, sel2.best.kind) == (0, "none")
    assert "best.pt is the starting network: fine-tuning did not improve validation mAP" in sel2.report()


def test_forced_whitening_still_chooses_the_step():
    sel = ModelSelection("lw", log=lambda s: None)
    sel.consider(_score(0, 0.9, 0.5, 0.70))
    sel.consider(_score(1, 0.95, 0.5, 0.75))
    sel.consider(_score(2, 0.99, 0.5, 0.72))
    assert (sel.best.step, sel.best.kind, sel.best.val_map) == (1, "lw", 0.75)
    none = ModelSelection("none", log=lambda s: None)
    none.consider(_score(0, 0.9, 0.95, 0.99))
    assert none.best.kind == "none"


def test_whitening_from_few_images_keeps_their_rank():
    """PCA-w from n images keeps n − 1 dimensions (the numpy rank of the sample) and whitens them;
    Lw keeps all D, shrunk by Ledoit–Wolf."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(12, 64)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    labels = np.repeat(np.arange(4), 3)
    pairs = PairSet.from_labels([f"{i}.jpg" for i in range(12)], labels)
    ws = fit_whitenings(X, pairs, ["lw", "pca"])
    assert whitening_dim(12, 64) == 11 == np.linalg.matrix_rank(X - X.mean(0))
    assert ws["pca"].P.shape == (11, 64) and ws["lw"].P.shape == (64, 64)
    for w in ws.values():
        Y = w.apply(X)
        assert Y.shape == (12, w.P.shape[0]) and np.isfinite(Y).all()
    assert ws["lw"].shrinkage > 0.1  # Ledoit–Wolf shrinks hard with 24 pairs for 64 dimensions
    # PCA-w of the training data is white on the kept directions
    Z = (X - ws["pca"].m) @ ws["pca"].P.T
    np.testing.assert_allclose(np.cov(Z.T, bias=True), np.eye(11), atol=1e-3)


# ----------------------------------------------------------------------------------------------
# The rule, in a run
# ----------------------------------------------------------------------------------------------
def _noise_classes(root: Path, n_classes: int = 6, k: int = 4) -> Path:
    """Classes of noisy copies of a random image each, 32 px: easy for a random network."""
    rng = np.random.default_rng(0)
    for c in range(n_classes):
        base = rng.integers(0, 255, (32, 32, 3)).astype(np.float64)
        d = root / f"c{c}"
        d.mkdir(parents=True)
        for i in range(k):
            img = np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(d / f"{i}.png")
    return root


@pytest.mark.slow
def test_training_that_hurts_hands_back_the_starting_network(tmp_path):
    """A learning rate that wrecks the network: best.pt is the starting network (its weights, no
    whitening chosen above validation), and the log says so in plain words."""
    data = _noise_classes(tmp_path / "d")
    cfg = TrainConfig(data=str(data), val_fraction=0.5, val_split="images", lr=0.5, p_lr_mult=0.0, epochs=1,
                      qsize=8, nnum=1, batch=4, workers=0, mine_batch=32, freeze_bn=False, seed=0)
    tr, va, _ = load_training_pairs(cfg, log=lambda s: None)
    net = build_network(ModelConfig(backbone="resnet18", weights="none", image_size=32, scales=[1.0]), seed=0)
    start = {k: v.clone() for k, v in net.state_dict().items()}
    lines: List[str] = []
    res = train(net, tr, cfg, tmp_path / "run", val=va, progress=False, log=lines.append)
    h = res.history
    assert h[1].val_map < h[0].val_map - 0.05, [e.val_map for e in h]  # training hurt
    assert res.best_epoch == 0
    ck = read_checkpoint(res.best_path)
    assert ck["extra"]["epoch"] == 0 and ck["extra"]["whitening"] == res.whitening
    for k, v in start.items():
        if not k.startswith("whiten"):
            assert torch.equal(v, ck["state_dict"][k]), k
    text = "\n".join(lines)
    assert "best.pt is the starting network: fine-tuning did not improve validation mAP" in text
    assert "best.pt is the starting network" in res.summary()
    assert "warning: validation has 6 class(es) and 12 queries: too few" in text
    # the kept candidate is the best of the starting network's three
    assert res.best_map == pytest.approx(max(v for v in res.whitening_map.values() if v == v))


@pytest.mark.slow
def test_no_validation_falls_back_to_the_documented_rule(tmp_path):
    data = _noise_classes(tmp_path / "d", n_classes=3)
    lines: List[str] = []
    cfg = TrainConfig(data=str(data), val_fraction=0.5, val_split="classes", lr=1e-4, epochs=1, qsize=4, nnum=1,
                      batch=4, workers=0, mine_batch=32)
    tr, va, _ = load_training_pairs(cfg, log=lines.append)  # 3 classes: none can be held out
    assert va.n_images == 0 and tr.n_images == 12
    assert any(line.startswith("no validation split is possible") for line in lines)
    net = build_network(ModelConfig(backbone="resnet18", weights="none", image_size=32, scales=[1.0]), seed=0)
    res = train(net, tr, cfg, tmp_path / "run", val=va, progress=False, log=lines.append)
    # 36 pairs < 512 dimensions: auto keeps no whitening, the last epoch
    assert res.best_epoch == 1 and res.whitening == "none" and not load_checkpoint(res.best_path).has_whitening
    assert any("no validation: nothing measures the epochs, so best.pt is the last epoch (1) with whitening none"
               in line for line in lines)


# ----------------------------------------------------------------------------------------------
# The case: a small folder of real-photo classes
# ----------------------------------------------------------------------------------------------
PHOTOS = ["astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field", "retina",
          "motorcycle"]


def photo_views(root: Path, views: range, size: int = 96) -> Path:
    """16 classes (the two halves of 8 scikit-image colour photos) × ``views``: each view a random
    60–90 % crop of its half, rotated ±10°, brightness and contrast ±25 %, long side ``size``.
    View ``v`` of a class is the same whatever ``views`` holds, so disjoint ranges give disjoint views."""
    skd = pytest.importorskip("skimage.data")
    for pi, name in enumerate(PHOTOS):
        arr = skd.stereo_motorcycle()[0] if name == "motorcycle" else getattr(skd, name)()
        img = Image.fromarray(np.asarray(arr)).convert("RGB")
        W, H = img.size
        for half in range(2):
            region = img.crop((half * W // 2, 0, (half + 1) * W // 2, H))
            rw, rh = region.size
            d = root / f"{name}_{half}"
            d.mkdir(parents=True, exist_ok=True)
            for v in views:
                r = np.random.default_rng([pi, half, v])
                s = r.uniform(0.6, 0.9)
                cw, ch = int(rw * s), int(rh * s)
                x0, y0 = int(r.integers(0, rw - cw + 1)), int(r.integers(0, rh - ch + 1))
                im = region.crop((x0, y0, x0 + cw, y0 + ch)).rotate(r.uniform(-10, 10), resample=Image.BILINEAR)
                im = ImageEnhance.Contrast(ImageEnhance.Brightness(im).enhance(r.uniform(0.75, 1.25)))
                im = im.enhance(r.uniform(0.75, 1.25))
                k = size / max(im.size)
                im.resize((max(1, round(im.size[0] * k)), max(1, round(im.size[1] * k))), Image.BILINEAR).save(
                    d / f"v{v}.jpg", quality=90)
    return root


@pytest.mark.slow
def test_real_photo_folder_best_is_never_worse_than_the_start(tmp_path):
    """16 classes × 4 views cut from real photos, the settings of configs/train_toy.yaml at 96 px
    (fewer tuples, 2 epochs): on held-out views of the same classes, best.pt is never below the
    starting network."""
    size = 96
    train_dir = photo_views(tmp_path / "train", range(4), size)
    test = pairs_from_folders(photo_views(tmp_path / "test", range(4, 7), size))
    model = ModelConfig(backbone="efficientnet_lite0", weights="imagenet", image_size=size, scales=[1.0])
    cfg = TrainConfig(data=str(train_dir), val_fraction=0.2, val_split="classes", lr=1e-5, epochs=2, qsize=20,
                      poolsize=2000, nnum=3, batch=5, workers=0, mine_batch=32, seed=0)
    tr, va, _ = load_training_pairs(cfg, log=lambda s: None)
    assert tr.n_images + va.n_images == 64

    def held_out(net) -> float:
        X, t = describe_pairs(net, test, image_size=size, batch_size=32, workers=0)
        return mean_ap(X, t)

    net = build_network(model)
    m_start = held_out(net)
    lines: List[str] = []
    res = train(net, tr, cfg, tmp_path / "run", val=va, progress=False, log=lines.append)
    best = load_checkpoint(res.best_path)
    m_best = held_out(best)
    assert m_best >= m_start - 0.005, (m_start, m_best, res.best_epoch, res.whitening, lines)
    assert best.config.whitening == res.whitening and res.whitening in ("none", "pca", "lw")
    assert any(line.startswith("best.pt: epoch") for line in lines)
