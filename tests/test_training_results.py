"""retrieval.training.results: one row type and one result type for both training drivers, with
each driver's log columns, log lines, history records and ``--json`` keys as they were."""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import random_images

from retrieval.model.checkpoint import read_checkpoint
from retrieval.model.network import ModelConfig, build_network
from retrieval.training.config import TrainConfig, UnsupervisedConfig
from retrieval.training.pairs import pairs_from_folders
from retrieval.training.results import COLUMNS, StepStats, TrainResult
from retrieval.training.supervised import LOG_FIELDS as EPOCH_FIELDS
from retrieval.training.supervised import train
from retrieval.training.unsupervised import LOG_FIELDS as PERIOD_FIELDS
from retrieval.training.unsupervised import load_unlabeled, train_unsupervised

QUIET = dict(progress=False, log=lambda s: None)
#: the history records (``dataclasses.asdict``) of the two row classes this type replaces, in order
EPOCH_RECORD = {"epoch": 2, "loss": 0.25, "val_map": 0.5, "val_map_pca": 0.625, "val_map_lw": math.nan, "p": 3.0,
                "lr": 1e-6, "avg_neg_distance": 0.75, "tuples": 8, "mine_seconds": 1.0, "train_seconds": 2.0,
                "seconds": 3.5}
PERIOD_RECORD = {"period": 1, "clusters": 10, "target": 8, "paired_images": 12, "pairs": 40, "nmi": 0.5, "ari": 0.25,
                 "acc": 0.75, "nmi_final": 0.625, "loss": 0.125, "val_map": 0.5, "val_map_pca": math.nan,
                 "val_map_lw": math.nan, "p": 2.5, "lr": 1e-5, "cluster_seconds": 0.5, "train_seconds": 1.0,
                 "seconds": 2.0}


def same(a: dict, b: dict) -> bool:
    """Equal keys in equal order and equal values, NaN equal to NaN."""
    return list(a) == list(b) and all(x == y or (x != x and y != y) for x, y in zip(a.values(), b.values()))


def test_rows_have_their_driver_s_columns_and_read_old_records_back():
    assert COLUMNS["epoch"] == EPOCH_FIELDS and COLUMNS["period"] == PERIOD_FIELDS
    assert same(StepStats(**EPOCH_RECORD).to_dict(), EPOCH_RECORD)  # a checkpoint's history resumes
    assert same(StepStats(**PERIOD_RECORD).to_dict(), PERIOD_RECORD)
    e, p = StepStats(epoch=0), StepStats(period=0)
    assert (e.unit, e.step, p.unit, p.step) == ("epoch", 0, "period", 0)
    # what the old rows defaulted to when a step did not measure a column
    assert same(e.to_dict(), {"epoch": 0, "loss": math.nan, "val_map": math.nan, "val_map_pca": math.nan,
                              "val_map_lw": math.nan, "p": math.nan, "lr": math.nan, "avg_neg_distance": math.nan,
                              "tuples": 0, "mine_seconds": 0.0, "train_seconds": 0.0, "seconds": 0.0})
    assert same(p.to_dict(), {"period": 0, "clusters": 0, "target": 0, "paired_images": 0, "pairs": 0, "nmi": math.nan,
                              "ari": math.nan, "acc": math.nan, "nmi_final": math.nan, "loss": math.nan,
                              "val_map": math.nan, "val_map_pca": math.nan, "val_map_lw": math.nan, "p": math.nan,
                              "lr": math.nan, "cluster_seconds": 0.0, "train_seconds": 0.0, "seconds": 0.0})
    # the other driver's columns stay out (None), and a row is one driver's
    assert e.clusters is None and e.nmi is None and p.tuples is None and p.mine_seconds is None
    for bad in ({}, {"epoch": 1, "period": 1}):
        with pytest.raises(ValueError, match="one of epoch, period"):
            StepStats(**bad)


def test_log_lines_of_an_epoch_and_of_a_period():
    assert StepStats(**EPOCH_RECORD).line(5) == (
        "epoch   2/5  loss 0.2500  mAP  50.00 (PCA-w 62.50)  p 3.000  lr 1.00e-06  neg-d 0.750  3.5s")
    assert StepStats(epoch=0, val_map=0.5, p=3.0).line(5) == (
        "epoch   0/5  loss      -  mAP  50.00  p 3.000  lr nan  neg-d nan  0.0s")
    assert StepStats(**PERIOD_RECORD).line(3) == (
        "period  1/3  clusters    10 (target 8)  NMI  50.00  NMI@final  62.50  loss 0.1250  val mAP  50.00  "
        "p 2.500  2.0s")
    assert StepStats(period=0, clusters=9, target=9, p=3.0).line(3) == (
        "period  0/3  clusters     9 (target 9)  NMI      -  NMI@final      -  loss      -  val mAP      -  "
        "p 3.000  0.0s")


