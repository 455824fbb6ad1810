"""retrieval.training.distributed: the ranks' device and context, parts and rank batches that cover
everything once, and a real 2-rank DDP step (torchrun, gloo on CPU) against one process."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import pattern_classes, torchrun

from retrieval.core.errors import ConfigError, ResourceError
from retrieval.core.ranks import Ranks
from retrieval.model.network import ModelConfig, build_network
from retrieval.training.config import TrainConfig
from retrieval.training.distributed import DistContext, current, training_device
from retrieval.training.engine import Engine
from retrieval.training.epoch import RankBatches
from retrieval.training.mining import Tuples, mine_tuples
from retrieval.training.pairs import pairs_from_folders
from retrieval.training.supervised import LOG_FIELDS


def step_config(batch: int) -> TrainConfig:
    """The one-epoch run of :func:`test_ddp_step_equals_one_process_with_the_whole_batch`: 4 tuples
    (one optimizer step when ``batch`` × ranks = 4), 2 mined negatives, BatchNorm frozen, lr 1 (for
    :func:`plain_sgd`), no lr decay in epoch 1."""
    return TrainConfig(lr=1.0, qsize=4, poolsize=12, nnum=2, batch=batch, workers=0, mine_batch=4,
                       val_fraction=0.0, whitening=False, device="cpu", seed=3)


def plain_sgd(run: Engine, lr: float = 1.0) -> None:
    """Give ``run`` plain SGD: Adam's first step is ``lr · g / (|g| + 1e-8)``, which turns the float
    noise of a gradient near 1e-8 into a visible weight difference, while the claim tested is about
    the gradient (the optimizer runs on each rank alone, identically)."""
    params = [p for p in run.net.parameters() if p.requires_grad]
    run.optimizer = torch.optim.SGD([{"params": params, "lr": lr, "initial_lr": lr}])


def step_network():
    return build_network(ModelConfig(backbone="resnet18", weights="none", image_size=32, scales=[1.0]), seed=0)


# ----------------------------------------------------------------------------------------------
# Fast: no process group
# ----------------------------------------------------------------------------------------------
def test_training_device_is_the_local_rank_s(monkeypatch):
    """:func:`training_device`: the ranks' device of core.ranks as a torch.device, ``cuda:N`` refused
    under several processes (the ranks would share one GPU)."""
    two = Ranks(1, 2, 1, "torchrun")
    assert training_device("cpu", Ranks(3, 4, 3, "torchrun")) == torch.device("cpu")
    with pytest.raises(ConfigError, match="cuda:LOCAL_RANK"):
        training_device("cuda:1", two)
    if not torch.cuda.is_available():
        assert training_device(None, two) == training_device(None, Ranks()) == torch.device("cpu")
        with pytest.raises(ResourceError, match="no CUDA device"):
            training_device("cuda", two)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert training_device(None, two) == training_device("cuda", two) == torch.device("cuda", 1)
    with pytest.raises(ResourceError, match="local rank 2 has no GPU"):
        training_device("cuda", Ranks(2, 3, 2, "slurm"))


def test_dist_context_is_the_ranks_and_a_device():
    ctx = DistContext.of(Ranks(1, 3, 0, "slurm"), torch.device("cpu"))
    assert isinstance(ctx, Ranks) and (ctx.rank, ctx.world, ctx.world_size, ctx.local_rank) == (1, 3, 3, 0)
    assert ctx.parallel and not ctx.is_main and ctx.launcher == "slurm" and ctx.device == torch.device("cpu")
    assert not DistContext().parallel and DistContext().is_main


def test_parts_and_rank_batches_cover_everything_once():
    for n, world in ((10, 3), (2, 2), (7, 1), (0, 2)):
        parts = [DistContext(r, world).part(n) for r in range(world)]
        assert [i for p in parts for i in range(n)[p]] == list(range(n))
        assert max(len(range(n)[p]) for p in parts) - min(len(range(n)[p]) for p in parts) <= 1
    # 11 tuples, batch 2 per rank, 2 ranks: steps of 4, 4, 3; each step split 2+2 / 2+1, in the shuffled order
    per_rank = [list(RankBatches(11, 2, DistContext(r, 2), torch.Generator().manual_seed(5))) for r in range(2)]
    order = torch.randperm(11, generator=torch.Generator().manual_seed(5)).tolist()
    assert [a + b for a, b in zip(*per_rank)] == [order[0:4], order[4:8], order[8:11]]
    assert [len(b) for b in per_rank[1]] == [2, 2, 1]
    # a last step with fewer tuples than ranks is dropped on every rank (same number of steps)
    assert [len(RankBatches(9, 4, DistContext(r, 3), torch.Generator())) for r in range(3)] == [1, 1, 1]
    # one process: the helpers are the identity
    one = current("cpu")
    x = np.arange(6, dtype=np.float32).reshape(3, 2)
    assert not one.parallel and one.is_main and one.all_gather_rows(x) is x and one.all_sum([2, 3]) == [2.0, 3.0]


# ----------------------------------------------------------------------------------------------
# Real 2-rank runs (torchrun, gloo)
# ----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_ddp_step_equals_one_process_with_the_whole_batch(tmp_path):
    """2 ranks × 2 tuples = one process with 4 tuples: the same mined tuples on both ranks (pool
    described in parts and all-gathered) as in one process, the same mean loss, and the same weights
    after the optimizer step (1e-5; plain SGD, see :func:`plain_sgd`). BatchNorm is frozen (the paper's setting): with it training,
    each rank would normalise with its own batch's statistics and the step would differ."""
    data = pattern_classes(tmp_path / "data")
    proc = torchrun("tests/ddp_worker.py", data, tmp_path / "ddp", 2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / "ddp" / f"rank{r}.pt", weights_only=False) for r in (0, 1))

    torch.set_num_threads(1)
    cfg = step_config(4)
    pairs = pairs_from_folders(data)
    net = step_network()
    w0 = {k: v.clone() for k, v in net.state_dict().items()}
    run = Engine(net, cfg, tmp_path / "one", fields=LOG_FIELDS, total=1, progress=False, log=lambda s: None)
    assert run.model is None and not run.dist.parallel
    plain_sgd(run)
    ep = run.train_epoch(1, pairs, lambda seed: mine_tuples(net, pairs, nnum=2, qsize=4, poolsize=12, seed=seed,
                                                             progress=False, **run.common))
    assert np.array_equal(r0["tuples"], ep.tuples.images()) and np.array_equal(r1["tuples"], r0["tuples"])
    assert r0["used"] == r1["used"] == ep.used == 4
    assert abs(r0["loss"] - ep.loss) < 1e-5 and r0["loss"] == r1["loss"]
    one = net.state_dict()
    moved = 0
    for k, v in one.items():
        assert torch.allclose(r0["state_dict"][k], v, atol=1e-5, rtol=0), k
        assert torch.equal(r0["state_dict"][k], r1["state_dict"][k]), k  # the ranks stay in sync
        moved += int(v.numel() > 0 and float((v - w0[k]).abs().max()) > 1e-4)
    assert moved > 20  # the step changed the weights: the comparison is not vacuous
    # the comparison can fail: a step on half of the tuples (what one rank alone would take) is far off
    half = step_network()
    run_h = Engine(half, cfg, tmp_path / "half", fields=LOG_FIELDS, total=1, progress=False, log=lambda s: None)
    plain_sgd(run_h)
    t = ep.tuples
    run_h.train_epoch(1, pairs, lambda seed: Tuples(t.qidx[:2], t.pidx[:2], t.nidx[:2]))
    assert max(float((half.state_dict()[k] - v).abs().max()) for k, v in one.items() if v.numel()) > 1e-4
