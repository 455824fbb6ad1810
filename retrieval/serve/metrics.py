"""What an operator scrapes: the server's Prometheus metrics (``GET /metrics``).

One :class:`ServerMetrics` per application, on its own ``prometheus_client`` registry (two apps in
one process, as in the tests, never share counters):

=====================================  =========  =============================================
``gemseg_requests_total``              counter    requests by ``route`` (the route's pattern,
                                                  e.g. ``/api/images/{id}``; ``other`` for an
                                                  unknown path) and ``status``
``gemseg_request_seconds``             histogram  wall time of a request by ``route``
``gemseg_stage_seconds``               histogram  time per ``stage`` of a search: ``decode``
                                                  (an upload), ``forward`` (described by the
                                                  network), ``lookup`` (a stored row or a vector),
                                                  ``search`` (faiss), ``rerank:<name>`` (each step)
``gemseg_uploads_refused_total``       counter    uploads refused, by ``reason``: ``too_large``
                                                  (413), ``not_image``, ``empty``, ``corrupt``,
                                                  ``too_many_pixels``
``gemseg_index_images``                gauge      ids of the state served (removed ones included)
``gemseg_index_live_images``           gauge      ids a search can return
``gemseg_index_commit_info``           gauge      1, labelled with the ``commit`` served
``gemseg_index_loaded_timestamp_seconds``  gauge  when the state served was opened
``gemseg_index_reloads_total``         counter    new states opened, by ``result`` (ok, failed)
=====================================  =========  =============================================

Latency buckets run from 1 ms to 60 s (a query by id is milliseconds; a forward pass on a loaded
CPU, seconds).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, Iterator, Tuple

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

#: Seconds: 1 ms … 60 s.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: Why an upload was refused: the words of the error line that tell (first match wins).
REFUSAL_REASONS = (("empty upload", "empty"), ("decompression bomb", "too_many_pixels"),
                   ("not an image", "not_image"))


def refusal_reason(message: str) -> str:
    """The ``reason`` label of a refused upload from its error line."""
    low = message.lower()
    for words, reason in REFUSAL_REASONS:
        if words in low:
            return reason
    return "corrupt"


class _IndexCollector:
    """Index gauges read at scrape time from ``info()`` (the service's ``/api/info`` document)."""

    def __init__(self, info: Callable[[], Dict[str, Any]]) -> None:
        self.info = info

    def collect(self) -> Iterator[Any]:
        d = self.info()
        yield GaugeMetricFamily("gemseg_index_images", "ids of the index state served (removed ones included)",
                                value=d["images"])
        yield GaugeMetricFamily("gemseg_index_live_images", "ids a search can return", value=d["live_images"])
        commit = GaugeMetricFamily("gemseg_index_commit_info", "the index commit served", labels=["commit"])
        commit.add_metric([d["commit"]], 1.0)
        yield commit
        yield GaugeMetricFamily("gemseg_index_loaded_timestamp_seconds", "when the state served was opened",
                                value=d["loaded_at"])
        reloads = CounterMetricFamily("gemseg_index_reloads", "new index states opened", labels=["result"])
        for result, n in sorted(d["reloads"].items()):
            reloads.add_metric([result], n)
        yield reloads


class ServerMetrics:
    """The metrics of one application (module docstring); ``info`` gives the index gauges."""

    def __init__(self, info: Callable[[], Dict[str, Any]]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("gemseg_requests", "HTTP requests by route and status", ["route", "status"],
                                registry=self.registry)
        self.latency = Histogram("gemseg_request_seconds", "request wall time by route", ["route"],
                                 buckets=BUCKETS, registry=self.registry)
        self.stages = Histogram("gemseg_stage_seconds", "time per stage of a search", ["stage"],
                                buckets=BUCKETS, registry=self.registry)
        self.refused = Counter("gemseg_uploads_refused", "uploads refused by reason", ["reason"],
                               registry=self.registry)
        self.registry.register(_IndexCollector(info))

    def request(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def stage_times(self, stages: Dict[str, float]) -> None:
        """``{stage: milliseconds}`` (a search answer's ``stages``) observed."""
        for stage, ms in stages.items():
            self.stages.labels(stage).observe(ms / 1000.0)

    def refuse(self, reason: str) -> None:
        self.refused.labels(reason).inc()

    def exposition(self) -> Tuple[bytes, str]:
        """The text format and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def route_of(path: str, routes: Iterable[Tuple[str, str]]) -> str:
    """The route pattern of ``path`` among ``routes`` = ``[(path, pattern)]`` (a pattern with a
    ``{parameter}`` matches every path under its key), or ``"other"``: a label of bounded cardinality."""
    for key, pattern in routes:
        if path == key or ("{" in pattern and path.startswith(key)):
            return pattern
    return "other"