def test_result_json_keys_follow_the_unit():
    h = [StepStats(**EPOCH_RECORD)]
    sup = TrainResult(Path("r"), h, 2, 0.5, Path("r/best.pt"), Path("r/last.pt"), skipped=[("a.jpg", "bad")])
    assert list(sup.to_json()) == ["out_dir", "best_epoch", "best_map", "best_path", "last_path", "whitening",
                                   "whitening_map", "extraction", "selection", "skipped", "history"]
    assert sup.to_json()["skipped"] == [{"path": "a.jpg", "reason": "bad"}]
    assert (sup.best_epoch, sup.best_period) == (2, None)
    uns = TrainResult(Path("r"), [StepStats(**PERIOD_RECORD)], 1, 0.5, Path("r/best.pt"), Path("r/last.pt"),
                      unit="period", labels=np.array([0, 1, 1, 3]))
    doc = uns.to_json()
    assert list(doc) == ["out_dir", "best_period", "best_map", "best_path", "last_path", "whitening", "whitening_map",
                         "extraction", "selection", "clusters", "history"]
    assert doc["clusters"] == 3 and same(doc["history"][0], PERIOD_RECORD)
    assert (uns.best_epoch, uns.best_period) == (None, 1)
    assert uns.summary().startswith("best.pt = period 1 + no whitening, val mAP 50.00")


def _net():
    return build_network(ModelConfig(backbone="resnet18", weights="none", image_size=32, scales=[1.0]), seed=0)


@pytest.mark.slow
def test_both_drivers_return_the_one_result_type(tmp_path):
    """A one-epoch supervised run and a one-period unsupervised run on the same 12 images: both return
    :class:`TrainResult`, each with its unit, its rows' columns (in ``log.csv`` and the checkpoints'
    history too) and its own field (``skipped`` / ``labels``)."""
    for c in range(3):
        random_images(tmp_path / "data" / f"class{c}", 4, size=(32, 32), seed=c)
    torch.set_num_threads(1)
    cfg = TrainConfig(epochs=1, qsize=4, poolsize=8, nnum=1, batch=2, workers=0, mine_batch=8, val_fraction=0.0,
                      whitening="none", device="cpu")
    pairs = pairs_from_folders(tmp_path / "data")
    sup = train(_net(), pairs, cfg, tmp_path / "sup", val=pairs, skipped=[("x.jpg", "unreadable")], **QUIET)
    paths, truth = load_unlabeled(tmp_path / "data")
    ucfg = UnsupervisedConfig(periods=1, final_clusters=3, ks=3, exclude_knn=1)
    uns = train_unsupervised(_net(), paths, cfg, ucfg, tmp_path / "uns", truth=truth, val_on_train=True, **QUIET)

    assert type(sup) is type(uns) is TrainResult
    assert {f.name for f in dataclasses.fields(TrainResult)} == {
        "out_dir", "history", "best_step", "best_map", "best_path", "last_path", "unit", "whitening_map", "whitening",
        "extraction", "skipped", "labels", "rank", "selection"}
    assert (sup.unit, uns.unit, sup.rank, uns.rank) == ("epoch", "period", 0, 0)
    assert sup.best_epoch == sup.best_step in (0, 1) and uns.best_period == uns.best_step in (0, 1)
    assert sup.skipped == [("x.jpg", "unreadable")] and sup.labels is None
    assert uns.skipped is None and uns.labels.shape == (12,) and np.unique(uns.labels).size == 3
    for res, unit in ((sup, "epoch"), (uns, "period")):
        assert all(type(h) is StepStats and h.unit == unit for h in res.history)
        assert [h.step for h in res.history] == [0, 1]
        assert not math.isnan(res.best_map) and res.whitening == "none"
        header = (res.out_dir / "log.csv").read_text().splitlines()[0]
        assert header.split(",") == list(COLUMNS[unit])
        record = read_checkpoint(res.last_path)["extra"]["history"][-1]
        assert list(record) == list(COLUMNS[unit]) and same(record, res.history[-1].to_dict())
        assert all(same(j, h.to_dict()) for j, h in zip(res.to_json()["history"], res.history))
        assert f"best.pt = {unit} {res.best_step} + no whitening" in res.summary()
    assert "clusters" in uns.to_json() and "skipped" not in uns.to_json()
    assert "skipped" in sup.to_json() and "clusters" not in sup.to_json()
