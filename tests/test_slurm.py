"""Slurm for real: ``srun`` on a Slurm node of this machine, against one process.

* the ranks of ``srun -n 2`` come from ``SLURM_PROCID`` / ``SLURM_NTASKS`` / ``SLURM_LOCALID``;
* ``srun -n 2 tools/extract.py`` writes the shards of both ranks (shard k to rank k mod 2), resumes
  after its ranks stop, and its descriptors equal one process's (paths equal, 1e-5);
* ``srun -n 2 tools/index.py --descriptors`` (gloo rendezvous from MASTER_ADDR/MASTER_PORT) builds an
  index with the same top-k as one built by one process;
* a DDP training step under ``srun -n 2`` (rendezvous defaulting to the launch node) equals one
  process with the whole batch (tests/test_training_distributed.py's check, srun in place of torchrun).

Skipped unless ``srun`` and ``sinfo`` are on PATH and a node named like this machine is idle or
mixed (the test's files live in its temporary folder). A one-node cluster on this machine:
``sudo bash tools/slurm/local_cluster.sh`` (see docs/scale.md). CI runs no daemons: it skips.
"""
from __future__ import annotations

import functools
import json
import os
import shutil
import socket
import subprocess
import sys
from typing import Dict, List, Optional

import numpy as np
import pytest
import test_training_distributed
from conftest import REPO, fake_shards, random_images, shards_of, unit_rows

from retrieval.core.ranks import Ranks
from retrieval.search.build import build_index_from_shards
from retrieval.search.index import ImageIndex
from retrieval.search.sharded_extract import STOP_AFTER_ENV

pytestmark = pytest.mark.slow

NODE = socket.gethostname().split(".")[0]
HINT = "a one-node cluster: sudo bash tools/slurm/local_cluster.sh"


@functools.lru_cache(maxsize=None)
def slurm_unavailable() -> Optional[str]:
    """Why the tests cannot run here, or ``None``."""
    for tool in ("srun", "sinfo"):
        if shutil.which(tool) is None:
            return f"{tool} not on PATH ({HINT})"
    try:
        proc = subprocess.run(["sinfo", "-h", "-N", "-o", "%n %T"], capture_output=True, text=True, timeout=5)
    except subprocess.TimeoutExpired:
        return f"sinfo did not answer within 5 s ({HINT})"
    if proc.returncode != 0:
        return f"sinfo failed: {proc.stderr.strip()[:200]} ({HINT})"
    states = dict(line.split()[:2] for line in proc.stdout.splitlines() if len(line.split()) >= 2)
    if NODE not in states:
        return f"no Slurm node named {NODE} (this machine; the test's files are local): {states or 'no nodes'}"
    if states[NODE] not in ("idle", "mixed"):  # "idle*": not responding, "allocated": busy, "drained", ...
        return f"Slurm node {NODE} is {states[NODE]}, not idle or mixed ({HINT})"
    return None


