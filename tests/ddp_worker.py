"""One distributed training epoch, for tests/test_training_distributed.py (run by torchrun, not collected by pytest).

  python -m torch.distributed.run --standalone --nproc_per_node 2 tests/ddp_worker.py DATA OUT BATCH

Every rank builds the same network, mines the epoch's tuples with the engine (pool described in parts
and all-gathered) and trains one epoch on its part of them; each rank writes ``OUT/rank<r>.pt``
(tuples, loss, tuples used, weights).
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
from test_training_distributed import plain_sgd, step_config, step_network

from retrieval.training.distributed import distributed_session
from retrieval.training.engine import Engine
from retrieval.training.mining import mine_tuples
from retrieval.training.pairs import pairs_from_folders
from retrieval.training.supervised import LOG_FIELDS


def main(data: str, out: str, batch: int) -> None:
    torch.set_num_threads(1)
    cfg = step_config(batch)
    pairs = pairs_from_folders(data)
    with distributed_session("cpu") as dist:
        net = step_network()
        run = Engine(net, cfg, Path(out) / "run", fields=LOG_FIELDS, total=1, progress=False, log=lambda s: None)
        plain_sgd(run)
        assert run.dist.world_size == dist.world_size == 2 and run.model is not None

        def mine(seed: int):
            return mine_tuples(net, pairs, nnum=cfg.nnum, qsize=cfg.qsize, poolsize=cfg.poolsize, seed=seed,
                               progress=False, dist=run.dist, **run.common)

        ep = run.train_epoch(1, pairs, mine)
        torch.save({"tuples": ep.tuples.images(), "loss": ep.loss, "used": ep.used,
                    "state_dict": net.state_dict()}, Path(out) / f"rank{dist.rank}.pt")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
