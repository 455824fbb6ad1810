"""retrieval.jobs: the one place where a tool's arguments become its job.

``tools/train_gem.py``, ``tools/coseg.py`` and ``tools/demo.py`` (their commands,
:mod:`retrieval.commands.train`, ``coseg`` and ``demo``) call :func:`~retrieval.jobs.run_train`,
:func:`~retrieval.jobs.run_coseg` and :func:`~retrieval.jobs.run_demo` and nothing else of the library
but printing helpers; what they print in-process (``conftest.run_tool``) equals what the library path
they ran before gives (the drivers, ``cosegment.cosegment``, ``retrieval.demo.demo`` called directly)."""
from __future__ import annotations

import ast
import importlib
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, TINY_UNSUP_YAML, assert_one_line_error, run_tool
from PIL import Image

import retrieval
from cosegment.config import load_coseg_config
from cosegment.pipeline import cosegment
from retrieval import jobs
from retrieval.commands.main import job_of
from retrieval.core.config import from_dict
from retrieval.core.errors import ConfigError
from retrieval.demo import demo
from retrieval.jobs import run_train
from retrieval.loading import load_model
from retrieval.model.network import build_network
from retrieval.settings import load_settings
from retrieval.toy.coseg_sets import make_coseg_sets
from retrieval.training.config import TrainConfig, UnsupervisedConfig
from retrieval.training.results import TrainResult
from retrieval.training.supervised import load_training_pairs, train
from retrieval.training.unsupervised import load_unlabeled_data, train_unsupervised

QUIET = dict(progress=False, log=lambda s: None)
#: each tool, its command, its jobs function, and the library modules its command module may import
#: besides retrieval.core.cli (printing helpers); none imports retrieval.jobs (loaded once parsed)
TOOLS = {"train_gem": ("train", "run_train", set()), "coseg": ("coseg", "run_coseg", set()),
         "demo": ("demo", "run_demo", {"retrieval.evaluation.metrics"})}
SUP_YAML = """\
model: {{backbone: resnet18, weights: none, image_size: 32, scales: [1.0]}}
train: {{data: {data}, epochs: 1, qsize: 4, nnum: 1, batch: 2, workers: 0, val_fraction: 0.25, whitening: none,
         whiten_pairs: 40}}
"""
UNSUP_YAML = SUP_YAML.replace("epochs: 1, ", "") + \
    "unsupervised: {{periods: 2, epochs_per_period: 1, final_clusters: 4, ks: 3, exclude_knn: 1}}\n"


