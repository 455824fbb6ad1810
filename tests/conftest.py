"""Shared test fixtures: tiny models, runners for the tools (in-process and as a subprocess), small image folders."""
from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import List

import numpy as np
import pytest
from PIL import Image

from retrieval.core.cli import main_wrapper

REPO = Path(__file__).resolve().parents[1]

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
