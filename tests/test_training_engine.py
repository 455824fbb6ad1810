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
