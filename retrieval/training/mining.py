"""Training tuples (query, positive, n hard negatives), re-mined with the current network.

Each epoch (Radenović et al., TPAMI 2018): draw ``qsize`` matching pairs and a pool of ``poolsize``
images, describe the queries and the pool with the current network (eval mode, batched, one pass
over their union), and for each query take the ``nnum`` pool images most similar to it that are not
of its cluster, at most one per cluster (the images of one cluster may match each other, so a
second image of an already-chosen cluster adds little and a same-cluster image may be a positive).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import numpy as np
import torch

from retrieval.core.errors import DataError
from retrieval.search.extract import extract_descriptors
from retrieval.training.distributed import DistContext, extract_in_parts
from retrieval.training.pairs import PairSet

#: Candidates looked at per query before falling back to the full ranking.
_TOPK_FACTOR = 8


@dataclass
class Tuples:
    """One epoch's training tuples, indexing ``PairSet.paths``.

    Attributes:
        qidx: ``(T,)`` int64 query images.
        pidx: ``(T,)`` int64 their positives.
        nidx: ``(T, n)`` int64 hard negatives, hardest first (``n`` may be below the requested
            ``nnum`` when the pool holds fewer other clusters).
        avg_neg_distance: mean L2 distance query–negative (a training-progress statistic).
        extract_seconds: time spent describing queries and pool.
        seconds: total mining time.
        failures: ``(path, reason)`` of images that could not be read (their tuples are dropped).
    """

    qidx: np.ndarray
    pidx: np.ndarray
    nidx: np.ndarray
    avg_neg_distance: float = float("nan")
    extract_seconds: float = 0.0
    seconds: float = 0.0
    failures: Optional[list] = None

    def __len__(self) -> int:
        return int(self.qidx.size)

    @property
    def size(self) -> int:
        """Images per tuple: 2 + n."""
        return 2 + int(self.nidx.shape[1])

    def images(self) -> np.ndarray:
        """``(T, 2 + n)`` int64: each tuple's images in the order q, p, n1..nn."""
        return np.concatenate([self.qidx[:, None], self.pidx[:, None], self.nidx], axis=1)


def hardest_negatives(
    scores: torch.Tensor, query_labels: np.ndarray, pool_labels: np.ndarray, nnum: int
) -> np.ndarray:
    """Pick each query's hardest negatives, one per cluster, none of its own cluster.

    Args:
        scores: ``(Q, P)`` float similarities of each query to each pool image (higher = closer).
        query_labels: ``(Q,)`` int cluster of each query.
        pool_labels: ``(P,)`` int cluster of each pool image.
        nnum: negatives per query.

    Returns:
        ``(Q, nnum)`` int64 positions in the pool, most similar first. Every query must have at
        least ``nnum`` other clusters in the pool (see :func:`mine_tuples`).
    """
    Q, P = scores.shape
    out = np.empty((Q, nnum), dtype=np.int64)
    if nnum == 0:
        return out
    k = min(P, max(_TOPK_FACTOR * nnum, 32))
    top = torch.topk(scores, k, dim=1).indices.cpu().numpy()
    for q in range(Q):
        chosen = _pick(top[q], int(query_labels[q]), pool_labels, nnum)
        if chosen is None:  # not enough distinct clusters among the top k: use the full ranking
            full = torch.argsort(scores[q], descending=True).cpu().numpy()
            chosen = _pick(full, int(query_labels[q]), pool_labels, nnum)
            if chosen is None:
                raise DataError("the negative pool holds too few clusters for the requested nnum")
        out[q] = chosen
    return out


def _pick(ranked: np.ndarray, qlab: int, pool_labels: np.ndarray, nnum: int) -> Optional[list]:
    used = {qlab}
    chosen = []
    for j in ranked.tolist():
        lab = int(pool_labels[j])
        if lab in used:
            continue
        used.add(lab)
        chosen.append(j)
        if len(chosen) == nnum:
            return chosen
    return None


