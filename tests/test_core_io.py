"""retrieval.core.io: atomic writes (files, folders, torch files, CSV) that leave what a user had
intact, with the permissions a plain open() would give; safe reads with one-line errors."""
from __future__ import annotations

import os

import pytest
import torch
from conftest import run_tool

from retrieval.core.errors import DataError, WeightsError
from retrieval.core.io import (
    atomic_dir,
    atomic_path,
    read_json,
    torch_load,
    torch_save_atomic,
    write_csv_atomic,
)


@pytest.fixture
def umask():
    def set_mask(m: int) -> None:
        os.umask(m)

    old = os.umask(0o022)
    yield set_mask
    os.umask(old)


@pytest.mark.slow
@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_atomic_writes_get_a_plain_open_mode(tmp_path, umask, tiny_index):
    for mask in (0o022, 0o027):
        umask(mask)
        with atomic_path(tmp_path / f"f{mask:o}.txt") as tmp:
            tmp.write_text("x")
        with atomic_dir(tmp_path / f"d{mask:o}") as tmp:
            (tmp / "a").write_text("x")
        assert (tmp_path / f"f{mask:o}.txt").stat().st_mode & 0o777 == 0o666 & ~mask
        assert (tmp_path / f"d{mask:o}").stat().st_mode & 0o777 == 0o777 & ~mask
    existing = tmp_path / "private.txt"
    existing.write_text("old")
    existing.chmod(0o600)
    with atomic_path(existing) as tmp:  # replacing a file keeps its mode, as open() does
        tmp.write_text("new")
    assert existing.stat().st_mode & 0o777 == 0o600
    umask(0o022)
    _, photos, cfg = tiny_index
    out = tmp_path / "ix"
    assert run_tool("index", "--images", photos, "--config", cfg, "--out", out, "--quiet").returncode == 0
    assert out.stat().st_mode & 0o777 == 0o755
    modes = {p.name: p.stat().st_mode & 0o777 for p in out.iterdir()}
    assert {"descriptors.npy", "meta.json", "paths.sqlite"} <= set(modes) and set(modes.values()) == {0o644}, modes


def test_an_interrupted_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise KeyboardInterrupt
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "d") as tmp:
            (tmp / "x").write_text("x")
            raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_torch_csv_and_json_round_trips_and_one_line_errors(tmp_path):
    torch_save_atomic({"w": torch.arange(3)}, tmp_path / "m.pt")
    assert torch.equal(torch_load(tmp_path / "m.pt", "checkpoint", WeightsError)["w"], torch.arange(3))
    write_csv_atomic(tmp_path / "log.csv", ["epoch", "loss"], [(0, 0.5), (1, 0.25)])
    assert (tmp_path / "log.csv").read_text().splitlines() == ["epoch,loss", "0,0.5", "1,0.25"]
    (tmp_path / "m.json").write_text('{"a": 1}')
    assert read_json(tmp_path / "m.json", "meta") == {"a": 1}
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    for call in (lambda: torch_load(tmp_path / "junk.pt", "checkpoint", WeightsError),
                 lambda: torch_load(tmp_path / "missing.pt", "checkpoint", WeightsError)):
        with pytest.raises(WeightsError) as e:
            call()
        assert "\n" not in str(e.value) and "checkpoint" in str(e.value)
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(DataError):
        read_json(tmp_path / "bad.json", "meta")
