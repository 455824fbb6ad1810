"""How an index is built and searched: the ``index:`` section of a config (stored in meta.json)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from retrieval.core.errors import ConfigError


@dataclass
class IndexConfig:
    """How descriptors are indexed and searched.

    factory: faiss factory string or alias (see :mod:`retrieval.search.factory`). train_size:
    descriptors sampled to train a compressed index (``None`` = chosen from the collection size).
    nprobe / ef_search: search-time accuracy knobs of IVF / HNSW indexes. rerank: re-rank the top
    ``rerank_k`` candidates with exact inner products (``None`` = on for every index that is not
    exact).
    """

    factory: str = "Flat"
    train_size: Optional[int] = None
    nprobe: Optional[int] = None
    ef_search: Optional[int] = None
    rerank: Optional[bool] = None
    rerank_k: int = 100
    seed: int = 0

    def validate(self) -> None:
        if not self.factory.strip():
            raise ConfigError("index.factory: empty factory string")
        if self.rerank_k < 1:
            raise ConfigError(f"index.rerank_k: must be ≥ 1, got {self.rerank_k}")
