"""tools/extract.py: sharded, resumable extraction in one process and under torchrun (a killed run
resumes; two ranks equal one process); skipped files listed; another model refused."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_one_line_error, shards_of, torchrun

from retrieval.core.image_listing import list_images
from retrieval.search.sharded_extract import STOP_AFTER_ENV


@pytest.mark.slow
def test_extract_lists_skipped_files_resumes_and_refuses_another_model(photos, tmp_path, tiny_config, run_tool):
    one = tmp_path / "one"
    proc = run_tool("extract", "--images", photos, "--out", one, "--config", tiny_config, "--shard-size", "3", "--json")
    assert proc.returncode == 0, proc.stderr
    rep = json.loads(proc.stdout)
    assert rep["listed"] == 8 and rep["shards"] == 3 and rep["shards_written"] == 3 and rep["complete"]
    assert rep["images"] == 7 and rep["skipped_files"] == 1
    paths, X = shards_of(one)
    assert paths == [str(p) for p in list_images(photos) if p.name != "broken.jpg"] and X.shape[0] == 7
    skipped = json.loads((one / "shards" / "000001" / "skipped.json").read_text())  # a/ 4 images, then b/broken
    assert [Path(s["path"]).name for s in skipped] == ["broken.jpg"]

    # a re-run recomputes nothing; another model is refused
    proc = run_tool("extract", "--images", photos, "--out", one, "--config", tiny_config, "--shard-size", "3", "--json")
    assert json.loads(proc.stdout)["shards_written"] == 0 and json.loads(proc.stdout)["shards_skipped"] == 3
    other = tmp_path / "other.yaml"
    other.write_text(tiny_config.read_text().replace("image_size: 64", "image_size: 48"))
    assert_one_line_error(run_tool("extract", "--images", photos, "--out", one, "--config", other), "another model")
    assert_one_line_error(run_tool("extract", "--images", photos, "--out", one, "--config", tiny_config,
                                   "--shard-size", "4"), "shard-size 3")


@pytest.mark.slow
def test_two_ranks_under_torchrun_equal_one_process_and_a_killed_run_resumes(photos, tmp_path, tiny_config, run_tool):
    one = tmp_path / "one"
    assert run_tool("extract", "--images", photos, "--out", one, "--config", tiny_config, "--shard-size", "2",
                    "--quiet").returncode == 0
    ref_paths, ref_X = shards_of(one)

    # two ranks; each rank is killed after its first shard
    two = tmp_path / "two"
    args = ["tools/extract.py", "--images", photos, "--out", two, "--config", tiny_config, "--shard-size", "2", "--json"]
    proc = torchrun(*args, env_extra={STOP_AFTER_ENV: "1"})
    assert proc.returncode != 0
    done = sorted(p.name for p in (two / "shards").iterdir() if not p.name.startswith("."))
    # each rank stops after its first shard (rank 0: shard 0, rank 1: shard 1); when one rank stops
    # first, torchrun may end the other before its shard is complete, so one or both are there
    assert done and set(done) <= {"000000", "000001"}, done
    mtimes = {k: (two / "shards" / k / "descriptors.npy").stat().st_mtime_ns for k in done}

    proc = torchrun(*args)
    assert proc.returncode == 0, proc.stderr[-2000:]
    reports = [json.loads(x) for x in proc.stdout.replace("}\n{", "}\x00{").split("\x00")]
    assert sorted(r["rank"] for r in reports) == [0, 1]
    assert sum(r["shards_skipped"] for r in reports) == len(done)
    assert sum(r["shards_written"] for r in reports) == 4 - len(done)
    assert {k: (two / "shards" / k / "descriptors.npy").stat().st_mtime_ns for k in done} == mtimes  # not redone
    paths, X = shards_of(two)
    assert paths == ref_paths
    np.testing.assert_allclose(X, ref_X, atol=1e-5)
