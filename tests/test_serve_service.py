"""retrieval.serve.service: the index and its model loaded once: ids are decimal positions only, bad
parameters are one-line errors, a search by id equals the query path's, indexed files that vanish."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from retrieval.search.index import ImageIndex
from retrieval.search.query import Query, QueryPath
from retrieval.serve.errors import BadParameterError, NotFoundError
from retrieval.serve.service import SearchService


@pytest.fixture(scope="module")
def service(tiny_index):
    svc = SearchService.open(tiny_index[0])
    yield svc
    svc.close()


def test_info_and_ids(service):
    info = service.info()
    assert (info["images"], info["dim"], info["factory"], info["device"]) == (6, 512, "Flat", "cpu")
    assert info["fingerprint"] == service.net.fingerprint()
    assert service.image_id("5") == 5 and service.image_id(0) == 0
    for bad in ("6", "-1", "1.0", "0x1", "１", "../img000.jpg", "9" * 13):
        with pytest.raises(NotFoundError, match="no indexed image"):
            service.image_id(bad)


def test_a_search_by_id_is_the_query_path_s(service):
    doc = service.search(Query(id=2), top=3)
    ref = QueryPath(service.index, service.net).run(Query(id=2), top=3)
    assert doc["hits"] == ref.hits(0) and doc["query_id"] == 2 and doc["size"] == [64, 48]
    assert doc["hits"][0]["id"] == 2 and doc["rerank"] == [] and doc["ms"] > 0
    qe = service.search(Query(id=2), top=3, qe=2)
    assert qe["rerank"] == ["qe"] and not np.allclose([h["score"] for h in qe["hits"]],
                                                      [h["score"] for h in doc["hits"]])


@pytest.mark.parametrize("kw, needle", [({"top": 0}, "top"), ({"top": 100_000}, "top"), ({"qe": -1}, "qe"),
                                        ({"alpha": float("nan")}, "alpha"), ({"nprobe": 0}, "nprobe")])
def test_bad_parameters_are_one_line_errors(service, kw, needle):
    with pytest.raises(BadParameterError, match=needle):
        service.search(Query(id=0), **kw)


def test_an_indexed_file_that_vanished_is_not_found(service, tmp_path):
    """A copy of the index over copies of its images, one of which then goes away."""
    idx = service.index
    (tmp_path / "photos").mkdir()
    copies = [shutil.copy(p, tmp_path / "photos") for p in idx.paths]
    mine = ImageIndex(idx.dim, "Flat", idx.model_config, idx.fingerprint)
    mine.add(idx.descriptors(), copies)
    mine.save(tmp_path / "ix")
    svc = SearchService.open(tmp_path / "ix")
    try:
        assert svc.indexed_size(1) == (64, 48) and svc.indexed_image(1).size == (64, 48)
        Path(copies[1]).unlink()
        with pytest.raises(NotFoundError, match="can no longer be read"):
            svc.indexed_image(1)
        with pytest.raises(NotFoundError):
            svc.indexed_size(1)
        doc = svc.search(Query(id=1), top=2)  # the stored row still searches
        assert doc["size"] is None and doc["hits"][0]["id"] == 1
    finally:
        svc.close()


def test_check_vector(service):
    v = service.check_vector([0.5] * 512)
    assert v.dtype == np.float32 and v.shape == (512,)
    for bad, needle in (([0.5] * 3, "3 values"), ([float("nan")] * 512, "finite"), ([0] * 512, "zeros"),
                        ("x" * 512, "list"), ([None] * 512, "list")):
        with pytest.raises(BadParameterError, match=needle):
            service.check_vector(bad)


def test_a_search_by_vector_is_the_query_path_s(service):
    row = service.index.descriptors()[4]
    doc = service.search(Query(vector=service.check_vector(row.tolist())), top=3, return_vectors=True)
    ref = QueryPath(service.index, service.net).run(Query(id=4), top=3)
    assert [h["id"] for h in doc["hits"]] == [h["id"] for h in ref.hits(0)]
    np.testing.assert_allclose(doc["query_vector"], row, atol=1e-7)
    assert doc["commit"] == service.info()["commit"] and len(doc["commit"]) == 12
