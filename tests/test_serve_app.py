"""retrieval.serve.app: the HTTP API in process (FastAPI's test client): every endpoint, every bad input, path
traversal, and hits equal to ``search_images`` / ``tools/search.py --json`` for the same image and box."""
from __future__ import annotations

import base64
import io
import json
import shutil
import struct
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from conftest import TINY_CONFIG, random_images  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from retrieval.jobs import run_index  # noqa: E402
from retrieval.loading import search_model  # noqa: E402
from retrieval.search.collection import search_images  # noqa: E402
from retrieval.search.index import ImageIndex  # noqa: E402
from retrieval.search.rerank.step import Reranker  # noqa: E402
from retrieval.serve.app import create_app  # noqa: E402
from retrieval.serve.service import SearchService  # noqa: E402

N = 8


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A tiny index (random-init ResNet-18 at 64 px), its service and a client of its app."""
    root = tmp_path_factory.mktemp("serve")
    (root / "tiny.yaml").write_text(TINY_CONFIG)
    paths = random_images(root / "images", N, size=(48, 64))
    run_index(root / "images", root / "index", config=root / "tiny.yaml", progress=False)
    svc = SearchService.open(root / "index", coseg_size=128)
    client = TestClient(create_app(service=svc))
    return {"root": root, "paths": paths, "service": svc, "client": client, "index": root / "index"}


def _upload(path: Path, name: str = "q.jpg"):
    return {"image": (name, path.read_bytes(), "image/jpeg")}


def _ok(client):
    """The server still answers a good request."""
    r = client.post("/api/search", data={"id": "0", "top": "2"})
    assert r.status_code == 200 and len(r.json()["hits"]) == 2


def _one_line_error(r, status: int, *needles: str) -> None:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert list(body) == ["error"] and "\n" not in body["error"] and body["error"], body
    for n in needles:
        assert n.lower() in body["error"].lower(), (n, body)


@pytest.mark.slow
def test_info_describes_the_index_and_its_model(served):
    info = served["client"].get("/api/info").json()
    idx = ImageIndex.load(served["index"])
    assert info["images"] == N and info["dim"] == idx.dim == 512 and info["factory"] == "Flat"
    assert info["fingerprint"] == idx.fingerprint == search_model(idx).fingerprint()
    assert "resnet18" in info["model"]


def _reference(served, query: Path, top: int, box=None):
    idx = ImageIndex.load(served["index"])
    return search_images(search_model(idx), idx, [query], top, boxes=[box])[0]["hits"]


def _same_hits(api_hits, ref_hits, paths_of_ids):
    assert [h["rank"] for h in api_hits] == list(range(1, len(ref_hits) + 1))
    assert [h["path"] for h in api_hits] == [h["path"] for h in ref_hits]
    assert [paths_of_ids[h["id"]] for h in api_hits] == [h["path"] for h in ref_hits]
    np.testing.assert_allclose([h["score"] for h in api_hits], [h["score"] for h in ref_hits], atol=1e-4)


@pytest.mark.slow
def test_search_by_upload_with_a_box_equals_search_images(served):
    q = served["paths"][3]
    box = (6, 4, 50, 40)
    r = served["client"].post("/api/search", files=_upload(q, "mine.jpg"),
                              data={"top": "5", "box": ",".join(map(str, box))})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["query"] == "mine.jpg" and doc["query_id"] is None and doc["size"] == [64, 48]
    assert doc["box"] == list(box) and doc["ms"] > 0
    ref = _reference(served, q, 5, box)
    _same_hits(doc["hits"], ref, served["service"].index.paths)
    # the box matters: the whole image ranks differently or scores differently
    whole = served["client"].post("/api/search", files=_upload(q), data={"top": "5"}).json()["hits"]
    assert [h["score"] for h in whole] != [h["score"] for h in doc["hits"]]
    _same_hits(whole, _reference(served, q, 5), served["service"].index.paths)


@pytest.mark.slow
def test_search_by_id_equals_the_search_tool(served, run_tool):
    svc = served["service"]
    i = 5
    for extra, cli in (([], []), ([("qe", "2"), ("alpha", "3")], ["--qe", "2", "--alpha", "3"])):
        doc = served["client"].post("/api/search", data=dict([("id", str(i)), ("top", "4")] + extra)).json()
        proc = run_tool("search", "--query", svc.index.paths[i], "--index", served["index"], "--top", "4",
                        "--json", *cli)
        assert proc.returncode == 0, proc.stderr
        ref = json.loads(proc.stdout)["results"][0]["hits"]
        _same_hits(doc["hits"], ref, svc.index.paths)
        assert doc["query_id"] == i and doc["query"] == svc.index.paths[i]
    assert doc["hits"][0]["id"] == i  # an indexed image finds itself first


def test_thumbnails_of_indexed_images_only(served):
    c = served["client"]
    r = c.get("/api/images/2?size=32")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert r.headers["cache-control"] == "no-cache"  # an id may name another image after a compaction
    assert Image.open(io.BytesIO(r.content)).size == (32, 24)
    assert Image.open(io.BytesIO(c.get("/api/images/2").content)).size == (64, 48)  # never enlarged
    secret = served["root"] / "secret.jpg"
    Image.new("RGB", (8, 8)).save(secret)
    for bad in (str(N), "-1", "1.0", "0x1", "１", "abc", "../images/img000.jpg", "..%2F..%2Fetc%2Fpasswd",
                "%2Fetc%2Fpasswd", str(secret), "0%2F..%2F1", "1/2", "img000.jpg", "99999999999999999999"):
        _one_line_error(c.get(f"/api/images/{bad}"), 404)
    for size in ("0", "15", "1025", "x"):
        _one_line_error(c.get(f"/api/images/1?size={size}"), 422, "size")
    _ok(c)


@pytest.mark.parametrize("data, needle", [
    ({"id": "1", "top": "0"}, "top"),
    ({"id": "1", "top": "1001"}, "top"),
    ({"id": "1", "top": "x"}, "top"),
    ({"id": "1", "box": "0,0,65,10"}, "box"),
    ({"id": "1", "box": "-1,0,10,10"}, "box"),
    ({"id": "1", "box": "10,10,5,20"}, "box"),
    ({"id": "1", "box": "1,2,3"}, "box"),
    ({"id": "1", "box": "a,b,c,d"}, "box"),
    ({"id": "1", "box": "1,1,nan,9"}, "box"),
    ({"id": "1", "box": "1,1,1.2,9"}, "box"),
    ({"id": "1", "qe": "-1"}, "qe"),
    ({"id": "1", "alpha": "-2"}, "alpha"),
    ({"id": "1", "nprobe": "0"}, "nprobe"),
    ({}, "exactly one"),
])
def test_bad_parameters_are_422(served, data, needle):
    _one_line_error(served["client"].post("/api/search", data=data), 422, needle)
    _ok(served["client"])


def test_unknown_ids_and_both_queries(served):
    c = served["client"]
    for bad in ("8", "../../etc/passwd", "/etc/passwd", "-3"):
        _one_line_error(c.post("/api/search", data={"id": bad}), 404, "id")
    _one_line_error(c.post("/api/search", files=_upload(served["paths"][0]), data={"id": "1"}), 422, "exactly one")
    _one_line_error(c.get("/api/nothing"), 404)
    _ok(c)


def _bomb_png(w: int, h: int) -> bytes:
    """A PNG whose header announces w×h pixels, with almost no data (never decodable in full)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_bad_uploads_are_400_and_the_server_keeps_serving(served):
    c = served["client"]
    good = served["paths"][0].read_bytes()
    cases = [(b"not an image at all", "not an image"), (b"", "empty"), (good[: len(good) // 2], "corrupt"),
             (_bomb_png(100_000, 100_000), "too large"), (_bomb_png(12_000, 9_000), "too large")]
    for data, needle in cases:
        _one_line_error(c.post("/api/search", files={"image": ("x.jpg", data, "image/jpeg")}), 400, needle)
        _ok(c)
    strict = TestClient(create_app(service=served["service"], max_pixels=1000))  # 64×48 = 3072 pixels
    _one_line_error(strict.post("/api/search", files=_upload(served["paths"][0])), 400, "decompression bomb")


@pytest.mark.slow
def test_uploads_over_the_limit_are_413(served):
    c = TestClient(create_app(service=served["service"], max_upload_mb=0.05))
    big = np.random.default_rng(0).integers(0, 256, (300, 300, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(big).save(buf, format="PNG")
    assert len(buf.getvalue()) > 0.05 * 2 ** 20 + 64 * 1024
    _one_line_error(c.post("/api/search", files={"image": ("big.png", buf.getvalue(), "image/png")}), 413, "limit")

    def chunks():  # no Content-Length: the limit is counted while the body streams in
        yield b"--b\r\nContent-Disposition: form-data; name=\"image\"; filename=\"x.png\"\r\n\r\n"
        for _ in range(40):
            yield b"\0" * 4096
    r = c.post("/api/search", content=chunks(), headers={"content-type": "multipart/form-data; boundary=b"})
    _one_line_error(r, 413, "limit")
    _ok(c)


def test_a_body_whose_last_part_crosses_the_limit_is_answered_without_draining(served, monkeypatch):
    """A streamed body that passes the limit in its last part has nothing left to discard: waiting
    for more would hold the 413 for DRAIN_SECONDS (it did: the app waited for a part never sent)."""
    from retrieval.serve import app as app_module
    drained = []

    async def no_drain(receive, *a, **k):
        drained.append(True)
        return True

    monkeypatch.setattr(app_module, "drain", no_drain)
    c = TestClient(create_app(service=served["service"], max_upload_mb=0.05))

    def one_part():  # no Content-Length; the whole body is one part, over the limit
        yield b"--b\r\nContent-Disposition: form-data; name=\"image\"; filename=\"x.png\"\r\n\r\n" + b"\0" * 200_000
    r = c.post("/api/search", content=one_part(), headers={"content-type": "multipart/form-data; boundary=b"})
    _one_line_error(r, 413, "limit")
    assert drained == [] and r.headers.get("connection") != "close"
    _ok(c)


def test_coseg_of_indexed_images_and_an_upload(served):
    c = served["client"]
    r = c.post("/api/coseg", json={"ids": [0, 1, 2], "k": 2})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert [im["id"] for im in doc["images"]] == [0, 1, 2] and doc["k"] == 2 and doc["layer"] == "layer4"
    assert doc["object_factors"] and all(0 <= j < 2 for j in doc["object_factors"])
    for im in doc["images"]:
        overlay = Image.open(io.BytesIO(_png(im["overlay"])))
        mask = np.asarray(Image.open(io.BytesIO(_png(im["mask"]))))
        assert overlay.size == (64, 48) and overlay.mode == "RGB"
        assert mask.shape == (48, 64) and set(np.unique(mask)) <= {0, 255}
    r = c.post("/api/coseg", files=_upload(served["paths"][4], "mine.jpg"), data={"ids": "0,1", "k": "2"})
    assert r.status_code == 200, r.text
    assert [(im["id"], im["name"]) for im in r.json()["images"]][0] == (None, "mine.jpg")
    assert [im["id"] for im in r.json()["images"]][1:] == [0, 1]


def _png(data_url: str) -> bytes:
    head, b64 = data_url.split(",", 1)
    assert head == "data:image/png;base64"
    return base64.b64decode(b64)


def test_coseg_bad_requests(served):
    c = served["client"]
    _one_line_error(c.post("/api/coseg", json={"ids": [0, 1], "k": 0}), 422, "k")
    _one_line_error(c.post("/api/coseg", json={"ids": [0, 1], "k": "3"}), 422)
    _one_line_error(c.post("/api/coseg", json={"ids": "0,1", "k": 2}), 422, "ids")
    _one_line_error(c.post("/api/coseg", json={"ids": [], "k": 2}), 422, "images")
    _one_line_error(c.post("/api/coseg", json={"ids": list(range(N)) * 2, "k": 2}), 422, "images")
    _one_line_error(c.post("/api/coseg", json={"ids": [0, "../../etc/passwd"], "k": 2}), 404)
    _one_line_error(c.post("/api/coseg", content=b"{nope", headers={"content-type": "application/json"}), 422, "json")
    _one_line_error(c.post("/api/coseg", files={"image": ("x.jpg", b"junk", "image/jpeg")}, data={"ids": "0"}), 400)
    _one_line_error(c.post("/api/coseg", content=b"ids=1", headers={"content-type": "text/plain"}), 422)
    _ok(c)


def test_the_page_is_served_by_the_server_itself(served):
    c = served["client"]
    r = c.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in r.headers["content-security-policy"]
    assert 'src="/app.js"' in r.text and 'href="/style.css"' in r.text
    for name in ("/", "/app.js", "/style.css"):
        assert "://" not in c.get(name).text  # no CDN: nothing is loaded from elsewhere
    assert c.get("/app.js").headers["content-type"].startswith("text/javascript")


def test_approximate_index_nprobe_is_per_request(served, tmp_path):
    """On an IVF index a request's nprobe changes its own search only."""
    idx = ImageIndex.load(served["index"])
    ivf = ImageIndex(idx.dim, "IVF4,Flat", idx.model_config, idx.fingerprint)
    ivf.add(idx.descriptors(), idx.paths)
    ivf.save(tmp_path / "ivf")
    c = TestClient(create_app(tmp_path / "ivf"))
    svc_ivf = ImageIndex.load(tmp_path / "ivf")
    q = idx.descriptors()[3]
    for nprobe in (1, 4, None):
        doc = c.post("/api/search", data={"id": "3", "top": "8", **({"nprobe": str(nprobe)} if nprobe else {})}).json()
        scores, ids = svc_ivf.search(q, 8, nprobe=nprobe or 1)
        assert [h["id"] for h in doc["hits"]] == [int(i) for i in ids[0] if i >= 0]
    assert len(c.post("/api/search", data={"id": "3", "top": "8", "nprobe": "4"}).json()["hits"]) == 8
    assert len(c.post("/api/search", data={"id": "3", "top": "8"}).json()["hits"]) == len(
        [i for i in svc_ivf.search(q, 8, nprobe=1)[1][0] if i >= 0])  # default restored


# -- queries without a forward pass: by vector (JSON), by id (JSON), the vectors returned ----------------
@pytest.mark.slow
def test_search_by_vector_equals_the_search_tool_by_id(served, run_tool):
    """A stored row sent as a JSON vector finds what ``tools/search.py --query-id`` finds."""
    svc, c = served["service"], served["client"]
    idx = ImageIndex.load(served["index"])
    for i in (2, 6):
        row = idx.descriptors()[i].astype(float).tolist()
        doc = c.post("/api/search", json={"vector": row, "top": 5}).json()
        proc = run_tool("search", "--query-id", str(i), "--index", served["index"], "--top", "5", "--json")
        assert proc.returncode == 0, proc.stderr
        ref = json.loads(proc.stdout)["results"][0]["hits"]
        _same_hits(doc["hits"], ref, svc.index.paths)
        assert doc["query_id"] is None and doc["size"] is None and doc["hits"][0]["id"] == i
        by_id = c.post("/api/search", json={"id": i, "top": 5}).json()
        assert [h["id"] for h in by_id["hits"]] == [h["id"] for h in doc["hits"]]
        np.testing.assert_allclose([h["score"] for h in by_id["hits"]], [h["score"] for h in doc["hits"]], atol=1e-6)
    # a vector of any length is normalised first: 3 × the row is the same query
    tripled = c.post("/api/search", json={"vector": [3 * v for v in row], "top": 5}).json()
    assert [h["id"] for h in tripled["hits"]] == [h["id"] for h in doc["hits"]]
    assert "lookup" in doc["stages"] and "search" in doc["stages"] and "forward" not in doc["stages"]


def test_return_vectors_gives_the_query_s_and_the_hits_descriptors(served):
    c = served["client"]
    idx = ImageIndex.load(served["index"])
    X = idx.descriptors()
    doc = c.post("/api/search", data={"id": "3", "top": "4", "return_vectors": "true"}).json()
    np.testing.assert_array_equal(np.asarray(doc["query_vector"], np.float32), X[3])
    for h in doc["hits"]:
        np.testing.assert_array_equal(np.asarray(h["vector"], np.float32), X[h["id"]])
        assert abs(float(np.dot(X[3], X[h["id"]])) - h["score"]) < 1e-5  # the score is the inner product
    up = c.post("/api/search", files=_upload(served["paths"][3]), data={"top": "2", "return_vectors": "1"}).json()
    q = np.asarray(up["query_vector"], np.float32)
    assert q.shape == (512,) and abs(np.linalg.norm(q) - 1) < 1e-5
    assert abs(float(q @ np.asarray(up["hits"][0]["vector"], np.float32)) - up["hits"][0]["score"]) < 1e-4
    # sent back as a vector, the upload's descriptor gives the upload's hits
    again = c.post("/api/search", json={"vector": up["query_vector"], "top": 2}).json()
    assert [h["id"] for h in again["hits"]] == [h["id"] for h in up["hits"]]
    assert "vector" not in c.post("/api/search", json={"id": 3, "top": 2}).json()["hits"][0]


@pytest.mark.parametrize("body, needle", [
    ({"vector": [0.1] * 511}, "511 values"),
    ({"vector": [0.1] * 513}, "513 values"),
    ({"vector": []}, "0 values"),
    ({"vector": [0.0] * 512}, "zeros"),
    ({"vector": [1e39] + [0.0] * 511}, "finite"),
    ({"vector": "0.1,0.2"}, "list"),
    ({"vector": [[0.1] * 512]}, "list"),
    ({"vector": [True] * 512}, "list"),
    ({"vector": [0.1] * 512, "box": [0, 0, 4, 4]}, "box"),
    ({"vector": [0.1] * 512, "id": 1}, "exactly one"),
    ({"vector": [0.1] * 512, "top": "x"}, "top"),
    ({"vector": [0.1] * 512, "top": True}, "top"),
    ({"vector": [0.1] * 512, "topk": 3}, "unknown field 'topk'"),
    ({"id": [1]}, "id"),
    ({"id": 1, "return_vectors": "maybe"}, "return_vectors"),
])
def test_bad_vector_queries_are_422(served, body, needle):
    _one_line_error(served["client"].post("/api/search", json=body), 422, needle)
    _ok(served["client"])


def test_non_finite_json_values_are_422(served):
    """Python's json reads NaN and Infinity: refused as values, not searched."""
    c = served["client"]
    for token in ("NaN", "Infinity", "-Infinity"):
        body = '{"vector": [' + ",".join([token] + ["0.1"] * 511) + "]}"
        _one_line_error(c.post("/api/search", content=body, headers={"content-type": "application/json"}),
                        422, "finite")
    _one_line_error(c.post("/api/search", content=b"[1, 2", headers={"content-type": "application/json"}), 422, "json")
    _one_line_error(c.post("/api/search", content=b"[1, 2]", headers={"content-type": "application/json"}), 422, "object")
    _one_line_error(c.post("/api/search", content=b"id=1", headers={"content-type": "text/plain"}), 422, "json")
    _one_line_error(c.post("/api/search", json={"id": 99}), 404, "id")
    _ok(c)


# -- probes, metrics, token ---------------------------------------------------------------------------------
def _metric_samples(text: str):
    from prometheus_client.parser import text_string_to_metric_families
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_probes_and_metrics_move_by_what_was_sent(served):
    c = TestClient(create_app(service=served["service"], max_upload_mb=0.05))
    assert c.get("/healthz").json() == {"status": "ok"}
    ready = c.get("/readyz")
    assert ready.status_code == 200 and ready.json() == {"ready": True, "commit": served["service"].info()["commit"]}
    before = _metric_samples(c.get("/metrics").text)
    assert c.get("/metrics").headers["content-type"].startswith("text/plain")
    for _ in range(3):
        assert c.post("/api/search", data={"id": "1", "top": "2"}).status_code == 200
    assert c.post("/api/search", json={"vector": [0.0] * 512}).status_code == 422
    assert c.post("/api/search", files={"image": ("x.jpg", b"nope", "image/jpeg")}).status_code == 400
    assert c.post("/api/search", files=_upload(served["paths"][2]), data={"top": "2"}).status_code == 200
    assert c.post("/api/search", content=b"\0" * 200_000,
                  headers={"content-type": "multipart/form-data; boundary=b"}).status_code == 413
    assert c.get("/api/images/1?size=32").status_code == 200
    assert c.get("/api/images/999").status_code == 404
    after = _metric_samples(c.get("/metrics").text)

    def moved(name, **labels):
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0) - before.get(key, 0)

    assert moved("gemseg_requests_total", route="/api/search", status="200") == 4
    assert moved("gemseg_requests_total", route="/api/search", status="422") == 1
    assert moved("gemseg_requests_total", route="/api/search", status="400") == 1
    assert moved("gemseg_requests_total", route="/api/search", status="413") == 1
    assert moved("gemseg_requests_total", route="/api/images/{id}", status="200") == 1
    assert moved("gemseg_requests_total", route="/api/images/{id}", status="404") == 1
    assert moved("gemseg_requests_total", route="/metrics", status="200") == 2
    assert moved("gemseg_request_seconds_count", route="/api/search") == 7
    assert moved("gemseg_stage_seconds_count", stage="lookup") == 3
    assert moved("gemseg_stage_seconds_count", stage="search") == 4
    assert moved("gemseg_stage_seconds_count", stage="forward") == 1
    assert moved("gemseg_stage_seconds_count", stage="decode") == 1
    assert moved("gemseg_uploads_refused_total", reason="not_image") == 1
    assert moved("gemseg_uploads_refused_total", reason="too_large") == 1
    assert after[("gemseg_index_images", ())] == N
    assert after[("gemseg_index_commit_info", (("commit", served["service"].info()["commit"]),))] == 1


def test_a_rerank_step_is_timed_as_its_own_stage(served):
    c = TestClient(create_app(service=served["service"]))
    doc = c.post("/api/search", data={"id": "2", "top": "3", "rerank": "qe:k=2"}).json()
    assert doc["rerank"] and set(doc["stages"]) == {"lookup", "search", "rerank:qe"}
    s = _metric_samples(c.get("/metrics").text)
    assert s[("gemseg_stage_seconds_count", (("stage", "rerank:qe"),))] == 1


TOKEN = "tok-0123456789abcdef"


def test_a_token_guards_every_data_route(served):
    c = TestClient(create_app(service=served["service"], token=TOKEN))
    good = {"Authorization": f"Bearer {TOKEN}"}
    for bad in ({}, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": TOKEN},
                {"Authorization": f"Basic {TOKEN}"}):
        for method, path in (("get", "/api/info"), ("get", "/api/images/1"), ("get", "/metrics"),
                             ("post", "/api/search"), ("post", "/api/coseg"), ("get", "/api/nothing")):
            r = getattr(c, method)(path, headers=bad)
            _one_line_error(r, 401, "token")
            assert r.headers["www-authenticate"].startswith("Bearer")
    r = c.post("/api/search", files=_upload(served["paths"][1]), data={"top": "2"})  # an upload, no token
    _one_line_error(r, 401, "token")
    for path in ("/healthz", "/readyz", "/", "/app.js", "/style.css"):
        assert c.get(path).status_code == 200, path
    assert c.get("/api/info", headers=good).json()["token_required"] is True
    assert c.post("/api/search", data={"id": "1", "top": "2"}, headers=good).status_code == 200
    assert c.get("/api/images/1?size=32", headers=good).status_code == 200
    assert c.get("/metrics", headers=good).status_code == 200
    assert TestClient(create_app(service=served["service"])).get("/api/info").json()["token_required"] is False


def test_removed_ids_are_not_found(served, tmp_path):
    """A pruned image: never a hit, its id not found for search, thumbnail and co-segmentation."""
    idx = ImageIndex.load(served["index"])
    mine = ImageIndex(idx.dim, "Flat", idx.model_config, idx.fingerprint)
    mine.add(idx.descriptors(), list(idx.paths))
    mine.remove([4])
    mine.save(tmp_path / "ix")
    c = TestClient(create_app(tmp_path / "ix", reload_interval=0))
    hits = c.post("/api/search", data={"id": "3", "top": str(N)}).json()["hits"]
    assert 4 not in [h["id"] for h in hits] and len(hits) == N - 1
    _one_line_error(c.post("/api/search", data={"id": "4"}), 404, "removed")
    _one_line_error(c.get("/api/images/4"), 404, "removed")
    _one_line_error(c.post("/api/coseg", json={"ids": [3, 4], "k": 2}), 404, "removed")
    info = c.get("/api/info").json()
    assert info["images"] == N and info["live_images"] == N - 1


# -- the page in a real browser, against a real server (uvicorn on 127.0.0.1 in a thread) ------------------
CHROMIUM = Path("/usr/bin/chromium")


@dataclass
class _MatchParams:
    n: int = 3


class _FakeVerifier(Reranker):
    """A stand-in for the spatial verification step: keeps the order, marks each hit with
    ``inliers`` and ``matches`` (query corners → hit corners, in each image's pixels)."""

    name = "fakesv"
    summary = "test double of sv"
    Params = _MatchParams

    def rerank(self, ctx, ids, scores):
        for q in range(ids.shape[0]):
            for i in ids[q]:
                if i >= 0:
                    ctx.annotate(q, int(i), inliers=self.params.n,
                                 matches=[[2.0, 2.0, 3.0, 3.0], [60.0, 4.0, 58.0, 6.0], [30.0, 44.0, 31.0, 40.0]][: self.params.n])
        return ids, scores


@pytest.fixture(scope="module")
def page_server(served, tmp_path_factory):
    """``(url, index paths, folder)``: a token, a 0.2 MiB limit, an index over copies of the images
    whose last file is then deleted (a hit with ``missing``), the fake verifier registered."""
    import uvicorn

    from retrieval.search.rerank.registry import register_reranker, unregister_reranker
    from retrieval.serve.server import bind

    root = tmp_path_factory.mktemp("page")
    idx = ImageIndex.load(served["index"])
    (root / "photos").mkdir()
    copies = [shutil.copy(p, root / "photos") for p in idx.paths]
    mine = ImageIndex(idx.dim, "Flat", idx.model_config, idx.fingerprint)
    mine.add(idx.descriptors(), copies)
    mine.save(root / "ix")
    Path(copies[-1]).unlink()
    register_reranker(_FakeVerifier)
    app = create_app(root / "ix", token=TOKEN, max_upload_mb=0.2, reload_interval=0)
    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}", copies, root
    server.should_exit = True
    thread.join(20)
    unregister_reranker("fakesv")


def _browser_page(pw):
    browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    return browser, page, errors


def _hit_ids(page):
    return page.eval_on_selector_all("#hits figure", "els => els.map(e => Number(e.dataset.id))")


@pytest.mark.slow
def test_the_page_with_a_token_errors_missing_files_heic_legend_and_matches(page_server, served, tmp_path):
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed at /usr/bin/chromium")
    sync_api = pytest.importorskip("playwright.sync_api")
    url, copies, root = page_server
    auth = {"Authorization": f"Bearer {TOKEN}"}
    import httpx
    with sync_api.sync_playwright() as pw:
        browser, page, errors = _browser_page(pw)
        page.goto(url)
        # 401 → the page asks for the token once; a wrong one is refused, the right one kept for the tab
        page.wait_for_selector("#token-panel:not([hidden])")
        page.fill("#token", "wrong-token-0123456789")
        page.click("#token-form button")
        page.wait_for_function("() => document.getElementById('token-message').textContent.includes('refused')")
        page.fill("#token", TOKEN)
        page.click("#token-form button")
        page.wait_for_function("() => document.getElementById('info').textContent.includes('images')")
        assert page.evaluate("() => sessionStorage.getItem('gemseg-token')") == TOKEN

        # a good upload: hits as the API's; the missing file is marked and has no thumbnail
        with page.expect_response(lambda r: r.url.endswith("/api/search")):
            page.set_input_files("#file", str(copies[0]))
        page.wait_for_selector("#hits figure")
        api = httpx.post(f"{url}/api/search", headers=auth, timeout=60, data={"top": "12"},
                         files={"image": (Path(copies[0]).name, Path(copies[0]).read_bytes(), "image/jpeg")}).json()
        assert _hit_ids(page) == [h["id"] for h in api["hits"]]
        gone = N - 1
        assert [h["missing"] for h in api["hits"] if h["id"] == gone] == [True]
        fig = page.locator(f"#hits figure[data-id='{gone}']")
        assert fig.get_attribute("class").split().count("missing") == 1 and fig.locator("img").count() == 0
        assert "file missing" in fig.inner_text()
        page.wait_for_function("() => [...document.querySelectorAll('#hits img')].every(i => i.complete && i.naturalWidth > 0)")
        assert page.evaluate("() => document.getElementById('share').disabled") is False

        # co-segmentation: a colour legend with the factors, the object factors marked
        with page.expect_response(lambda r: r.url.endswith("/api/coseg"), timeout=180_000):
            page.click("#share")
        page.wait_for_selector("#coseg-legend .swatch")
        legend = page.eval_on_selector_all("#coseg-legend .swatch", "els => els.map(e => e.textContent)")
        assert len(legend) == 3 and any("(object)" in t for t in legend)
        colours = page.eval_on_selector_all("#coseg-legend .swatch i", "els => els.map(e => getComputedStyle(e).backgroundColor)")
        assert len(set(colours)) == 3

        # a failed upload (400: not an image): the old hits are gone, the error shown, nothing to share
        bad = tmp_path / "notes.txt"
        bad.write_text("not an image")
        with page.expect_response(lambda r: r.url.endswith("/api/search")):
            page.set_input_files("#file", str(bad))
        page.wait_for_selector("#results-error")
        assert page.locator("#hits figure").count() == 0
        assert "not an image" in page.text_content("#results-error")
        assert page.evaluate("() => document.getElementById('share').disabled") is True
        assert page.locator("#coseg figure").count() == 0

        # over the limit: refused before sending, naming the limit (and no request made)
        big = tmp_path / "big.png"
        big.write_bytes(b"\x89PNG" + b"\0" * 300_000)
        sent = []
        page.on("request", lambda r: sent.append(r.url) if r.url.endswith("/api/search") else None)
        with page.expect_response(lambda r: r.url.endswith("/api/search")):
            page.set_input_files("#file", str(copies[1]))  # a good query first: hits again
        page.wait_for_selector("#hits figure")
        sent.clear()
        page.set_input_files("#file", str(big))
        page.wait_for_selector("#results-error")
        assert "0.2 MiB" in page.text_content("#results-error") and page.locator("#hits figure").count() == 0
        assert page.evaluate("() => document.getElementById('share').disabled") is True and sent == []
        # and the browser itself reads the server's 413 (sent anyway, by fetch)
        status, body = page.evaluate("""async (t) => {
            const f = new FormData(); f.append('image', new Blob([new Uint8Array(2 * 2 ** 20)]), 'x.png');
            const r = await fetch('/api/search', {method: 'POST', body: f, headers: {Authorization: 'Bearer ' + t}});
            return [r.status, await r.json()]; }""", TOKEN)
        assert status == 413 and "limit of 0.2 MiB" in body["error"]

        # HEIC: the browser cannot decode it; the page shows the server's decoded JPEG
        heic = tmp_path / "photo.heic"
        Image.open(copies[2]).save(heic, quality=90)
        with page.expect_response(lambda r: r.url.endswith("/api/search")):
            page.set_input_files("#file", str(heic))
        page.wait_for_function("() => document.getElementById('query-img').src.startsWith('data:image/jpeg')")
        page.wait_for_function("() => document.getElementById('query-img').naturalWidth > 0")
        assert page.evaluate("() => [document.getElementById('query-img').naturalWidth, "
                             "document.getElementById('query-img').naturalHeight]") == [64, 48]

        # why did it match: a hit with matches gets the lines view
        with page.expect_response(lambda r: r.url.endswith("/api/search")):
            page.fill("#rerank", "fakesv")
            page.press("#rerank", "Enter")
        page.wait_for_selector("#hits figure .why")
        first = _hit_ids(page)[0]
        page.click(f"#hits figure[data-id='{first}'] .why")
        page.wait_for_selector("#why:not([hidden])")
        assert "3 inlier matches" in page.text_content("#why-text")
        drawn = page.evaluate("""() => { const c = document.getElementById('why-canvas');
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let n = 0; for (let i = 3; i < d.length; i += 4) n += d[i] > 0; return [c.width, c.height, n]; }""")
        assert drawn[1] == 240 and drawn[0] > 240 and drawn[2] > 0.9 * drawn[0] * drawn[1]
        assert "re-ranked: fakesv" in page.text_content("#status")
        assert not errors, errors
        browser.close()


def test_hits_with_matches_carry_their_size(page_server):
    import httpx
    url, copies, _ = page_server
    doc = httpx.post(f"{url}/api/search", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60,
                     data={"id": "0", "top": "3", "rerank": "fakesv:n=2"}).json()
    assert doc["rerank"] == ["fakesv:n=2"]
    for h in doc["hits"]:
        assert h["inliers"] == 2 and h["matches"] == [[2.0, 2.0, 3.0, 3.0], [60.0, 4.0, 58.0, 6.0]]
        assert h["size"] == [64, 48]


# -- re-ranking through the API, from the one query path; co-segmentation boxes in image pixels -------------
@pytest.mark.slow
def test_coseg_rerank_through_the_api_equals_the_search_tool(served, run_tool):
    svc, c = served["service"], served["client"]
    steps = "coseg:K=4:k=2"
    doc = c.post("/api/search", data={"id": "2", "top": "4", "rerank": steps}).json()
    assert doc["rerank"] == [steps] and "rerank:coseg" in doc["stages"]
    proc = run_tool("search", "--query-id", "2", "--index", served["index"], "--top", "4", "--rerank", steps, "--json")
    assert proc.returncode == 0, proc.stderr
    ref = json.loads(proc.stdout)["results"][0]["hits"]
    _same_hits(doc["hits"], ref, svc.index.paths)
    plain = c.post("/api/search", data={"id": "2", "top": "4"}).json()["hits"]
    assert [h["score"] for h in plain] != [h["score"] for h in doc["hits"]]  # the step did something
    same = c.post("/api/search", json={"id": 2, "top": 4, "rerank": steps}).json()
    assert [h["id"] for h in same["hits"]] == [h["id"] for h in doc["hits"]]
    _one_line_error(c.post("/api/search", data={"id": "2", "rerank": "cosegg"}), 422, "did you mean")
    _one_line_error(c.post("/api/search", json={"vector": [0.1] * 512, "rerank": "coseg"}), 422, "vector")


def test_coseg_boxes_are_in_the_image_s_own_pixels(served):
    """An 880×650 upload: overlays are 320 px wide, the box is in the upload's pixels."""
    c = served["client"]
    big = Image.open(served["paths"][1]).resize((880, 650), Image.BILINEAR)
    buf = io.BytesIO()
    big.save(buf, format="JPEG", quality=90)
    r = c.post("/api/coseg", files={"image": ("big.jpg", buf.getvalue(), "image/jpeg")}, data={"ids": "0,2", "k": "2"})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert len(doc["colours"]) == 2 and all(col.startswith("#") and len(col) == 7 for col in doc["colours"])
    first = doc["images"][0]
    assert first["size"] == [880, 650] and doc["images"][1]["size"] == [64, 48]
    mask = np.asarray(Image.open(io.BytesIO(_png(first["mask"])))) > 0
    assert mask.shape == (236, 320)
    ys, xs = np.nonzero(mask)
    if first["box"] is not None and xs.size:
        x1, y1, x2, y2 = first["box"]
        assert 0 <= x1 < x2 <= 880 and 0 <= y1 < y2 <= 650
        # the mask's box scaled up to the image contains the largest component's box sent back
        assert x1 >= int(np.floor(xs.min() * 880 / 320)) - 1 and x2 <= int(np.ceil((xs.max() + 1) * 880 / 320)) + 1
        assert y1 >= int(np.floor(ys.min() * 650 / 236)) - 1 and y2 <= int(np.ceil((ys.max() + 1) * 650 / 236)) + 1


def test_plain_lookups_are_answered_in_the_event_loop_and_the_rest_in_worker_threads(served, monkeypatch):
    import asyncio

    from retrieval.serve.app import plain_lookup

    svc, where = served["service"], []
    real = svc.search

    def spy(*args, **kwargs):
        try:
            asyncio.get_running_loop()
            where.append(("loop", kwargs.get("batch")))
        except RuntimeError:
            where.append(("worker", kwargs.get("batch")))
        return real(*args, **kwargs)

    monkeypatch.setattr(svc, "search", spy)
    c = served["client"]
    v = [float(x) for x in svc.index.rows(np.array([1]))[0]]
    assert svc.state.quick  # a small exact index
    for req in ({"json": {"id": 1, "top": 2}}, {"json": {"vector": v, "top": 2, "return_vectors": True}},
                {"data": {"id": "1", "top": "2", "qe": "0", "box": ""}}):
        assert c.post("/api/search", **req).status_code == 200
    assert where == [("loop", False)] * 3
    where.clear()
    for req in ({"json": {"id": 1, "top": 2, "qe": 2}}, {"json": {"id": 1, "top": 2, "rerank": "qe:k=2"}},
                {"data": {"id": "1", "box": "0,0,20,20"}}, {"files": _upload(served["paths"][0])}):
        assert c.post("/api/search", **req).status_code == 200, req
    assert where == [("worker", True)] * 4
    where.clear()
    monkeypatch.setattr(type(svc.state), "quick", property(lambda self: False))  # e.g. a large exact index
    assert c.post("/api/search", json={"id": 1, "top": 2}).status_code == 200
    assert where == [("worker", True)]
    assert plain_lookup({"id": "3", "top": "5"}) and not plain_lookup({"id": "3", "nprobe": "4"})
