"""retrieval.core.ranks: the one reader of the launcher's environment (torchrun, Slurm, a single
process, bad values), each rank's device, and where the ranks meet."""
from __future__ import annotations

import os

import pytest
import torch

from retrieval.core.errors import ConfigError, ResourceError
from retrieval.core.ranks import Ranks, current_ranks, rank_device, rendezvous_defaults


def test_ranks_from_torchrun_slurm_or_nothing():
    assert current_ranks({}) == Ranks() == Ranks(0, 1, 0, "single")
    assert not Ranks().parallel and Ranks().is_main
    assert current_ranks({"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == Ranks(1, 4, 1, "torchrun")
    assert current_ranks({"SLURM_PROCID": "3", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1"}) == Ranks(3, 8, 1, "slurm")
    assert current_ranks({"RANK": "1", "WORLD_SIZE": "2"}) == Ranks(1, 2, 0, "torchrun")  # no LOCAL_RANK: 0
    assert current_ranks({"SLURM_PROCID": "5", "SLURM_NTASKS": "8"}) == Ranks(5, 8, 0, "slurm")
    r = current_ranks({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert r.parallel and not r.is_main


def test_torchrun_wins_over_slurm_and_one_slurm_task_is_one_process():
    """torchrun inside a Slurm allocation: torchrun's variables are this process's ranks."""
    t = current_ranks({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "SLURM_PROCID": "0", "SLURM_NTASKS": "8"})
    assert t == Ranks(3, 4, 1, "torchrun")
    one = current_ranks({"SLURM_NTASKS": "1", "SLURM_PROCID": "0"})
    assert (one.rank, one.world, one.local_rank, one.parallel) == (0, 1, 0, False)
    # half a launcher's variables are no launch
    assert current_ranks({"RANK": "1"}) == current_ranks({"SLURM_PROCID": "2"}) == Ranks()


def test_current_ranks_reads_the_environment(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"):
        monkeypatch.delenv(k, raising=False)
    assert current_ranks() == Ranks()
    monkeypatch.setenv("SLURM_PROCID", "1")
    monkeypatch.setenv("SLURM_NTASKS", "2")
    monkeypatch.setenv("SLURM_LOCALID", "1")
    assert current_ranks() == Ranks(1, 2, 1, "slurm")


@pytest.mark.parametrize("env, message", [
    ({"RANK": "2", "WORLD_SIZE": "2"}, "rank 2 is outside a world of 2 processes (torchrun)"),
    ({"RANK": "-1", "WORLD_SIZE": "2"}, "rank -1 is outside a world of 2"),
    ({"SLURM_PROCID": "4", "SLURM_NTASKS": "4"}, "rank 4 is outside a world of 4 processes (slurm)"),
    ({"RANK": "a", "WORLD_SIZE": "2"}, "RANK='a' is not an integer"),
    ({"RANK": "0", "WORLD_SIZE": "two"}, "WORLD_SIZE='two' is not an integer"),
    ({"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": ""}, "LOCAL_RANK='' is not an integer"),
    ({"SLURM_PROCID": "0", "SLURM_NTASKS": "2", "SLURM_LOCALID": "x"}, "SLURM_LOCALID='x' is not an integer"),
])
def test_bad_values_are_one_line_config_errors(env, message):
    with pytest.raises(ConfigError) as e:
        current_ranks(env)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_rank_device_gives_each_rank_its_local_gpu(monkeypatch):
    one, two = Ranks(), Ranks(1, 2, 1, "torchrun")
    for dev in (None, "cpu", "cuda", "cuda:1"):
        assert rank_device(dev, one) == dev  # one process: what was asked
    assert rank_device("cpu", two) == "cpu" and rank_device("cuda:0", two) == "cuda:0"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert rank_device("cuda", two) == rank_device(None, two) == "cuda:1"
    assert rank_device(None, Ranks(0, 4, 0, "slurm")) == "cuda:0"
    with pytest.raises(ResourceError, match="local rank 2 has no GPU: this node has 2; start at most"):
        rank_device("cuda", Ranks(2, 4, 2, "torchrun"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert rank_device(None, two) is None  # no GPU: the CPU default is kept


def test_ranks_meet_where_the_launcher_says(monkeypatch):
    for k in ("MASTER_ADDR", "MASTER_PORT", "SLURM_LAUNCH_NODE_IPADDR"):
        monkeypatch.delenv(k, raising=False)
    with pytest.raises(ConfigError, match="without MASTER_ADDR/MASTER_PORT"):
        rendezvous_defaults(Ranks(1, 2, 0, "torchrun"))
    monkeypatch.setenv("SLURM_LAUNCH_NODE_IPADDR", "10.1.2.3")
    rendezvous_defaults(Ranks(1, 2, 0, "slurm"))  # srun: the launch node, port 29500
    assert (os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"]) == ("10.1.2.3", "29500")
    monkeypatch.setenv("MASTER_ADDR", "node7")
    monkeypatch.setenv("MASTER_PORT", "1234")
    rendezvous_defaults(Ranks(1, 2, 0, "slurm"))  # what the sbatch script exported wins
    assert (os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"]) == ("node7", "1234")
