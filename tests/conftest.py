"""Shared test fixtures and helpers: tiny models, runners for the tools (in-process, as a subprocess,
under torchrun), small image folders and indexes, descriptor shards, training class folders.

Fixtures that build something expensive (an index, a network with real weights) are session-scoped
and read-only, so the test files of several modules share one copy."""
from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path
from types import ModuleType
from typing import Dict, List, Optional, Sequence

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from retrieval.core.cli import main_wrapper
from retrieval.core.feature_extractor import Backbone
from retrieval.jobs import run_index
from retrieval.loading import load_model
from retrieval.model.network import ModelConfig, build_network
from retrieval.search.index import ImageIndex
from retrieval.search.shards import ShardDir

REPO = Path(__file__).resolve().parents[1]

if os.environ.get("PYTEST_XDIST_WORKER"):  # `make test` runs one worker per core: one torch thread each
    torch.set_num_threads(1)

TINY_CONFIG = """\
model:
  backbone: resnet18
  weights: none
  image_size: 64
  scales: [1.0]
extract:
  batch_size: 4
  workers: 0
"""


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture
def tiny_config(tmp_path: Path) -> Path:
    """A YAML config for a fast random-init ResNet-18 at 64 px, single scale."""
    p = tmp_path / "tiny.yaml"
    p.write_text(TINY_CONFIG)
    return p


def _tool_module(tool: str) -> ModuleType:
    """``tools/<tool>.py`` imported as a module (once per test session)."""
    name = f"gemseg_tool_{tool}"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{tool}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[name] = module
    return sys.modules[name]


def run_tool(tool: str, *args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """Run ``tools/<tool>.py`` in this process, exactly as its ``__main__`` block does
    (``main_wrapper(main)``: one-line errors, exit codes); returns a CompletedProcess with the exit
    code and what it printed on stdout and stderr. A subprocess adds nothing but start-up time here;
    :func:`run_tool_process` runs a real one where that matters."""
    module = _tool_module(tool)
    out, err = io.StringIO(), io.StringIO()
    old = os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main_wrapper(module.main, [str(a) for a in args])
                code = 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        os.chdir(old)
    return subprocess.CompletedProcess([tool, *map(str, args)], code, out.getvalue(), err.getvalue())


def run_tool_process(tool: str, *args: str, cwd: Path = REPO, timeout: int = 240) -> subprocess.CompletedProcess:
    """Run ``tools/<tool>.py`` as a subprocess; returns the CompletedProcess (text mode)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", GEMSEG_THREADS="2")
    env.pop("GEMSEG_DEBUG", None)
    return subprocess.run([sys.executable, str(REPO / "tools" / f"{tool}.py"), *map(str, args)],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(name="run_tool")
def run_tool_fixture():
    return run_tool


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    """Exit code 2, no traceback, a single 'error: ...' line on stderr containing ``needles``."""
    err = proc.stderr.strip()
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for n in needles:
        assert n.lower() in lines[0].lower(), (n, lines[0])


def random_images(folder: Path, n: int, size=(48, 64), seed: int = 0) -> List[Path]:
    """Write ``n`` smooth random RGB JPEGs (h, w = size) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        small = rng.integers(0, 256, (size[0] // 8, size[1] // 8, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((size[1], size[0]), Image.BILINEAR)
        p = folder / f"img{i:03d}.jpg"
        img.save(p, quality=95)
        paths.append(p)
    return paths


def read_array(path) -> np.ndarray:
    """The pixels of the image file at ``path`` as a numpy array (a copy; the file is closed)."""
    with Image.open(path) as im:
        return np.asarray(im).copy()


def unit_rows(n: int, d: int, seed: int = 0) -> np.ndarray:
    """(n, d) float32 rows of unit L2 norm, Gaussian directions."""
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def torchrun(*args: str, n: int = 2, env_extra: Optional[Dict[str, str]] = None,
             timeout: int = 240) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run --standalone --nproc_per_node N ARGS`` in the repository, with
    the worktree (and tests/, for tests/ddp_worker.py) on PYTHONPATH and one thread per rank."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests")]), OMP_NUM_THREADS="1",
               GEMSEG_THREADS="1", PYTHONUNBUFFERED="1", **(env_extra or {}))
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}", *map(str, args)]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


