"""retrieval.serve.service: the index and its model loaded once: ids are decimal positions only, bad
parameters are one-line errors, a search by id equals the query path's, indexed files that vanish."""
from __future__ import annotations

import shutil
import time
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


def _own_index(service, folder: Path, n: int = 6) -> Path:
    """A copy of the tiny index's first ``n`` rows in ``folder`` (its own files, to change)."""
    idx = service.index
    mine = ImageIndex(idx.dim, "Flat", idx.model_config, idx.fingerprint)
    mine.add(idx.descriptors()[:n], list(idx.paths)[:n])
    mine.save(folder)
    return folder


def test_a_new_commit_is_swapped_in_and_requests_in_flight_keep_theirs(service, tmp_path):
    folder = _own_index(service, tmp_path / "ix", 4)
    svc = SearchService(ImageIndex.load(folder), service.net, reload_interval=0)
    X = service.index.descriptors()
    try:
        old = svc.state
        assert svc.reload() is False  # nothing changed
        # grown in place by another writer
        other = ImageIndex.load(folder)
        other.add(X[4:6], list(service.index.paths)[4:6])
        other.save(folder)
        other.close()
        assert svc.reload() is True
        new = svc.state
        assert new is not old and new.commit != old.commit and svc.info()["images"] == 6
        assert svc.search(Query(id=5), top=1)["hits"][0]["id"] == 5
        assert svc.search(Query(id=5), top=1)["commit"] == new.commit
        # a request that took the old state before the swap finishes on it
        doc = svc.search(Query(id=1), top=10, state=old)
        assert doc["commit"] == old.commit and {h["id"] for h in doc["hits"]} == {0, 1, 2, 3}
        # pruned: never returned again, not found by id
        other = ImageIndex.load(folder)
        other.remove([2])
        other.save(folder)
        other.close()
        assert svc.reload() is True
        assert 2 not in [h["id"] for h in svc.search(Query(id=1), top=10)["hits"]]
        with pytest.raises(NotFoundError, match="removed"):
            svc.image_id("2")
        with pytest.raises(NotFoundError, match="removed"):
            svc.search(Query(id=2), top=1)
        assert svc.info()["live_images"] == 5 and svc.reloads == {"ok": 2, "failed": 0}
    finally:
        svc.close()


def test_a_folder_that_cannot_be_opened_leaves_the_old_state(service, tiny_config, tmp_path):
    folder = _own_index(service, tmp_path / "ix", 3)
    told = []
    svc = SearchService(ImageIndex.load(folder), service.net, reload_interval=0,
                        on_reload=lambda ok, line: told.append((ok, line)))
    try:
        commit = svc.state.commit
        # renamed away (the instant between two renames): nothing to read, nothing reported
        (tmp_path / "ix").rename(tmp_path / "away")
        assert svc.reload() is False and svc.state.commit == commit and told == []
        # an index of another model put in its place: refused, the old state still serves
        idx = service.index
        foreign = ImageIndex(idx.dim, "Flat", idx.model_config, "0123456789abcdef")
        foreign.add(idx.descriptors()[:2], list(idx.paths)[:2])
        foreign.save(tmp_path / "ix")
        assert svc.reload() is False and svc.state.commit == commit
        assert told and told[-1][0] is False and "not reloaded" in told[-1][1] and commit in told[-1][1]
        assert svc.search(Query(id=2), top=3)["hits"][0]["id"] == 2
        assert svc.reload() is False and len(told) == 1  # the same broken folder is not tried again
        # a good folder again: served
        shutil.rmtree(tmp_path / "ix")
        (tmp_path / "away").rename(tmp_path / "ix")
        other = ImageIndex.load(folder)
        other.add(idx.descriptors()[3:5], list(idx.paths)[3:5])
        other.save(folder)
        other.close()
        assert svc.reload() is True and svc.info()["images"] == 5 and svc.reloads["failed"] == 1
    finally:
        svc.close()


def test_the_watcher_follows_the_folder(service, tmp_path):
    folder = _own_index(service, tmp_path / "ix", 3)
    svc = SearchService(ImageIndex.load(folder), service.net, reload_interval=0.05)
    try:
        commit = svc.state.commit
        other = ImageIndex.load(folder)
        other.add(service.index.descriptors()[3:4], list(service.index.paths)[3:4])
        other.save(folder)
        other.close()
        for _ in range(200):
            if svc.state.commit != commit:
                break
            time.sleep(0.05)
        assert svc.state.commit != commit and svc.info()["images"] == 4
    finally:
        svc.close()