def mine_tuples(
    net: torch.nn.Module,
    pairs: PairSet,
    *,
    nnum: int = 5,
    qsize: int = 2000,
    poolsize: int = 20000,
    image_size: Optional[int] = None,
    batch_size: int = 16,
    workers: Optional[int] = None,
    device: Optional[Union[str, torch.device]] = None,
    seed: int = 0,
    progress: bool = True,
    dist: Optional[DistContext] = None,
) -> Tuples:
    """Draw ``qsize`` pairs and a pool of ``poolsize`` images, and mine ``nnum`` hard negatives each.

    Args:
        net: a :class:`~retrieval.model.network.DescriptorNet` (described in eval mode, single scale,
            at ``image_size`` or its config's).
        pairs: the training pairs; ``qsize``/``poolsize`` are capped by its size.
        nnum: negatives per tuple (reduced to the number of other clusters the pool can offer).
        seed: the draw of pairs and pool.
        dist: under distributed training, every rank draws the same pairs and pool (same seed),
            describes its part of them, and receives the rest
            (:func:`~retrieval.training.distributed.extract_in_parts`): every rank mines the same
            tuples from the whole pool.

    Returns:
        :class:`Tuples`; tuples whose query or positive could not be read are dropped.
    """
    t0 = time.perf_counter()
    if pairs.n_pairs == 0:
        raise DataError("no matching pairs to train on")
    rng = np.random.default_rng(seed)
    sel = rng.permutation(pairs.n_pairs)[: min(qsize, pairs.n_pairs)]
    qidx, pidx = pairs.qidx[sel], pairs.pidx[sel]
    if nnum <= 0:
        return Tuples(qidx, pidx, np.empty((len(qidx), 0), np.int64), seconds=time.perf_counter() - t0)
    pool = np.sort(rng.permutation(pairs.n_images)[: min(poolsize, pairs.n_images)])
    n_pool_clusters = np.unique(pairs.labels[pool]).size
    n_eff = min(nnum, n_pool_clusters - 1)
    if n_eff < 1:
        raise DataError("the negative pool holds a single cluster: no negatives to mine")

    need = np.union1d(pool, qidx)
    describe = dict(image_size=image_size, scales=[1.0], batch_size=batch_size, workers=workers, device=device,
                    progress=progress, desc="mine")
    if dist is not None and dist.parallel:
        ex = extract_in_parts(net, [pairs.paths[i] for i in need], dist, **describe)
    else:
        ex = extract_descriptors(net, [pairs.paths[i] for i in need], **describe)
    row_of = {p: r for r, p in enumerate(ex.paths)}
    row = np.array([row_of.get(str(pairs.paths[i]), -1) for i in need], dtype=np.int64)
    pos = {int(i): int(r) for i, r in zip(need, row)}

    qrow = np.array([pos[int(i)] for i in qidx], dtype=np.int64)
    good = qrow >= 0
    if not good.all():
        qidx, pidx, qrow = qidx[good], pidx[good], qrow[good]
    prow = np.array([pos[int(i)] for i in pool], dtype=np.int64)
    pool, prow = pool[prow >= 0], prow[prow >= 0]
    pool_labels = pairs.labels[pool]
    n_eff = min(n_eff, np.unique(pool_labels).size - 1)
    if len(qidx) == 0 or n_eff < 1:
        raise DataError("no usable training tuples: too many images could not be read")

    dev = next(net.parameters()).device
    X = torch.from_numpy(ex.descriptors).to(dev)
    Qv, Pv = X[torch.from_numpy(qrow).to(dev)], X[torch.from_numpy(prow).to(dev)]
    nidx = np.empty((len(qidx), n_eff), dtype=np.int64)
    dist_sum, chunk = 0.0, 1024
    for s in range(0, len(qidx), chunk):
        sc = Qv[s:s + chunk] @ Pv.T
        picked = hardest_negatives(sc, pairs.labels[qidx[s:s + chunk]], pool_labels, n_eff)
        nidx[s:s + chunk] = pool[picked]
        d = (Qv[s:s + chunk, None, :] - Pv[torch.from_numpy(picked).to(dev)]).norm(dim=-1)
        dist_sum += float(d.sum())
    return Tuples(qidx, pidx, nidx, avg_neg_distance=dist_sum / nidx.size, extract_seconds=ex.seconds,
                  seconds=time.perf_counter() - t0, failures=list(ex.failures))


def random_tuples(pairs: PairSet, nnum: int, qsize: int, seed: int = 0) -> Tuples:
    """Tuples with random negatives (other clusters, one per cluster): no network needed.

    Useful as a baseline and for tests. Returns :class:`Tuples` like :func:`mine_tuples`.
    """
    rng = np.random.default_rng(seed)
    sel = rng.permutation(pairs.n_pairs)[: min(qsize, pairs.n_pairs)]
    qidx, pidx = pairs.qidx[sel], pairs.pidx[sel]
    n_eff = min(nnum, pairs.n_classes - 1)
    scores = torch.from_numpy(rng.random((len(qidx), pairs.n_images)))
    nidx = hardest_negatives(scores, pairs.labels[qidx], pairs.labels, n_eff)
    return Tuples(qidx, pidx, nidx)


def tuple_labels(pairs: PairSet, tuples: Tuples) -> np.ndarray:
    """``(T, 2 + n)`` int64 cluster of each tuple member (for checks)."""
    return pairs.labels[tuples.images()]


__all__: Sequence[str] = ("Tuples", "hardest_negatives", "mine_tuples", "random_tuples", "tuple_labels")
