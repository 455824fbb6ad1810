"""One evaluation run: describe an :class:`~retrieval.evaluation.datasets.EvalDataset` with a model,
rank the database for every query through the query path (:mod:`retrieval.search.query`: the same
description, search and re-ranking steps as ``tools/search.py`` and the server), and score with
the revisited protocol. The library call behind ``tools/evaluate.py``.

* Queries with a box are cropped to it (pixel coordinates rounded to the nearest integer and
  clipped to the image) and described; a query that is a whole database image (``query_db_ids``)
  uses its database descriptor, and α-QE skips its own copy (``Query.self_id``).
* Every database image must load: a failure is a one-line DataError (indices of the ground truth
  would shift otherwise).
* Ranking is exact by default (an in-memory ``Flat`` index over the descriptors), so scores
  measure the descriptors, not an index; an index folder given as ``cache`` saves the database
  extraction (it must come from the same model: fingerprints are compared, another model's index
  is refused) and, with ``search_cache``, is searched as it is (its factory, nprobe, exact
  re-ranking), as ``tools/search.py`` would search it; images it does not reach rank last.
* Re-ranking: DBA on the database (index-side), then the steps in order (``qe`` from ``qe_k``,
  ``coseg`` from ``coseg``, then ``steps``; :mod:`retrieval.search.rerank`), over the full ranking.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from retrieval.core.config import to_dict
from retrieval.core.errors import DataError
from retrieval.evaluation.datasets import EvalDataset
from retrieval.evaluation.metrics import revisited_eval
from retrieval.model.network import DescriptorNet
from retrieval.search.expansion import dba
from retrieval.search.extract import extract_descriptors
from retrieval.search.index import ImageIndex
from retrieval.search.query import Query, QueryPath, QueryResults, query_steps
from retrieval.search.rerank.coseg import CosegRerankOptions
from retrieval.search.rerank.registry import StepsLike
from retrieval.search.rerank.step import Reranker

PathLike = Union[str, Path]


def with_scales(net: DescriptorNet, scales: Optional[Sequence[float]]) -> DescriptorNet:
    """Set the network's extraction scales in its config (so its fingerprint says which were used)."""
    if scales is not None:
        net.config = dataclasses.replace(net.config, scales=[float(s) for s in scales])
    return net


def _require_all(wanted: Sequence[PathLike], got: Sequence[str],
                 failures: Sequence[Tuple[str, str]], what: str) -> None:
    if len(got) != len(wanted):
        p, reason = failures[0] if failures else (str(wanted[0]), "not described")
        raise DataError(f"{len(wanted) - len(got)} {what} image(s) could not be read "
                        f"(first: {p}: {reason}); evaluation needs every image")


def describe_database(net: DescriptorNet, ds: EvalDataset, *, cache: Optional[PathLike] = None,
                      batch_size: int = 8, workers: Optional[int] = None,
                      device: Optional[str] = None, progress: bool = False) -> Tuple[np.ndarray, bool]:
    """(N, D) float32 database descriptors, and whether they came from the ``cache`` index folder.

    With ``cache``: an index there built by this model (same fingerprint) over the same images is
    reused; none there → extracted and saved there (a Flat index); another model's → ModelMismatchError.
    """
    paths = [str(p) for p in ds.db_paths]
    fp = net.fingerprint()
    if cache is not None and (Path(cache) / "meta.json").is_file():
        index = ImageIndex.load_built_by(cache, fp, "pass the matching --model/--config or another --index folder")
        if list(index.paths) != paths:
            raise DataError(f"index {cache} holds other images than dataset {ds.name}; "
                            "use another --index folder")
        return np.ascontiguousarray(index.descriptors(), dtype=np.float32), True
    ex = extract_descriptors(net, paths, batch_size=batch_size, workers=workers, device=device,
                             progress=progress, desc="database")
    _require_all(paths, ex.paths, ex.failures, "database")
    if cache is not None:
        index = ImageIndex(net.dim, "Flat", to_dict(net.config), fp)
        index.add(ex.descriptors, ex.paths)
        index.save(cache)
    return ex.descriptors, False


def eval_queries(ds: EvalDataset, X: np.ndarray) -> List[Query]:
    """The dataset's queries for the query path: a whole database image by its descriptor row of
    ``X`` (N, D) float32; any other query by its file, cropped to its box; a query that is a
    database image carries that id as ``self_id``."""
    boxes = ds.query_boxes or [None] * ds.n_queries
    db_ids = ds.query_db_ids if ds.query_db_ids is not None else np.full(ds.n_queries, -1, np.int64)
    out = []
    for path, box, i in zip(ds.query_paths, boxes, db_ids):
        own = int(i) if i >= 0 else None
        if own is not None and box is None:
            out.append(Query(vector=X[own], self_id=own, label=str(path)))
        else:
            out.append(Query(image=str(path), box=box, self_id=own))
    return out


