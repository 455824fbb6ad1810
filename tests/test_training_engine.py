"""retrieval.training.engine: frozen stages, the optimizer's groups (GeM p at its own learning rate)
and the per-epoch learning-rate decay."""
from __future__ import annotations

import math

import pytest

from retrieval.core.errors import ConfigError
from retrieval.model.network import ModelConfig, build_network
from retrieval.training.config import TrainConfig
from retrieval.training.engine import freeze_stages, make_optimizer, set_epoch_lr


def _net():
    return build_network(ModelConfig(backbone="resnet18", weights="none", image_size=32, scales=[1.0]), seed=0)


def test_frozen_stages_are_left_out_of_the_optimizer():
    net = _net()
    names = net.backbone.layer_names()
    opt = make_optimizer(net, TrainConfig(lr=1e-3, p_lr_mult=10.0, weight_decay=1e-4, freeze_stages=2))
    frozen = {id(p) for n in names[:2] for p in net.backbone.stages[n].parameters()}
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    assert frozen and not frozen & in_opt
    assert all(not p.requires_grad for n in names[:2] for p in net.backbone.stages[n].parameters())
    backbone, pool = opt.param_groups
    assert (backbone["lr"], backbone["weight_decay"]) == (1e-3, 1e-4)
    assert pool["lr"] == pytest.approx(1e-2) and pool["weight_decay"] == 0.0
    assert [id(p) for p in pool["params"]] == [id(net.pool.p)]
    with pytest.raises(ConfigError, match="leaves nothing to train"):
        freeze_stages(_net(), len(names))


def test_the_learning_rate_decays_exponentially_from_epoch_1():
    net = _net()
    cfg = TrainConfig(lr=1e-3, p_lr_mult=2.0, lr_decay=0.5)
    opt = make_optimizer(net, cfg)
    assert set_epoch_lr(opt, cfg, 1) == pytest.approx(1e-3)
    assert set_epoch_lr(opt, cfg, 3) == pytest.approx(1e-3 * math.exp(-1.0))
    assert opt.param_groups[1]["lr"] == pytest.approx(2e-3 * math.exp(-1.0))
    assert set_epoch_lr(opt, cfg, 0) == pytest.approx(1e-3)


def _extraction_warnings(tmp_path, model_size: int, image_side: int) -> list:
    """What :meth:`Engine.check_extraction` logs for 4 images of ``image_side`` px and a model
    describing at ``model_size``."""
    from types import SimpleNamespace

    import numpy as np
    from PIL import Image

    from retrieval.training.engine import Engine

    paths = []
    for i in range(4):
        p = tmp_path / f"{model_size}_{image_side}_{i}.png"
        Image.fromarray(np.zeros((image_side * 3 // 4, image_side, 3), np.uint8)).save(p)
        paths.append(p)
    lines: list = []
    run = SimpleNamespace(extraction={"image_size": model_size, "scales": [1.0]}, log=lines.append)
    Engine.check_extraction(run, paths)
    return lines


def test_large_images_warn_only_below_the_default_models_size(tmp_path):
    """Issue 27 item 11: "set model.image_size (the default model's is 320)" was shown when it was
    already set to 320. At the default size or above nothing is said; below it, the warning says
    to raise it, naming the value it has."""
    assert _extraction_warnings(tmp_path, 320, 1200) == []
    assert _extraction_warnings(tmp_path, 400, 1200) == []
    lines = _extraction_warnings(tmp_path, 96, 400)
    assert len(lines) == 1 and lines[0].startswith("warning: the training images are about 400 px but best.pt "
                                                   "will describe them at 96 px (model.image_size: 96)")
    assert "raise model.image_size to the default model's 320 (scales [1, 0.7071, 0.5])" in lines[0]
    assert _extraction_warnings(tmp_path, 96, 150) == []  # not 2× larger
