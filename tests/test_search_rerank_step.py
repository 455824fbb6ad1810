"""retrieval.search.rerank.step: what a re-ranking step is (parameters checked when it is made, its
written form) and what it sees (the context: the queries' images, searches, hit annotations)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from conftest import unit_rows
from PIL import Image

from retrieval.core.errors import DataError
from retrieval.search.index import ImageIndex
from retrieval.search.rerank.step import NoParams, RerankContext, Reranker


@dataclass
class TopParams:
    n: int = 3
    tag: str = "x"

    def validate(self) -> None:
        if self.n < 1:
            raise DataError(f"top:n must be ≥ 1, got {self.n}")


class Top(Reranker):
    name = "top"
    Params = TopParams


def test_parameters_are_checked_and_written_as_the_cli_takes_them():
    assert Top().spec() == "top" and Top(n=5).spec() == "top:n=5" and Top(TopParams(2, "y")).spec() == "top:n=2:tag=y"
    assert repr(Top(n=5)) == "<re-ranker top:n=5>" and Top().depth() == 0
    with pytest.raises(DataError, match="must be ≥ 1"):
        Top(n=0)
    with pytest.raises(TypeError, match="not both"):
        Top(TopParams(), n=2)
    with pytest.raises(NotImplementedError):
        Top().rerank(None, np.zeros((1, 1), np.int64), np.zeros((1, 1), np.float32))
    assert isinstance(Reranker().params, NoParams)


def test_the_context_loads_each_image_once_searches_and_annotates():
    X = unit_rows(20, 8)
    index = ImageIndex(8, "Flat", fingerprint="fp")
    index.add(X, [f"/p/{i}" for i in range(20)])
    loads = []

    def load():
        loads.append(1)
        return Image.new("RGB", (4, 4))

    ctx = RerankContext(descriptors=X[:2].copy(), index=index, net=None, device=torch.device("cpu"),
                        self_ids=np.array([-1, 3]), boxes=[None, None], image_loaders=[load, None])
    assert ctx.n_queries == 2
    assert ctx.image(0).size == (4, 4) and ctx.image(0) is ctx.image(0) and loads == [1]
    with pytest.raises(DataError, match="query 1 is a vector"):
        ctx.images()
    s, i = ctx.search(X[:2], 3)
    assert i[:, 0].tolist() == [0, 1] and s.shape == (2, 3)
    ctx.annotate(0, 5, mask="empty")
    ctx.annotate(0, 5, weight=0.5)
    assert ctx.hit_fields == {(0, 5): {"mask": "empty", "weight": 0.5}}
