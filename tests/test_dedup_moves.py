"""retrieval.dedup.moves: move + undo restores every file bit for bit; a killed move loses nothing
(a real process killed half way, then resumed or undone)."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from retrieval.core.errors import DataError
from retrieval.dedup.moves import PAUSE_ENV, move_files, plan_moves, resume, undo

REPO = Path(__file__).resolve().parents[1]


def _tree(root: Path, n: int = 12) -> dict:
    files = {}
    for k in range(n):
        p = root / ("sub" if k % 2 else "") / f"IMG_{k % 3:04d}_{k}.jpg"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(os.urandom(1000 + 37 * k))
        files[str(p.resolve())] = hashlib.sha256(p.read_bytes()).hexdigest()
    return files


def _state(files: dict) -> dict:
    return {p: hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in files if Path(p).exists()}


def test_move_then_undo_restores_everything_bit_for_bit(tmp_path):
    files = _tree(tmp_path / "photos")
    chosen = sorted(files)[:7]
    rep = move_files(chosen, tmp_path / "extras", root=tmp_path / "photos")
    assert rep.moved == 7 and rep.state == "moved"
    assert not any(Path(p).exists() for p in chosen)
    assert (tmp_path / "extras" / "sub").is_dir()  # the layout below the root is kept
    doc = json.loads(Path(rep.manifest).read_text())
    assert doc["state"] == "moved" and len(doc["moves"]) == 7
    back = undo(rep.manifest)
    assert back.moved == 7 and _state(files) == files
    assert json.loads(Path(rep.manifest).read_text())["state"] == "undone"


def test_nothing_moves_when_a_destination_is_taken(tmp_path):
    files = _tree(tmp_path / "photos", 4)
    chosen = sorted(files)[:2]
    (dst,) = [d for s, d in plan_moves(chosen[:1], tmp_path / "extras", root=tmp_path / "photos")]
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    Path(dst).write_bytes(b"someone else's file")
    with pytest.raises(DataError, match="already exists"):
        move_files(chosen, tmp_path / "extras", root=tmp_path / "photos")
    assert _state(files) == files


def test_a_bad_manifest_is_one_clear_error(tmp_path):
    with pytest.raises(DataError, match="not found"):
        undo(tmp_path / "none.json")
    (tmp_path / "m.json").write_text('{"a": 1}')
    with pytest.raises(DataError, match="not a manifest"):
        undo(tmp_path / "m.json")


_MOVER = """
import sys
from retrieval.dedup.moves import move_files
move_files(sys.argv[3:], sys.argv[1], root=sys.argv[2])
"""


def _killed_mover(tmp_path: Path, files: dict, chosen: list) -> Path:
    """Start a real move (a pause after each file), kill it once some files have moved; the manifest."""
    env = dict(os.environ, **{PAUSE_ENV: "0.3"}, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-c", _MOVER, str(tmp_path / "extras"), str(tmp_path / "photos"), *chosen],
                            env=env, cwd=REPO)
    deadline = time.time() + 60
    while time.time() < deadline and sum(not Path(p).exists() for p in chosen) < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    gone = sum(not Path(p).exists() for p in chosen)
    assert 3 <= gone < len(chosen), "the move was not caught half way"
    (manifest,) = (tmp_path / "extras").glob("dedup-moves-*.json")
    assert json.loads(manifest.read_text())["state"] == "moving"
    every = {**_state(files), **{m["dst"]: m["sha256"] for m in json.loads(manifest.read_text())["moves"]
                                 if Path(m["dst"]).exists()}}
    assert sorted(every.values()) == sorted(files.values())  # each file is somewhere, whole
    return manifest


@pytest.mark.slow
def test_a_killed_move_is_resumed(tmp_path):
    files = _tree(tmp_path / "photos")
    chosen = sorted(files)[:8]
    manifest = _killed_mover(tmp_path, files, chosen)
    rep = resume(manifest)
    assert rep.moved + rep.already == 8 and not any(Path(p).exists() for p in chosen)
    undo(manifest)
    assert _state(files) == files


@pytest.mark.slow
def test_a_killed_move_is_rolled_back(tmp_path):
    files = _tree(tmp_path / "photos")
    chosen = sorted(files)[:8]
    manifest = _killed_mover(tmp_path, files, chosen)
    undo(manifest)
    assert _state(files) == files
    with pytest.raises(DataError, match="undone"):
        resume(manifest)


@pytest.mark.slow
def test_a_new_move_finishes_an_interrupted_one_first(tmp_path):
    files = _tree(tmp_path / "photos")
    chosen = sorted(files)[:8]
    _killed_mover(tmp_path, files, chosen)
    rest = sorted(files)[8:10]
    move_files(rest, tmp_path / "extras", root=tmp_path / "photos")
    assert not any(Path(p).exists() for p in chosen + rest)