def database_index(net: DescriptorNet, ds: EvalDataset, X: np.ndarray, dba_k: int = 0,
                   alpha: float = 3.0) -> ImageIndex:
    """An exact, in-memory index of the database descriptors ``X`` (N, D) float32 (DBA-augmented
    with ``dba_k`` neighbours when > 0), in the dataset's order."""
    index = ImageIndex(net.dim, "Flat", to_dict(net.config), net.fingerprint())
    index.add(dba(X, dba_k, alpha) if dba_k > 0 else X, [str(p) for p in ds.db_paths])
    return index


def full_ranks(results: QueryResults, n: int) -> np.ndarray:
    """(Q, n) int64 rankings of all ``n`` database images: the results' ids, then every image the
    search did not reach, in id order (an approximate index may not reach them all)."""
    out = np.empty((results.ids.shape[0], n), np.int64)
    for q, row in enumerate(results.ids):
        row = row[row >= 0]
        rest = np.setdiff1d(np.arange(n, dtype=np.int64), row, assume_unique=False)
        out[q] = np.concatenate([row, rest])
    return out


def rank_dataset(net: DescriptorNet, ds: EvalDataset, index: ImageIndex, X: np.ndarray,
                 steps: Sequence[Reranker] = (), *, device: Optional[str] = None,
                 progress: bool = False, search_kwargs: Optional[Dict[str, Any]] = None) -> QueryResults:
    """Every query of ``ds`` through the query path over ``index`` (X: the database descriptors,
    (N, D) float32, for queries that are database images), the full ranking kept."""
    path = QueryPath(index, net, steps, device=device, search_kwargs=search_kwargs, progress=progress)
    return path.run(eval_queries(ds, X), top=max(ds.n_db, 1))


def evaluate_dataset(net: DescriptorNet, ds: EvalDataset, *, qe_k: int = 0, alpha: float = 3.0,
                     dba_k: int = 0, cache: Optional[PathLike] = None, batch_size: int = 8,
                     workers: Optional[int] = None, device: Optional[str] = None,
                     progress: bool = False, kappas: Sequence[int] = (1, 5, 10),
                     coseg: Optional[CosegRerankOptions] = None, steps: StepsLike = None,
                     search_cache: bool = False) -> Dict[str, Any]:
    """Describe, rank, re-rank and score ``ds`` (module docstring): ``qe_k`` / ``alpha`` α-QE,
    ``dba_k`` DBA, ``coseg`` co-segmentation re-ranking, ``steps`` further re-ranking steps (names
    as the CLI writes them, :mod:`retrieval.search.rerank`); ``search_cache``: search the ``cache`` index as it is instead of exactly.

    Returns ``{"dataset", "n_queries", "n_db", "fingerprint", "scales", "image_size", "qe",
    "alpha", "dba", "rerank", "coseg", "cached", "seconds", "easy"/"medium"/"hard": {"map",
    "mp@k"..., "n_queries"}, "notes": [what the columns mean], "left_out": [{"path", "why"}]}``
    (``coseg``: the co-segmentation step's summary, or None).
    """
    t0 = time.perf_counter()
    steps = query_steps(qe_k, alpha, coseg, steps)
    if search_cache and cache is None:
        raise DataError("searching the cached index needs an index folder (--index)")
    if search_cache and dba_k > 0:
        raise DataError("--dba augments an exact copy of the database; to search an index with DBA, "
                        "build it with: gemseg index --dba ...")
    X, cached = describe_database(net, ds, cache=cache, batch_size=batch_size, workers=workers,
                                  device=device, progress=progress)
    index = ImageIndex.load(cache) if search_cache else database_index(net, ds, X, dba_k, alpha)
    t_desc = time.perf_counter() - t0
    res = rank_dataset(net, ds, index, X, steps, device=device, progress=progress)
    ranks = full_ranks(res, ds.n_db)
    report: Dict[str, Any] = {
        "dataset": ds.name, "n_queries": ds.n_queries, "n_db": ds.n_db,
        "fingerprint": net.fingerprint(), "backbone": net.config.backbone,
        "image_size": net.config.image_size, "scales": list(net.config.scales),
        "qe": qe_k, "alpha": alpha, "dba": dba_k, "rerank": [s.spec() for s in steps],
        "coseg": res.notes.get("coseg"), "cached": cached,
        "describe_seconds": round(t_desc, 3), "seconds": round(time.perf_counter() - t0, 3),
    }
    report.update(revisited_eval(ranks, ds.gnd, kappas))
    report["notes"] = list(ds.info.get("notes", []))  # what the columns mean for this kind of dataset
    report["left_out"] = list(ds.info.get("left_out", []))  # files that are not queries, and why
    return report
