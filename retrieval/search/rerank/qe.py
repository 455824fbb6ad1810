"""``qe``: α-weighted query expansion (Radenović, Tolias, Chum, TPAMI 2018) as a step of the query
path.

Each query ``v`` is expanded with its top ``k`` hits ``x_i`` of the shortlist it is given::

    v' = L2( v + Σ_i max(vᵀx_i, 0)^α x_i )       (:func:`retrieval.search.expansion.expand`)

and the index is searched again with ``v'`` for as many hits as the shortlist held; ``v'`` replaces
the query descriptor for the steps that follow. The neighbours are the index's own hits (same
nprobe / efSearch / exact re-ranking); their weights use exact inner products with the stored
rows. A query that declares itself a database image (``Query.self_id``: the evaluation's queries
of a folder of classes) skips that copy, so its ``k`` neighbours are other images; any other query
(by file, by stored id) is expanded with its top hits as they are. ``k = 0`` leaves
the shortlist as it is.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Tuple

import numpy as np

from retrieval.core.errors import DataError
from retrieval.search.expansion import expand, first_other
from retrieval.search.rerank.registry import register_reranker
from retrieval.search.rerank.step import Reranker, RerankContext


@dataclass
class QEParams:
    """k: neighbours averaged into each query (0: off). alpha: the weight exponent α (0: average
    query expansion)."""

    k: int = 2
    alpha: float = 3.0

    def validate(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 0:
            raise DataError(f"α-QE (qe:k=K) takes a number of neighbours ≥ 0, got {self.k}")
        if not isinstance(self.alpha, (int, float)) or not math.isfinite(self.alpha) or self.alpha < 0:
            raise DataError(f"α-QE (qe:alpha=A) needs a finite α ≥ 0, got {self.alpha}")


@register_reranker
class QueryExpansion(Reranker):
    """α-QE (module docstring)."""

    name = "qe"
    summary = "α-weighted query expansion: each query averaged with its top k hits (weights sim^α), searched again"
    Params = QEParams

    def depth(self) -> int:
        return self.params.k + 1 if self.params.k else 0  # + 1: room for the query's own copy

    def rerank(self, ctx: RerankContext, ids: np.ndarray, scores: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        if self.params.k == 0 or ids.shape[1] == 0:
            return ids, scores
        nb = first_other(ids, ctx.self_ids, self.params.k)
        used = np.unique(nb[nb >= 0])
        if used.size == 0:
            return ids, scores
        local = np.where(nb >= 0, np.searchsorted(used, nb), -1)
        ctx.descriptors = expand(ctx.descriptors, ctx.index.rows(used), local, float(self.params.alpha))
        s, i = ctx.search(ctx.descriptors, ids.shape[1])
        return i, s