def timeless(doc):
    """``doc`` (JSON-like) with every time in seconds replaced by 0, NaN by the string 'nan'."""
    if isinstance(doc, dict):
        return {k: 0 if ("seconds" in k or k in ("loading", "backbone", "factorisation", "writing", "model", "total"))
                and isinstance(v, float) else timeless(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [timeless(v) for v in doc]
    return "nan" if isinstance(doc, float) and math.isnan(doc) else doc


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread (tiny images; the tools would take every core), restored afterwards;
    ``GEMSEG_THREADS=1`` for tools/coseg.py, which sets the threads itself."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GEMSEG_THREADS", "1")
        yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def classes(tmp_path_factory) -> Path:
    """4 classes × 4 views of a coarse pattern (32 px), and one unreadable file."""
    root = tmp_path_factory.mktemp("classes")
    rng = np.random.default_rng(0)
    for c in range(4):
        (root / f"class{c}").mkdir()
        base = rng.integers(0, 255, (4, 4, 3))
        for i in range(4):
            img = np.clip(base + rng.integers(-40, 40, (4, 4, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).resize((32, 32), Image.BILINEAR).save(root / f"class{c}" / f"{i}.jpg")
    (root / "class0" / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return root


# ----------------------------------------------------------------------------------------------
# The tools call one jobs function
# ----------------------------------------------------------------------------------------------
def _project_imports(path: Path) -> set:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module
            and n.module.split(".")[0] in ("retrieval", "cosegment")}


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_the_tool_calls_its_jobs_function_and_nothing_else(tool):
    command, job, extra = TOOLS[tool]
    module = importlib.import_module(f"retrieval.commands.{command}")
    assert module.JOB == f"retrieval.jobs:{job}" and job_of(module.JOB) is getattr(jobs, job)
    assert _project_imports(REPO / "tools" / f"{tool}.py") == {"retrieval.commands.main", "retrieval.core.cli"}
    assert _project_imports(Path(module.__file__)) - {"retrieval.core.cli"} == extra


def test_retrieval_train_is_run_train():
    assert retrieval.train is jobs.run_train is jobs.train


def test_train_tool_prints_on_rank_0_only(monkeypatch, tmp_path):
    """Under several processes every rank gets a result; the tool prints rank 0's alone."""
    seen = []

    def fake(config, **kw):
        seen.append((config, kw["out"], kw["epochs"], kw["progress"]))
        return TrainResult(tmp_path, [], 0, 0.5, tmp_path / "best.pt", tmp_path / "last.pt", rank=len(seen) - 1)

    monkeypatch.setattr(jobs, "run_train", fake)
    first = run_tool("train_gem", "--config", "c.yaml", "--out", tmp_path, "--epochs", "3", "--json")
    assert first.returncode == 0 and json.loads(first.stdout)["best_epoch"] == 0
    second = run_tool("train_gem", "--config", "c.yaml", "--out", tmp_path, "--epochs", "3", "--json")
    assert second.returncode == 0 and second.stdout == ""
    assert seen == [("c.yaml", str(tmp_path), 3, False)] * 2


# ----------------------------------------------------------------------------------------------
# run_train: what the training drivers give when called directly
# ----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_train_tool_json_is_the_supervised_driver_s(classes, tmp_path):
    cfg_path = tmp_path / "sup.yaml"
    cfg_path.write_text(SUP_YAML.format(data=classes))
    proc = run_tool("train_gem", "--config", cfg_path, "--out", tmp_path / "tool", "--json")
    assert proc.returncode == 0, proc.stderr
    settings = load_settings(cfg_path)  # the library path tools/train_gem.py took before retrieval.jobs
    cfg = from_dict(TrainConfig, settings.raw["train"], "train")
    tr, val, skipped = load_training_pairs(cfg, log=lambda s: None)
    direct = train(build_network(settings.model, seed=cfg.seed), tr, cfg, tmp_path / "direct", val=val,
                   skipped=skipped, **QUIET).to_json()
    doc = json.loads(proc.stdout)
    assert list(doc) == ["out_dir", "best_epoch", "best_map", "best_path", "last_path", "whitening", "whitening_map",
                         "extraction", "selection", "skipped", "history"]
    assert [h["epoch"] for h in doc["history"]] == [0, 1] and doc["skipped"][0]["path"].endswith("bad.jpg")
    doc = json.loads(json.dumps(doc).replace(str(tmp_path / "tool"), "RUN"))
    direct = json.loads(json.dumps(direct).replace(str(tmp_path / "direct"), "RUN"))
    assert timeless(doc) == timeless(direct)
    assert "train: " in proc.stderr and "epoch   1/1  loss " in proc.stderr  # with --json the log goes to stderr


@pytest.mark.slow
def test_train_tool_json_is_the_unsupervised_driver_s(classes, tmp_path):
    cfg_path = tmp_path / "uns.yaml"
    cfg_path.write_text(UNSUP_YAML.format(data=classes))
    proc = run_tool("train_gem", "--config", cfg_path, "--out", tmp_path / "tool", "--json")
    assert proc.returncode == 0, proc.stderr
    settings = load_settings(cfg_path)
    cfg = from_dict(TrainConfig, settings.raw["train"], "train")
    ucfg = from_dict(UnsupervisedConfig, settings.raw["unsupervised"], "unsupervised")
    paths, truth, val = load_unlabeled_data(cfg, ucfg, log=lambda s: None)
    direct = train_unsupervised(build_network(settings.model, seed=cfg.seed), paths, cfg, ucfg, tmp_path / "direct",
                                val=val, truth=truth, **QUIET).to_json()
    doc = json.loads(proc.stdout)
    assert list(doc) == ["out_dir", "best_period", "best_map", "best_path", "last_path", "whitening",
                         "whitening_map", "extraction", "selection", "clusters", "history"]
    assert [h["period"] for h in doc["history"]] == [0, 1, 2] and doc["clusters"] == 4
    doc = json.loads(json.dumps(doc).replace(str(tmp_path / "tool"), "RUN"))
    direct = json.loads(json.dumps(direct).replace(str(tmp_path / "direct"), "RUN"))
    assert timeless(doc) == timeless(direct)


def test_unsupervised_training_is_refused_under_torchrun(tmp_path, monkeypatch):
    cfg = tmp_path / "u.yaml"
    cfg.write_text("model: {backbone: resnet18, weights: none}\ntrain: {data: x}\nunsupervised: {periods: 1}\n")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="unsupervised training runs in one process"):
        run_train(cfg, out=tmp_path / "r", progress=False, log=lambda m: None)
    assert_one_line_error(run_tool("train_gem", "--config", cfg, "--out", tmp_path / "r"), "one process", "torchrun")
    assert not (tmp_path / "r").exists()


def test_resume_and_epochs_do_not_apply_to_unsupervised_training(tmp_path):
    cfg = tmp_path / "u.yaml"
    cfg.write_text(TINY_UNSUP_YAML.format(data=tmp_path / "none"))
    for kw in ({"resume": True}, {"epochs": 2}):
        with pytest.raises(ConfigError, match="unsupervised.periods"):
            run_train(cfg, out=tmp_path / "r", progress=False, log=lambda m: None, **kw)
    assert not (tmp_path / "r").exists()


# ----------------------------------------------------------------------------------------------
# run_coseg: what cosegment.cosegment gives when called directly
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def coseg_set(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cosegset")
    make_coseg_sets(root, n_sets=1, images_per_set=4, image_size=64, n_parts=2, seed=2)
    return root


@pytest.mark.slow
def test_coseg_tool_json_is_cosegment_s(coseg_set, tmp_path, tiny_config):
    args = ["--images", coseg_set / "images", "--k", "2", "--image-size", "96", "--masks", coseg_set / "masks",
            "--object-factor", "0", "--config", tiny_config]
    proc = run_tool("coseg", *args, "--out", tmp_path / "tool", "--json")
    assert proc.returncode == 0, proc.stderr
    cfg = load_coseg_config(tiny_config, k=2, image_size=96, object_factors=[0])  # tools/coseg.py's path before
    direct = cosegment(coseg_set / "images", backbone=load_model(tiny_config).backbone, config=cfg,
                       masks=coseg_set / "masks", out=tmp_path / "direct")
    doc = json.loads(proc.stdout.replace(str(tmp_path / "tool"), "OUT"))
    want = json.loads(json.dumps(direct.as_dict()).replace(str(tmp_path / "direct"), "OUT"))
    assert timeless(doc) == timeless(want) and doc["sets"][0]["object_factors"] == [0]
    assert doc["timings"]["model"] > 0  # run_coseg times the model loading
    text = run_tool("coseg", *args, "--out", tmp_path / "text", "--quiet")
    assert text.returncode == 0 and text.stderr == ""
    lines = [re.sub(r"\d+\.\d+s", "T", ln) for ln in text.stdout.splitlines()]
    assert lines == [re.sub(r"\d+\.\d+s", "T", ln).replace(str(tmp_path / "direct"), str(tmp_path / "text"))
                     for ln in direct.text_lines()]


def test_coseg_errors_are_one_line(coseg_set, tmp_path):
    assert_one_line_error(run_tool("coseg", "--images", tmp_path / "nope", "--k", "2"), "--images", "no such folder")
    (tmp_path / "file.jpg").write_bytes(b"")
    assert_one_line_error(run_tool("coseg", "--images", tmp_path / "file.jpg"), "--images", "not a folder")
    assert_one_line_error(run_tool("coseg", "--images", coseg_set / "images", "--object-factor", "x"),
                          "--object-factor", "got 'x'")


def test_run_coseg_writes_nothing_without_out(coseg_set, tmp_path, tiny_config, monkeypatch):
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    report = jobs.run_coseg(coseg_set / "images", config=tiny_config, k=2, image_size=96, out=None)
    assert report.sets[0]["images"] == 4 and report.model_seconds > 0 and list((tmp_path / "cwd").iterdir()) == []


# ----------------------------------------------------------------------------------------------
# run_demo: what retrieval.demo.demo gives when called directly
# ----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_demo_tool_json_is_the_demo_s(tmp_path, tiny_config):
    out = tmp_path / "demo"
    proc = run_tool("demo", "--out", out, "--objects", "2", "--source", "synthetic", "--top", "3",
                    "--config", tiny_config, "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    res = demo(load_model(tiny_config), out, n_objects=2, source="synthetic", top=3, progress=False)
    assert doc["report"] == res.report and doc["results"] == res.results
    assert (doc["html"], doc["png"]) == (str(out / "hits.html"), str(out / "hits.png"))
    assert len(doc["results"]) == 2 and all(len(r["hits"]) == 3 for r in doc["results"])
    text = run_tool("demo", "--out", out, "--objects", "2", "--source", "synthetic", "--config", tiny_config,
                    "--quiet").stdout
    assert text.startswith("demo collection: 2 queries, ") and f"wrote {out / 'hits.html'}" in text


def test_demo_checks_the_device_and_the_model_before_writing(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {backbone: resnet18, scale: [1.0]}\n")
    assert_one_line_error(run_tool("demo", "--out", tmp_path / "d1", "--config", bad), "scale", "scales")
    assert_one_line_error(run_tool("demo", "--out", tmp_path / "d2", "--device", "gpu"), "unknown device")
    assert not (tmp_path / "d1").exists() and not (tmp_path / "d2").exists()


@pytest.mark.slow
def test_run_demo_takes_a_network(tmp_path, tiny_config):
    net = build_network(load_settings(tiny_config).model)
    res = jobs.run_demo(tmp_path / "d", net=net, n_objects=2, views=3, distractors=2, source="synthetic",
                        progress=False)
    assert len(res.results) == 2 and res.html.is_file() and res.png.is_file()
    assert set(res.report) == {"easy", "medium", "hard"}