@pytest.fixture(scope="module", autouse=True)
def slurm_node():
    reason = slurm_unavailable()
    if reason:
        pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def srun(*args, n: int = 2, env_extra=None, timeout: int = 180) -> subprocess.CompletedProcess:
    """``srun -N1 -n N -w <this node> --label python ARGS`` from the repository, one thread per task,
    with no torchrun variables (the ranks must come from Slurm's). Skips if the node has no room
    within 30 s. ``--label`` prefixes each line with its task ("1: ..."): srun interleaves the tasks'
    output, even inside a JSON document, so :func:`by_task` separates them."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests")]), OMP_NUM_THREADS="1",
               GEMSEG_THREADS="1", PYTHONUNBUFFERED="1")
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", STOP_AFTER_ENV):
        env.pop(k, None)
    env.update(env_extra or {})
    cmd = ["srun", "-N1", f"-n{n}", f"-w{NODE}", "--immediate=30", "--label", "-Jgemseg-test", sys.executable, *map(str, args)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    if "Unable to allocate resources" in proc.stderr:
        pytest.skip(f"Slurm node {NODE} had no room for {n} tasks: {proc.stderr.strip()[-200:]}")
    return proc


def by_task(stdout: str) -> Dict[int, str]:
    """What each task of a ``srun --label`` printed."""
    out: Dict[int, str] = {}
    for line in stdout.splitlines():
        task, _, text = line.partition(": ")
        out[int(task)] = out.get(int(task), "") + text + "\n"
    return out


def reports(stdout: str) -> List[dict]:
    """The JSON report each task printed, in task order."""
    return [json.loads(text) for _, text in sorted(by_task(stdout).items())]


@pytest.fixture
def no_launcher(monkeypatch):
    """This process is rank 0 of 1, even when pytest itself runs inside a Slurm job."""
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"):
        monkeypatch.delenv(k, raising=False)


def test_srun_ranks_come_from_slurm():
    code = "from retrieval.core.ranks import current_ranks; r = current_ranks(); print(r.rank, r.world, r.local_rank, r.launcher)"
    proc = srun("-c", code)
    assert proc.returncode == 0, proc.stderr[-2000:]
    ranks = {task: Ranks(int(a), int(b), int(c), d) for task, (a, b, c, d) in
             ((t, text.split()) for t, text in by_task(proc.stdout).items())}
    assert ranks == {0: Ranks(0, 2, 0, "slurm"), 1: Ranks(1, 2, 1, "slurm")}  # task t is rank t


def test_srun_two_tasks_extract_like_one_process_and_resume(tmp_path, tiny_config, run_tool, no_launcher):
    imgs = tmp_path / "imgs"
    random_images(imgs / "a", 10, size=(40, 56))
    random_images(imgs / "b", 10, size=(56, 40), seed=1)
    (imgs / "b" / "broken.jpg").write_bytes(b"not an image")  # 21 listed, 20 described
    one = tmp_path / "one"
    assert run_tool("extract", "--images", imgs, "--out", one, "--config", tiny_config, "--shard-size", "4",
                    "--quiet").returncode == 0
    ref_paths, ref_X = shards_of(one)
    assert len(ref_paths) == 20

    # both ranks stop after their first shard (exit 75, as if killed): rank 0 wrote shard 0, rank 1 shard 1
    two = tmp_path / "two"
    args = ["tools/extract.py", "--images", imgs, "--out", two, "--config", tiny_config, "--shard-size", "4", "--json"]
    proc = srun(*args, env_extra={STOP_AFTER_ENV: "1"})
    assert proc.returncode == 75, (proc.returncode, proc.stderr[-2000:])
    done = sorted(p.name for p in (two / "shards").iterdir() if not p.name.startswith("."))
    assert done == ["000000", "000001"], done
    mtimes = {k: (two / "shards" / k / "descriptors.npy").stat().st_mtime_ns for k in done}

    # the same command again resumes: each rank skips its done shard and writes its other two
    proc = srun(*args)
    assert proc.returncode == 0, proc.stderr[-2000:]
    reps = reports(proc.stdout)
    assert [(r["rank"], r["world"]) for r in reps] == [(0, 2), (1, 2)]
    assert [(r["shards_skipped"], r["shards_written"]) for r in reps] == [(1, 2), (1, 2)]
    assert sum(r["images"] for r in reps) == 20 - 4 - 4 and sum(r["skipped_files"] for r in reps) == 1
    assert all(r["listed"] == 21 and r["shards"] == 6 for r in reps) and any(r["complete"] for r in reps)
    assert {k: (two / "shards" / k / "descriptors.npy").stat().st_mtime_ns for k in done} == mtimes  # not redone
    manifest = json.loads((two / "manifest.json").read_text())
    assert manifest["images"] == 21 and manifest["shards"] == 6 and manifest["shard_size"] == 4
    assert manifest["fingerprint"] == json.loads((one / "manifest.json").read_text())["fingerprint"]
    paths, X = shards_of(two)
    assert paths == ref_paths
    np.testing.assert_allclose(X, ref_X, atol=1e-5)


def test_index_built_under_srun_has_the_top_k_of_one_process(tmp_path, no_launcher):
    X, Q = unit_rows(2000, 16), unit_rows(20, 16, 1)
    fake_shards(tmp_path / "desc", X, 300)  # 7 shards: rank 0 adds 0, 2, 4, 6; rank 1 adds 1, 3, 5
    build_index_from_shards(tmp_path / "desc", tmp_path / "one", factory="IVF8,Flat", on_disk=True, progress=False)
    proc = srun("tools/index.py", "--descriptors", tmp_path / "desc", "--out", tmp_path / "two", "--factory", "IVF8,Flat",
                "--on-disk", "--json", env_extra={"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [(r["rank"], r["world"]) for r in reports(proc.stdout)] == [(0, 2), (1, 2)]
    assert not list(tmp_path.glob(".two.build*"))  # the work folder is gone
    a, b = ImageIndex.load(tmp_path / "one"), ImageIndex.load(tmp_path / "two")
    assert len(b) == 2000 and b.paths == a.paths
    for kw in ({}, {"rerank": False}, {"nprobe": 8}):
        sa, ia = a.search(Q, 10, **kw)
        sb, ib = b.search(Q, 10, **kw)
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_allclose(sa, sb, atol=1e-6)


def test_ddp_step_under_srun_equals_one_process(tmp_path, monkeypatch, no_launcher):
    """tests/test_training_distributed.py's DDP check with ``srun -n 2`` in place of torchrun: no MASTER_ADDR
    (the ranks meet on SLURM_LAUNCH_NODE_IPADDR), a free MASTER_PORT so parallel runs cannot collide."""
    def srun_as_torchrun(*args, nproc=2, timeout=240):
        return srun(*args, n=nproc, env_extra={"MASTER_PORT": str(free_port())}, timeout=timeout)

    monkeypatch.setattr(test_training_distributed, "torchrun", srun_as_torchrun)
    test_training_distributed.test_ddp_step_equals_one_process_with_the_whole_batch(tmp_path)
