"""The README's examples run as written: every ```python block, and every command of its ```bash
blocks that can run offline, in a scratch folder holding the files they name (photos, a query,
ground-truth masks). Commands that cannot run here are listed in SKIP with the reason; the
tools run in-process (``run_tool``), exactly as their ``__main__`` blocks do."""
from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import time
from pathlib import Path
from typing import List

import numpy as np
import pytest
from conftest import REPO, run_tool
from PIL import Image

from retrieval.loading import load_model
from retrieval.model.checkpoint import save_checkpoint

README = (REPO / "README.md").read_text()

#: README commands not run here, and why. Training runs for minutes on a CPU (tests/test_train.py and
#: tests/test_unsupervised.py train the same tools on tiny configs); `make` builds a virtual env.
SKIP = {
    "make demo": "creates .venv and installs gemseg (tests/test_end_to_end.py runs the demo)",
    "make test": "runs this test suite",
    "gemseg train": "minutes of training on a CPU; runs/mine/best.pt is stood in for by the default model",
    "tools/train_gem.py": "the same training under torchrun",
    "pip install": "installs the package (make test has installed it)",
    "--move-to": "moves the sandbox's photos (tests/test_tools_dedup.py moves and undoes on a planted collection)",
}

#: ``gemseg <command>`` → the ``tools/<tool>.py`` that runs the same command module.
TOOL_OF = {"train": "train_gem"}


def blocks(lang: str) -> List[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def commands() -> List[str]:
    out = []
    for block in blocks("bash"):
        for line in block.splitlines():
            line = re.split(r"\s#", line, maxsplit=1)[0].strip()
            if line:
                out.append(line)
    return out


def _photo(path: Path, seed: int, size=(96, 128)) -> None:
    """A small photo-like image: a textured object on a plain background."""
    rng = np.random.default_rng(seed)
    a = np.full((*size, 3), rng.integers(150, 230), np.uint8)
    obj = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    a[24:72, 32:96] = np.asarray(Image.fromarray(obj).resize((64, 48), Image.BILINEAR))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path, quality=95)


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory) -> Path:
    """A folder with the files the README names: ~/photos, ~/more_photos, q.jpg, query.jpg,
    photos/ (one set) with gt/ masks, configs/ (the repository's), runs/mine/best.pt."""
    root = tmp_path_factory.mktemp("readme")
    for i in range(4):
        _photo(root / "home" / "photos" / f"p{i}.jpg", i)
        _photo(root / "photos" / f"p{i}.jpg", i)
        m = np.zeros((96, 128), np.uint8)
        m[24:72, 32:96] = 255
        (root / "gt").mkdir(exist_ok=True)
        Image.fromarray(m).save(root / "gt" / f"p{i}.png")
    for i in range(2):
        _photo(root / "home" / "more_photos" / f"m{i}.jpg", 10 + i)
    _photo(root / "q.jpg", 1)
    _photo(root / "query.jpg", 2)
    (root / "configs").symlink_to(REPO / "configs")
    save_checkpoint(load_model(), root / "runs" / "mine" / "best.pt")
    return root


def test_readme_lists_commands_and_a_python_block():
    cmds = commands()
    assert any(c.startswith("gemseg coseg") and "--save-concepts" in c and "--joint" in c for c in cmds)
    assert "--joint" in README and len(blocks("python")) >= 1


@pytest.mark.slow
def test_every_readme_command_runs(sandbox):
    ran = 0
    for cmd in commands():
        if any(key in cmd for key in SKIP):
            continue
        argv = shlex.split(cmd)
        assert argv[0] == "gemseg", cmd  # the README's examples use the installed command
        args = [a.replace("~/", f"{sandbox / 'home'}/") for a in argv[2:]]
        t0 = time.perf_counter()
        proc = run_tool(TOOL_OF.get(argv[1], argv[1]), *args, cwd=sandbox)
        print(f"{time.perf_counter() - t0:6.1f}s  {cmd}")
        assert proc.returncode == 0, (cmd, proc.stderr[-2000:])
        ran += 1
    assert ran >= 10
    assert (sandbox / "index" / "meta.json").is_file() and (sandbox / "hits.html").is_file()
    assert (sandbox / "index_masked" / "meta.json").is_file() and (sandbox / "coseg_out" / "index.html").is_file()


@pytest.mark.slow
def test_every_readme_python_block_runs(sandbox):
    old = os.getcwd()
    os.chdir(sandbox)
    try:
        for code in blocks("python"):
            out = io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
                exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
            lines = out.getvalue().splitlines()
            assert len(lines) == 5 and lines[0].startswith("1 "), out.getvalue()  # the top 5 hits
    finally:
        os.chdir(old)
