"""Concurrent searches answered by one search: what arrives while a search runs waits for it and
is then searched together, in one pass over the database.

An exact search is bound by reading the database (10⁵ × 1280 float32 is 512 MB per pass), so Q
queries in one pass cost little more than one: faiss multiplies a (Q, D) block instead of a
vector. :class:`SearchBatcher` batches *naturally* (no waiting window): a search that finds no
other search of its kind running runs at once, alone; searches that arrive while it runs queue,
and when it finishes they run as one batch (at most ``max_batch``), led by one of their own
threads. A lone request never waits; under load each request waits at most for the batch ahead.

Only searches that read no image and run no re-ranking step are batched (a query by stored id or
by vector), and only with searches of the same kind: the same index state, the same search
settings and the same ``top`` (an approximate index's exact re-ranking depends on k), so a batched
search returns what it would have returned alone. Each query keeps its own row of the batch's
:class:`~retrieval.search.query.QueryResults`.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Hashable, List, Optional, Tuple

import numpy as np

from retrieval.search.query import Described, QueryResults


@dataclass
class _Item:
    described: Described
    done: threading.Event = field(default_factory=threading.Event)
    lead: Optional[List["_Item"]] = None
    result: Optional[QueryResults] = None
    row: int = 0
    batch: int = 1
    error: Optional[BaseException] = None


def stack(parts: List[Described]) -> Described:
    """Several :class:`Described` (none holding images) as one, in order."""
    return Described(np.ascontiguousarray(np.concatenate([d.descriptors for d in parts]), dtype=np.float32),
                     [x for d in parts for x in d.labels], np.concatenate([d.self_ids for d in parts]),
                     [b for d in parts for b in d.boxes], [f for d in parts for f in d.image_loaders])


class SearchBatcher:
    """Natural batching of searches of one kind (module docstring); ``max_batch`` queries at most."""

    def __init__(self, max_batch: int = 64) -> None:
        self.max_batch = int(max_batch)
        self._lock = threading.Lock()
        self._busy: Dict[Hashable, bool] = {}
        self._queued: Dict[Hashable, List[_Item]] = {}
        self.batches = 0
        self.batched_queries = 0

    def search(self, key: Hashable, described: Described,
               run: Callable[[Described], QueryResults]) -> Tuple[QueryResults, int, int]:
        """``run(described)`` (a search of one query), or that query's row of a batch of
        queries of the same ``key``: ``(results, row, batch size)``."""
        item = _Item(described)
        with self._lock:
            if self._busy.get(key):
                self._queued.setdefault(key, []).append(item)
                lead = None
            else:
                self._busy[key] = True
                lead = [item]
        if lead is None:
            item.done.wait()
            if item.lead is not None:  # this thread leads the next batch
                lead = item.lead
        if lead is not None:
            self._run_batch(key, lead, run)
        if item.error is not None:
            raise item.error
        assert item.result is not None
        return item.result, item.row, item.batch

    def _run_batch(self, key: Hashable, batch: List[_Item], run: Callable[[Described], QueryResults]) -> None:
        try:
            res = run(batch[0].described if len(batch) == 1 else stack([b.described for b in batch]))
            for row, b in enumerate(batch):
                b.result, b.row, b.batch = res, row, len(batch)
        except BaseException as e:  # noqa: BLE001 - every query of the batch gets the error
            for b in batch:
                b.error = e
        with self._lock:
            self.batches += 1
            self.batched_queries += len(batch)
            queued = self._queued.pop(key, [])
            nxt, rest = queued[: self.max_batch], queued[self.max_batch:]
            if rest:
                self._queued[key] = rest
            if nxt:
                nxt[0].lead = nxt  # the next batch is led by its first thread
            else:
                self._busy.pop(key, None)
        for b in batch:
            b.done.set()
        if nxt:
            nxt[0].done.set()

    def stats(self) -> Dict[str, Any]:
        """``{"batches", "queries"}`` searched so far."""
        return {"batches": self.batches, "queries": self.batched_queries}
