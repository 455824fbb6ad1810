"""retrieval.serve.metrics: the exposition parses with Prometheus' own parser, counters and
histograms move by what was recorded, index gauges are read at scrape time, routes are bounded."""
from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from retrieval.serve.metrics import ServerMetrics, refusal_reason, route_of


def _samples(m: ServerMetrics):
    body, ctype = m.exposition()
    assert ctype.startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(body.decode()) for s in fam.samples}


def test_counters_histograms_and_index_gauges():
    info = {"images": 7, "live_images": 5, "commit": "abc123def456", "loaded_at": 1700000000.5,
            "reloads": {"ok": 2, "failed": 1}}
    m = ServerMetrics(lambda: info)
    m.request("/api/search", 200, 0.004)
    m.request("/api/search", 200, 0.2)
    m.request("/api/search", 422, 0.001)
    m.stage_times({"search": 3.0, "rerank:qe": 40.0})
    m.refuse("too_large")
    s = _samples(m)
    assert s[("gemseg_requests_total", (("route", "/api/search"), ("status", "200")))] == 2
    assert s[("gemseg_requests_total", (("route", "/api/search"), ("status", "422")))] == 1
    assert s[("gemseg_request_seconds_count", (("route", "/api/search"),))] == 3
    assert s[("gemseg_request_seconds_bucket", (("le", "0.005"), ("route", "/api/search")))] == 2
    assert abs(s[("gemseg_request_seconds_sum", (("route", "/api/search"),))] - 0.205) < 1e-9
    assert s[("gemseg_stage_seconds_bucket", (("le", "0.05"), ("stage", "rerank:qe")))] == 1
    assert s[("gemseg_stage_seconds_bucket", (("le", "0.025"), ("stage", "rerank:qe")))] == 0
    assert s[("gemseg_uploads_refused_total", (("reason", "too_large"),))] == 1
    assert s[("gemseg_index_images", ())] == 7 and s[("gemseg_index_live_images", ())] == 5
    assert s[("gemseg_index_commit_info", (("commit", "abc123def456"),))] == 1
    assert s[("gemseg_index_reloads_total", (("result", "failed"),))] == 1
    info.update(images=9, commit="ffffffffffff")  # read again at each scrape
    s = _samples(m)
    assert s[("gemseg_index_images", ())] == 9 and (("commit", "ffffffffffff"),) in {
        k[1] for k in s if k[0] == "gemseg_index_commit_info"}


def test_two_apps_do_not_share_counters():
    info = {"images": 1, "live_images": 1, "commit": "x", "loaded_at": 0.0, "reloads": {}}
    a, b = ServerMetrics(lambda: info), ServerMetrics(lambda: info)
    a.request("/healthz", 200, 0.001)
    assert ("gemseg_requests_total", (("route", "/healthz"), ("status", "200"))) not in _samples(b)


def test_route_labels_are_bounded_and_reasons_named():
    routes = (("/", "/"), ("/api/info", "/api/info"), ("/api/images/", "/api/images/{id}"))
    assert route_of("/", routes) == "/" and route_of("/api/search", routes) == "other"
    assert route_of("/api/images/17", routes) == "/api/images/{id}"
    assert route_of("/api/info", routes) == "/api/info"
    assert route_of("/api/info/x", routes) == "other" and route_of("/../etc/passwd", routes) == "other"
    assert refusal_reason("x.jpg: empty upload") == "empty"
    assert refusal_reason("x.jpg: image too large: 1x2 = 2 pixels ... (decompression bomb guard)") == "too_many_pixels"
    assert refusal_reason("x.jpg: not an image (cannot identify format)") == "not_image"
    assert refusal_reason("x.jpg: image file is truncated") == "corrupt"
