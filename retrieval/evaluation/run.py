"""One evaluation run: describe an :class:`~retrieval.datasets.EvalDataset` with a model, rank the
database for every query, optionally re-rank with DBA / α-QE, and score with the revisited protocol.
The library call behind ``tools/evaluate.py``.

* Queries with a box are loaded, cropped to the box (pixel coordinates rounded to the nearest
  integer and clipped to the image) and described one by one; others are batch-extracted.
* Every database image must load: a failure is a one-line DataError (indices of the ground truth
  would shift otherwise).
* Ranking is exact (all inner products), so scores measure the descriptors, not an index; an index
  folder given as ``cache`` only saves the database extraction (it must come from the same model:
  fingerprints are compared, another model's index is refused).
* Re-ranking order: DBA on the database, then α-QE of the queries against the (augmented) database,
  then the final exact ranking, then (``coseg``) co-segmentation re-ranking of each query's top K
  (:mod:`retrieval.search.coseg_rerank`; the query image is cropped to its box as above).
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image

from retrieval.core.config import to_dict
from retrieval.core.errors import DataError
from retrieval.core.images import crop_box, load_image
from retrieval.evaluation.datasets import EvalDataset
from retrieval.evaluation.metrics import ranks_from_scores, revisited_eval
from retrieval.model.network import DescriptorNet
from retrieval.search.coseg_rerank import CosegRerankOptions, coseg_summary, rerank_ranks
from retrieval.search.extract import describe_pil, extract_descriptors
from retrieval.search.index import ImageIndex
from retrieval.search.qe import alpha_qe, dba

PathLike = Union[str, Path]


def with_scales(net: DescriptorNet, scales: Optional[Sequence[float]]) -> DescriptorNet:
    """Set the network's extraction scales in its config (so its fingerprint says which were used)."""
    if scales is not None:
        net.config = dataclasses.replace(net.config, scales=[float(s) for s in scales])
    return net


def describe_queries(net: DescriptorNet, ds: EvalDataset, *, batch_size: int = 8,
                     workers: Optional[int] = None, device: Optional[str] = None,
                     progress: bool = False) -> np.ndarray:
    """(Q, D) float32 query descriptors (cropped to their boxes when the dataset has boxes)."""
    if ds.query_boxes is None or all(b is None for b in ds.query_boxes):
        ex = extract_descriptors(net, ds.query_paths, batch_size=batch_size, workers=workers,
                                 device=device, progress=progress, desc="queries")
        _require_all(ds.query_paths, ex.paths, ex.failures, "query")
        return ex.descriptors
    out = []
    for path, box in zip(ds.query_paths, ds.query_boxes):
        out.append(describe_pil(net, crop_box(load_image(path), box), device=device))
    return np.stack(out).astype(np.float32)


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


def rerank_scores(queries: np.ndarray, database: np.ndarray, *, qe_k: int = 0, alpha: float = 3.0,
                  dba_k: int = 0, dba_alpha: Optional[float] = None,
                  self_ids: Optional[np.ndarray] = None) -> np.ndarray:
    """DBA (database), then α-QE (queries), then all inner products: scores (Q, N) float32.

    queries: (Q, D) float32; database: (N, D) float32; self_ids: optional (Q,) int database index
    of each query's own image (kept out of its expansion)."""
    X = dba(database, dba_k, alpha if dba_alpha is None else dba_alpha) if dba_k > 0 else database
    Q = alpha_qe(queries, X, qe_k, alpha, self_ids=self_ids) if qe_k > 0 else queries
    return Q @ X.T


def rerank_and_rank(queries: np.ndarray, database: np.ndarray, **options: Any) -> np.ndarray:
    """:func:`rerank_scores` ranked: ranks (Q, N) int64, best first."""
    return ranks_from_scores(rerank_scores(queries, database, **options))


def query_images(ds: EvalDataset) -> List[Image.Image]:
    """The Q query images as RGB PIL images, cropped to their boxes when the dataset has boxes."""
    boxes = ds.query_boxes or [None] * ds.n_queries
    return [crop_box(load_image(p), b) for p, b in zip(ds.query_paths, boxes)]


def evaluate_dataset(net: DescriptorNet, ds: EvalDataset, *, qe_k: int = 0, alpha: float = 3.0,
                     dba_k: int = 0, cache: Optional[PathLike] = None, batch_size: int = 8,
                     workers: Optional[int] = None, device: Optional[str] = None,
                     progress: bool = False, kappas: Sequence[int] = (1, 5, 10),
                     coseg: Optional[CosegRerankOptions] = None) -> Dict[str, Any]:
    """Describe, rank, re-rank and score ``ds`` (``coseg``: co-segmentation re-ranking of the top K;
    its summary is the report's ``"coseg"``).

    Returns ``{"dataset", "n_queries", "n_db", "fingerprint", "scales", "image_size", "qe",
    "alpha", "dba", "cached", "seconds", "easy"/"medium"/"hard": {"map", "mp@k"..., "n_queries"},
    "notes": [what the columns mean], "left_out": [{"path", "why"}]}``.
    """
    t0 = time.perf_counter()
    X, cached = describe_database(net, ds, cache=cache, batch_size=batch_size, workers=workers,
                                  device=device, progress=progress)
    if ds.query_db_ids is not None and ds.query_boxes is None and (ds.query_db_ids >= 0).all():
        Q = X[ds.query_db_ids]  # queries are whole database images: described once
    else:
        Q = describe_queries(net, ds, batch_size=batch_size, workers=workers, device=device,
                             progress=progress)
    t_desc = time.perf_counter() - t0
    self_ids = ds.query_db_ids if ds.query_db_ids is not None else None
    S = rerank_scores(Q, X, qe_k=qe_k, alpha=alpha, dba_k=dba_k, self_ids=self_ids)
    ranks = ranks_from_scores(S)
    coseg_report = None
    if coseg is not None:
        ranks, r = rerank_ranks(net, query_images(ds), [str(p) for p in ds.db_paths], ranks, S, coseg,
                                device=device, progress=progress)
        coseg_report = {"K": coseg.K, "k": coseg.k, "weight": coseg.weight, **coseg_summary(r)}
    report: Dict[str, Any] = {
        "dataset": ds.name, "n_queries": ds.n_queries, "n_db": ds.n_db,
        "fingerprint": net.fingerprint(), "backbone": net.config.backbone,
        "image_size": net.config.image_size, "scales": list(net.config.scales),
        "qe": qe_k, "alpha": alpha, "dba": dba_k, "coseg": coseg_report, "cached": cached,
        "describe_seconds": round(t_desc, 3), "seconds": round(time.perf_counter() - t0, 3),
    }
    report.update(revisited_eval(ranks, ds.gnd, kappas))
    report["notes"] = list(ds.info.get("notes", []))  # what the columns mean for this kind of dataset
    report["left_out"] = list(ds.info.get("left_out", []))  # files that are not queries, and why
    return report