# ------------------------------------------------------------------------------------------------
# descriptor shards and indexes made of generated rows
# ------------------------------------------------------------------------------------------------
def shards_of(folder: Path):
    """(paths, descriptors) of a descriptor folder, in shard order."""
    sd = ShardDir(folder)
    shards = list(sd.iter_shards())
    return [p for s in shards for p in s.paths], np.concatenate([np.asarray(s.descriptors) for s in shards])


def fake_shards(folder: Path, X: np.ndarray, shard_size: int):
    """A descriptor folder (a ShardDir) holding ``X`` as if extracted (paths /img/<i>.jpg)."""
    sd = ShardDir(folder)
    sd.open_for({"backbone": "x"}, "fp", X.shape[1], shard_size, "generated")
    for k, a in enumerate(range(0, len(X), shard_size)):
        b = min(len(X), a + shard_size)
        sd.write_shard(k, X[a:b], [f"/img/{i}.jpg" for i in range(a, b)], np.zeros((b - a, 2), np.int64), [])
    sd.write_manifest(dict(sd.manifest(), images=len(X), shards=k + 1))
    return sd


def grown_index(folder, factory, X, removed):
    """An index of X in three additions (so three segments for a faiss factory), ``removed`` ids
    flagged removed."""
    n = len(X)
    idx = ImageIndex(X.shape[1], factory, fingerprint="fp")
    for a, b in ((0, n // 2), (n // 2, 3 * n // 4), (3 * n // 4, n)):
        idx.add(X[a:b], [f"/p/{i}.jpg" for i in range(a, b)], [(i, i) for i in range(a, b)])
        idx.save(folder)
        idx = ImageIndex.load(folder)
    idx.remove(removed)
    idx.save(folder)
    return ImageIndex.load(folder)


# ------------------------------------------------------------------------------------------------
# image folders, networks and indexes shared by several test files (read-only)
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def photos(tmp_path_factory) -> Path:
    """Two sub-folders of small random photos (4 + 3, two shapes) and one file that is not an image."""
    d = tmp_path_factory.mktemp("photos")
    random_images(d / "a", 4, size=(40, 56))
    random_images(d / "b", 3, size=(56, 40), seed=1)
    (d / "b" / "broken.jpg").write_bytes(b"not an image")
    return d


@pytest.fixture(scope="session")
def eight_images(tmp_path_factory) -> List[Path]:
    """8 smooth random 48×64 JPEGs (seed 3), alone in their folder."""
    d = tmp_path_factory.mktemp("cr")
    return random_images(d, 8, size=(48, 64), seed=3)


@pytest.fixture(scope="session")
def tiny_index(tmp_path_factory):
    """(index folder, image folder, tiny config) with 6 random images indexed by a random ResNet-18."""
    root = tmp_path_factory.mktemp("tiny_index")
    cfg = root / "tiny.yaml"
    cfg.write_text(TINY_CONFIG)
    random_images(root / "photos", 6, size=(48, 64))
    proc = run_tool("index", "--images", root / "photos", "--config", cfg, "--out", root / "ix", "--quiet")
    assert proc.returncode == 0, proc.stderr
    return root / "ix", root / "photos", cfg


@pytest.fixture(scope="session")
def query_collection(tmp_path_factory):
    """A Flat and an IVF index (random-init ResNet-18 at 64 px) over the same 14 images, and a query."""
    root = tmp_path_factory.mktemp("query")
    (root / "tiny.yaml").write_text(TINY_CONFIG)
    paths = random_images(root / "images", 14, size=(48, 64), seed=5)
    query = random_images(root / "q", 1, size=(48, 64), seed=9)[0]
    run_index(root / "images", root / "flat", config=root / "tiny.yaml", progress=False)
    run_index(root / "images", root / "ivf", config=root / "tiny.yaml", factory="IVF2,Flat", progress=False)
    return {"root": root, "paths": paths, "query": query}


@pytest.fixture(scope="session")
def small_net():
    """A random-init ResNet-18 descriptor network at 64 px, one scale (shared: a test that changes it,
    e.g. attaches concepts, puts it back)."""
    return build_network(ModelConfig(backbone="resnet18", weights="none", image_size=64, scales=[1.0]))


@pytest.fixture(scope="session")
def lite_backbone():
    """The default model's backbone (EfficientNet-Lite0 with its shipped ImageNet weights)."""
    return load_model().backbone


@pytest.fixture
def no_cuda(monkeypatch):
    """A machine without a CUDA device, whatever this one has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def toy_backbone(name: str):
    """A two-stage toy CNN (conv1 → conv2, 16 channels, stride 4) as a :class:`Backbone` named ``name``."""
    stages = OrderedDict(
        conv1=nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU()),
        conv2=nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU()),
    )
    return Backbone(name, stages, out_channels=16, stride=4, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


def coseg_photos(folder: Path, names: Sequence[str], size=(64, 80)) -> None:
    """Grey images (h, w = size) each with one flat coloured rectangle, saved under ``names``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for n in names:
        a = np.full((*size, 3), 200, np.uint8)
        a[16:48, 20:60] = rng.integers(0, 120, 3)
        fmt = "PNG" if n.lower().endswith(".png") else "JPEG"
        Image.fromarray(a).save(folder / n, format=fmt)


def fifty_hits(tmp_path: Path):
    """One query's 50 hits over 12 random photos (each photo several times, hit 6 a missing file)."""
    photos = random_images(tmp_path / "photos", 12, size=(60, 80))
    hits = [{"rank": i + 1, "path": str(photos[i % 12].resolve()), "score": 1 - i / 100} for i in range(50)]
    hits[5]["path"] = str(tmp_path / "photos" / "gone.jpg")
    return [{"query": str(photos[0]), "hits": hits}]


# ------------------------------------------------------------------------------------------------
# class folders and configs for training
# ------------------------------------------------------------------------------------------------
#: a one-epoch supervised run of a random ResNet-18 at 32 px on the class folders ``{data}``
TINY_TRAIN_YAML = """\
model: {{backbone: resnet18, weights: none, image_size: 32, scales: [1.0]}}
train: {{data: {data}, epochs: 1, qsize: 2, nnum: 1, batch: 2, workers: 0, val_fraction: 0.0, whitening: false}}
"""

#: two cluster–train periods of a random ResNet-18 at 32 px on the images under ``{data}``
TINY_UNSUP_YAML = """\
model: {{backbone: resnet18, weights: none, image_size: 32, scales: [1.0]}}
train: {{data: {data}, qsize: 6, nnum: 1, batch: 3, workers: 0, mine_batch: 32, val_fraction: 0.25,
         whiten_pairs: 40}}
unsupervised: {{periods: 2, epochs_per_period: 1, final_clusters: 4, ks: 3, exclude_knn: 1}}
"""


def class_folders(root: Path, sizes, corrupt: bool = False) -> Path:
    """``root/class<c>/<i>.jpg``: ``sizes[c]`` random 32 px images per class (and ``class0/bad.jpg``, a
    truncated JPEG, when ``corrupt``)."""
    rng = np.random.default_rng(0)
    for c, k in enumerate(sizes):
        d = root / f"class{c}"
        d.mkdir(parents=True)
        for i in range(k):
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(d / f"{i}.jpg")
    if corrupt:
        (root / "class0" / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return root


def pattern_classes(root: Path, n_classes: int = 4, per_class: int = 3, seed: int = 0) -> Path:
    """``root/class<c>/<i>.jpg``: views of a class share a coarse 4×4 pattern; two image shapes
    (32×32 and 24×32), so batches are padded."""
    rng = np.random.default_rng(seed)
    for c in range(n_classes):
        d = root / f"class{c}"
        d.mkdir(parents=True)
        base = rng.integers(0, 255, (4, 4, 3))
        for i in range(per_class):  # views of a class share a coarse pattern
            img = np.clip(base + rng.integers(-40, 40, (4, 4, 3)), 0, 255).astype(np.uint8)
            h, w = (32, 32) if (c + i) % 2 else (24, 32)  # two shapes: padded batches
            Image.fromarray(img).resize((w, h), Image.BILINEAR).save(d / f"{i}.jpg")
    return root


def low_rank_activations(n: int = 120, C: int = 16, r: int = 4, seed: int = 0) -> np.ndarray:
    """(n, C) float32 ≥ 0: a rank-``r`` non-negative product shifted down and clipped at 0 (like CNN
    activations), the input of the factorisers."""
    rng = np.random.default_rng(seed)
    return np.maximum(rng.random((n, r)) @ rng.random((r, C)) - 0.3, 0).astype(np.float32)