def test_image_box_scales_from_the_picture_to_the_image():
    from retrieval.serve.service import image_box
    assert image_box((0, 52, 320, 192), (320, 236), (880, 650)) == [0, 143, 880, 529]
    assert image_box((10, 10, 20, 20), (100, 100), (100, 100)) == [10, 10, 20, 20]
    assert image_box((1, 1, 3, 3), (4, 4), (10, 10)) == [2, 2, 8, 8]  # rounded outwards
    assert image_box((0, 0, 4, 4), (4, 4), (10, 10)) == [0, 0, 10, 10]


def test_a_cached_thumbnail_is_not_served_once_its_file_is_gone(service, tmp_path):
    idx = service.index
    (tmp_path / "photos").mkdir()
    copies = [shutil.copy(p, tmp_path / "photos") for p in idx.paths]
    mine = ImageIndex(idx.dim, "Flat", idx.model_config, idx.fingerprint)
    mine.add(idx.descriptors(), copies)
    mine.save(tmp_path / "ix")
    svc = SearchService.open(tmp_path / "ix", reload_interval=0)
    try:
        first = svc.thumbnail(2, 32)
        assert svc.thumbnail(2, 32) == first  # cached
        Path(copies[2]).unlink()
        with pytest.raises(NotFoundError, match="missing"):
            svc.thumbnail(2, 32)
        assert [h["missing"] for h in svc.search(Query(id=2), top=6)["hits"] if h["id"] == 2] == [True]
    finally:
        svc.close()


def test_concurrent_searches_share_a_search_and_get_their_own_hits(service, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor
    X = service.index.descriptors()
    jobs = [Query(id=i % 6) for i in range(8)] + [Query(vector=X[i].copy()) for i in range(4)]
    alone = [service.search(q, top=4) for q in jobs]
    original = QueryPath.search

    def slow(self, described, top=10):  # a search long enough for the others to queue behind it
        time.sleep(0.05)
        return original(self, described, top)

    monkeypatch.setattr(QueryPath, "search", slow)
    with ThreadPoolExecutor(12) as pool:
        together = list(pool.map(lambda q: service.search(q, top=4), jobs))
    assert max(d["batch"] for d in together) > 1
    for a, b in zip(alone, together):  # the same hits (a batch is a matrix product: scores to float rounding)
        assert [(h["id"], h["path"], h["rank"]) for h in a["hits"]] == [(h["id"], h["path"], h["rank"]) for h in b["hits"]]
        np.testing.assert_allclose([h["score"] for h in a["hits"]], [h["score"] for h in b["hits"]], atol=1e-6)
        assert a["query"] == b["query"] and a["query_id"] == b["query_id"]
    # another top is another kind: never in the same search
    with ThreadPoolExecutor(4) as pool:
        mixed = list(pool.map(lambda k: service.search(Query(id=1), top=k), [2, 3, 2, 3]))
    assert [len(d["hits"]) for d in mixed] == [2, 3, 2, 3]


def test_a_state_is_quick_for_approximate_or_small_exact_indexes_until_its_searches_are_slow(monkeypatch):
    from retrieval.serve import service as service_module
    from retrieval.serve.service import INLINE_SEARCH_MS, IndexState

    X = np.random.default_rng(0).normal(size=(300, 8)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)

    def state(factory: str) -> IndexState:
        idx = ImageIndex(8, factory, {}, "f")
        idx.add(X, [f"/x/{i}.jpg" for i in range(300)])
        return IndexState(idx, QueryPath(idx, None), None, 4)

    monkeypatch.setattr(service_module, "INLINE_EXACT_FLOATS", 300 * 8)
    assert state("Flat").quick  # 300 × 8 stored values: at the bound
    monkeypatch.setattr(service_module, "INLINE_EXACT_FLOATS", 300 * 8 - 1)
    assert not state("Flat").quick  # one value over it
    hnsw = state("HNSW16")
    assert hnsw.quick  # approximate: quick whatever its size
    for _ in range(3):
        hnsw.observe_search(INLINE_SEARCH_MS * 4)
    assert not hnsw.quick  # its searches averaged over INLINE_SEARCH_MS: back to the worker threads
    for _ in range(60):
        hnsw.observe_search(0.5)
    assert hnsw.quick and hnsw.search_ms < 1.0
