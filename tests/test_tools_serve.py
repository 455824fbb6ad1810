"""tools/serve.py: a missing index refused in one line; the real server (in its own process, on
127.0.0.1 and a free port): real HTTP requests, concurrent ones, and the page in a real browser
(Debian's chromium driven by playwright).

``GEMSEG_SERVE_INDEX=DIR`` runs these against an existing index instead of a tiny generated one,
``GEMSEG_SERVE_QUERY=FILE`` picks the query the browser uploads (default: the first indexed image)
and ``GEMSEG_SCREENSHOT=FILE`` saves the page's screenshot there (default: the test's tmp folder).
docs/figures/serve_page.png was made that way over the demo's index (see docs/serve.md).
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from conftest import REPO, TINY_CONFIG, random_images  # noqa: E402

from retrieval.jobs import run_index  # noqa: E402
from retrieval.search.index import ImageIndex  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """``(url, index paths, query file)`` of a server started with ``tools/serve.py --port 0``."""
    root = tmp_path_factory.mktemp("live")
    index = os.environ.get("GEMSEG_SERVE_INDEX")
    if not index:
        (root / "tiny.yaml").write_text(TINY_CONFIG)
        random_images(root / "images", 10, size=(96, 128))
        run_index(root / "images", root / "index", config=root / "tiny.yaml", progress=False)
        index = str(root / "index")
    paths = list(ImageIndex.load(index).paths)
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1", GEMSEG_THREADS="2")
    proc = subprocess.Popen([sys.executable, str(REPO / "tools" / "serve.py"), "--index", index, "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines = []
    reader = threading.Thread(target=lambda: lines.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(180)
    if not lines or "serving http://" not in lines[0]:
        proc.kill()
        pytest.fail(f"server did not start: {lines} {proc.stderr.read()[-2000:]}")
    url = re.search(r"serving (http://\S+)", lines[0]).group(1)
    assert url.startswith("http://127.0.0.1:")  # loopback by default
    query = os.environ.get("GEMSEG_SERVE_QUERY") or paths[0]
    yield url, paths, query
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()


def _search(url: str, **fields):
    files = None
    if "image" in fields:
        p = Path(fields.pop("image"))
        files = {"image": (p.name, p.read_bytes(), "image/jpeg")}
    r = httpx.post(f"{url}/api/search", data={k: str(v) for k, v in fields.items()}, files=files, timeout=120)
    return r


@pytest.mark.slow
def test_real_http_concurrent_searches_and_errors(live):
    url, paths, query = live
    info = httpx.get(f"{url}/api/info", timeout=30).json()
    assert info["images"] == len(paths)
    jobs = [dict(id=i % len(paths), top=5) for i in range(6)] + [dict(image=query, top=5)] * 2
    sequential = [_search(url, **dict(j)).json()["hits"] for j in jobs]
    with ThreadPoolExecutor(8) as pool:
        concurrent = list(pool.map(lambda j: _search(url, **dict(j)).json()["hits"], jobs))
    for a, b in zip(sequential, concurrent):
        assert [h["id"] for h in a] == [h["id"] for h in b]
        np.testing.assert_allclose([h["score"] for h in a], [h["score"] for h in b], atol=1e-5)
    # errors over a real socket, then the server still serves
    r = httpx.post(f"{url}/api/search", files={"image": ("x.jpg", b"\0" * (21 * 2 ** 20), "image/jpeg")}, timeout=60)
    assert r.status_code == 413 and "limit" in r.json()["error"]
    assert _search(url, id="../../etc/passwd").status_code == 404
    assert httpx.get(f"{url}/api/images/..%2F..%2Fetc%2Fpasswd", timeout=30).status_code == 404
    assert _search(url, id=0, top=0).status_code == 422
    assert _search(url, id=1, top=3).status_code == 200


def _grid(page):
    return page.eval_on_selector_all("#hits figure", "els => els.map(e => [Number(e.dataset.id), Number(e.dataset.score)])")


def _same(grid, hits):
    assert [i for i, _ in grid] == [h["id"] for h in hits]
    np.testing.assert_allclose([s for _, s in grid], [h["score"] for h in hits], atol=1e-4)


@pytest.mark.slow
def test_the_page_in_a_real_browser(live, tmp_path):
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed at /usr/bin/chromium (.ci/run installs it with apt-get)")
    sync_api = pytest.importorskip("playwright.sync_api")
    url, paths, query = live
    shot = Path(os.environ.get("GEMSEG_SCREENSHOT") or tmp_path / "serve_page.png")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url)
        page.wait_for_function("document.getElementById('info').textContent.includes('images')")

        # upload a query: the grid shows the API's hits for that image
        with page.expect_response(lambda r: r.url.endswith("/api/search")):
            page.set_input_files("#file", query)
        page.wait_for_selector("#hits figure")
        top = int(page.input_value("#top"))
        _same(_grid(page), _search(url, image=query, top=top).json()["hits"])

        # draw a box on it: the page searches with the box, in the query's own pixels
        bb = page.locator("#query-img").bounding_box()
        with page.expect_response(lambda r: r.url.endswith("/api/search")):
            page.mouse.move(bb["x"] + bb["width"] * 0.25, bb["y"] + bb["height"] * 0.2)
            page.mouse.down()
            page.mouse.move(bb["x"] + bb["width"] * 0.8, bb["y"] + bb["height"] * 0.85, steps=6)
            page.mouse.up()
        page.wait_for_function("document.getElementById('status').textContent.includes('hits in')")
        box = [int(v) for v in re.findall(r"\d+", page.text_content("#box-text"))[:4]]
        assert box[0] < box[2] and box[1] < box[3]
        ref = _search(url, image=query, top=top, box=",".join(map(str, box))).json()
        assert ref["box"] == box and box[2] <= ref["size"][0] and box[3] <= ref["size"][1]
        _same(_grid(page), ref["hits"])

        # what do they share: the query and its top hits, co-segmented
        with page.expect_response(lambda r: r.url.endswith("/api/coseg"), timeout=180_000):
            page.click("#share")
        page.wait_for_selector("#coseg figure")
        n = page.locator("#coseg figure").count()
        assert n == 1 + min(4, len([i for i, _ in _grid(page)]))
        page.wait_for_function("[...document.querySelectorAll('#coseg img')].every(i => i.complete && i.naturalWidth > 0)")
        page.wait_for_function("[...document.querySelectorAll('#hits img')].slice(0, 8).every(i => i.complete && i.naturalWidth > 0)")
        shot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shot), full_page=True)

        # click a hit: it becomes the query, and the grid is the API's hits for that id
        second = _grid(page)[1][0]
        with page.expect_response(lambda r: r.url.endswith("/api/search")):
            page.click(f"#hits figure[data-id='{second}']")
        page.wait_for_function("document.getElementById('status').textContent.includes('hits in')")
        _same(_grid(page), _search(url, id=second, top=top).json()["hits"])
        assert page.text_content("#query-name") == Path(paths[second]).name
        assert page.text_content("#box-text") == ""  # a new query starts without a box
        assert not errors, errors
        browser.close()
    assert shot.stat().st_size > 10_000


def test_the_tool_refuses_a_missing_index(run_tool, tmp_path):
    proc = run_tool("serve", "--index", tmp_path / "none", "--port", "0")
    assert proc.returncode == 2 and "index not found" in proc.stderr and "Traceback" not in proc.stderr
