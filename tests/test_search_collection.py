"""retrieval.search.collection: search_images keeps its API (one query alone, queries by id, PIL
images and arrays, co-segmentation re-ranking, one-line errors)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from retrieval.core.errors import DataError
from retrieval.loading import load_model, search_model
from retrieval.search.collection import search_images
from retrieval.search.index import ImageIndex
from retrieval.search.query import Query, as_queries
from retrieval.search.rerank.coseg import CosegRerankOptions


@pytest.mark.slow
def test_queries_can_be_pil_images_arrays_or_one_path(tiny_index):
    ix, photos, cfg = tiny_index
    index = ImageIndex.load(ix)
    net = load_model(cfg)
    q = photos / "img002.jpg"
    by_path = search_images(net, index, [q], top=3)[0]
    pil = Image.open(q)
    arr = np.asarray(Image.open(q).convert("RGB"))
    for query, label in ((pil, str(q)), (arr, "<array 0>"), (arr.astype(np.float32) / 255, "<array 0>"), (str(q), str(q))):
        (r,) = search_images(net, index, query, top=3)  # one query may be given alone
        assert r["query"] == label
        assert [h["path"] for h in r["hits"]] == [h["path"] for h in by_path["hits"]]
        assert np.allclose([h["score"] for h in r["hits"]], [h["score"] for h in by_path["hits"]], atol=2e-3)
    with pytest.raises(DataError, match="image array"):
        search_images(net, index, [np.zeros((4, 4, 7), np.uint8)])

N = 14  # images in the query_collection fixture


@pytest.mark.slow
def test_search_images_keeps_its_api(query_collection):
    idx = ImageIndex.load(query_collection["root"] / "flat")
    net = search_model(idx)
    (one,) = search_images(net, idx, query_collection["query"], top=3)  # one query alone
    both = search_images(net, idx, [query_collection["query"], Query(id=1)], top=3)
    assert both[0] == one and both[1]["hits"][0]["id"] == 1
    co = search_images(net, idx, [query_collection["query"]], top=3, coseg_rerank=CosegRerankOptions(K=4, k=2))
    assert {h["id"] for h in co[0]["hits"]} <= set(range(N))
    with pytest.raises(DataError, match="boxes"):
        as_queries([query_collection["query"]], boxes=[None, None])
    with pytest.raises(DataError, match="unknown re-ranker"):
        search_images(net, idx, query_collection["query"], steps="diffusionn")


@pytest.mark.slow
def test_search_images_refuses_a_box_outside_the_image(query_collection):
    """Failed on the tree before issue 27: the box was dropped and the whole image searched."""
    idx = ImageIndex.load(query_collection["root"] / "flat")
    net = search_model(idx)
    q = query_collection["query"]  # 64 x 48
    for box in ((600, 500, 700, 600), (0, 0, 5000, 5000), (30, 30, 70, 40)):
        with pytest.raises(DataError, match="not inside the 64x48 image"):
            search_images(net, idx, [q], boxes=[box])
    with pytest.raises(DataError, match="not inside"):
        search_images(net, idx, [Query(id=2, box=(0, 0, 65, 48))])  # an indexed image's box: the same rule
