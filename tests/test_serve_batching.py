"""retrieval.serve.batching: a lone search runs at once; searches arriving while one runs are
searched together and each gets its own row; errors reach every query of their batch; kinds
(keys) are never mixed."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from retrieval.search.query import Described, QueryResults
from retrieval.serve.batching import SearchBatcher, stack


def _described(v: float) -> Described:
    return Described(np.full((1, 4), v, np.float32), [f"q{v:g}"], np.array([-1]), [None], [None])


def _run_recording(calls, delay=0.05):
    def run(d: Described) -> QueryResults:
        calls.append(d.descriptors[:, 0].tolist())
        time.sleep(delay)
        ids = (d.descriptors[:, :1] * 10).astype(np.int64)  # each query's "hit" is its own value × 10
        return QueryResults(list(d.labels), ids, d.descriptors[:, :1].copy(), d.descriptors, lambda i: [str(x) for x in i])
    return run


def test_a_lone_search_runs_alone_and_at_once():
    calls = []
    b = SearchBatcher()
    t0 = time.perf_counter()
    res, row, n = b.search("k", _described(3), _run_recording(calls, 0.0))
    assert time.perf_counter() - t0 < 0.5 and (row, n) == (0, 1) and calls == [[3.0]]
    assert res.ids[row, 0] == 30


def test_searches_that_arrive_meanwhile_share_one_search():
    calls = []
    b = SearchBatcher(max_batch=64)
    run = _run_recording(calls, 0.2)
    first = threading.Thread(target=b.search, args=("k", _described(0), run))
    first.start()
    time.sleep(0.05)  # the first search is running: the next ones queue
    with ThreadPoolExecutor(6) as pool:
        outs = list(pool.map(lambda v: (v, b.search("k", _described(v), run)), [1, 2, 3, 4, 5, 6]))
    first.join()
    for v, (res, row, n) in outs:
        assert res.ids[row, 0] == v * 10 and res.labels[row] == f"q{v:g}"  # its own row
        assert n == 6
    assert len(calls) == 2 and sorted(calls[1]) == [1, 2, 3, 4, 5, 6]
    assert b.stats() == {"batches": 2, "queries": 7}


def test_kinds_are_not_mixed_and_batches_are_bounded():
    calls = []
    b = SearchBatcher(max_batch=2)
    run = _run_recording(calls, 0.15)
    first = threading.Thread(target=b.search, args=("a", _described(0), run))
    first.start()
    time.sleep(0.05)
    with ThreadPoolExecutor(6) as pool:
        outs = list(pool.map(lambda kv: (kv, b.search(kv[0], _described(kv[1]), run)),
                             [("a", 1), ("a", 2), ("a", 3), ("b", 7)]))
    first.join()
    for (key, v), (res, row, n) in outs:
        assert res.ids[row, 0] == v * 10 and n <= 2
    assert [7.0] in calls  # "b" ran on its own, never inside an "a" batch
    assert all(len(c) <= 2 for c in calls) and not any(7.0 in c and len(c) > 1 for c in calls)


def test_an_error_reaches_every_query_of_its_batch_and_the_batcher_recovers():
    b = SearchBatcher()
    gate = threading.Event()

    def failing(d):
        gate.wait(5)
        raise ValueError("broken index")

    first = ThreadPoolExecutor(1).submit(b.search, "k", _described(0), failing)
    time.sleep(0.05)
    others = [ThreadPoolExecutor(1).submit(b.search, "k", _described(v), failing) for v in (1, 2)]
    time.sleep(0.05)
    gate.set()
    for f in [first] + others:
        with pytest.raises(ValueError, match="broken index"):
            f.result(10)
    calls = []
    res, row, n = b.search("k", _described(5), _run_recording(calls, 0.0))
    assert res.ids[row, 0] == 50 and n == 1


def test_stack_keeps_the_order():
    d = stack([_described(1), _described(2)])
    assert d.descriptors[:, 0].tolist() == [1, 2] and d.labels == ["q1", "q2"] and d.self_ids.tolist() == [-1, -1]
