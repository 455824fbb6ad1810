"""Ids ↔ paths in SQLite (retrieval.search.paths_store): round trips, appends, removed flags, and
one transaction per commit."""
from __future__ import annotations

import numpy as np
import pytest

from retrieval.core.errors import DataError
from retrieval.search.paths_store import PathStore


def filled(path, n=5):
    store = PathStore(path, create=True)
    store.commit(0, [f"/img/{i}.jpg" for i in range(n)], [(100 + i, 10 ** 9 + i) if i % 2 else None for i in range(n)],
                 info={"segments": [{"file": "segments/000000.index", "offset": 0, "count": n}]})
    return store


def test_rows_round_trip_through_the_file(tmp_path):
    filled(tmp_path / "p.sqlite").close()
    store = PathStore(tmp_path / "p.sqlite")  # reopened: everything was committed to the file
    assert store.count() == 5 and store.get(3) == "/img/3.jpg"
    assert store.get_many([4, 0, 4]) == ["/img/4.jpg", "/img/0.jpg", "/img/4.jpg"]
    assert list(store.iter_rows(1, 3)) == [(1, "/img/1.jpg", (101, 10 ** 9 + 1)), (2, "/img/2.jpg", None)]
    assert store.lookup(["/img/1.jpg", "/img/2.jpg", "/nope.jpg"]) == {"/img/1.jpg": (1, (101, 10 ** 9 + 1)),
                                                                       "/img/2.jpg": (2, None)}
    assert store.info("segments")[0]["count"] == 5 and store.info("missing", 7) == 7
    with pytest.raises(IndexError):
        store.get(5)
    store.close()


def test_an_append_adds_rows_and_flags_removed_ones(tmp_path):
    store = filled(tmp_path / "p.sqlite")
    store.commit(5, ["/img/5.jpg", "/img/6.jpg"], [None, (1, 2)], removed=[1, 3, 3])
    assert store.count() == 7 and store.get(6) == "/img/6.jpg"
    np.testing.assert_array_equal(store.removed_ids(), [1, 3])
    assert [i for i, _, _ in store.iter_rows(live_only=True)] == [0, 2, 4, 5, 6]
    assert "/img/1.jpg" not in store.lookup(["/img/1.jpg", "/img/6.jpg"])  # a removed id is not found
    assert store.info("segments")[0]["count"] == 5  # info keys not given are kept
    store.close()


def test_rows_past_the_start_of_a_commit_are_replaced(tmp_path):
    store = filled(tmp_path / "p.sqlite")
    store.commit(3, ["/new/3.jpg"], [None])  # e.g. rows left by an interrupted commit at 3
    assert store.count() == 4 and [p for _, p, _ in store.iter_rows()] == ["/img/0.jpg", "/img/1.jpg",
                                                                          "/img/2.jpg", "/new/3.jpg"]
    assert store.lookup(["/img/4.jpg"]) == {}
    store.close()


def test_a_commit_that_fails_midway_changes_nothing(tmp_path):
    store = filled(tmp_path / "p.sqlite")

    def paths():
        yield "/img/5.jpg"
        raise KeyboardInterrupt  # the process dies while the rows are streamed in

    with pytest.raises(KeyboardInterrupt):
        store.commit(5, paths(), [None, None], removed=[0], info={"segments": []})
    store.close()
    store = PathStore(tmp_path / "p.sqlite")
    assert store.count() == 5 and store.removed_ids().size == 0 and len(store.info("segments")) == 1
    assert [p for _, p, _ in store.iter_rows(0, 10)] == [f"/img/{i}.jpg" for i in range(5)]
    store.close()


def test_a_missing_or_foreign_file_is_a_one_line_data_error(tmp_path):
    with pytest.raises(DataError, match="not found"):
        PathStore(tmp_path / "none.sqlite")
    (tmp_path / "junk.sqlite").write_bytes(b"this is not a database, just some bytes" * 50)
    with pytest.raises(DataError, match="not a readable path store"):
        PathStore(tmp_path / "junk.sqlite")
