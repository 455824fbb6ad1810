"""retrieval.search.query_box: the one box rule (rounded, inside, at least one pixel; refused, never
clipped), the same through the Python API, the CLI and the server (422)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import run_tool
from PIL import Image

from retrieval.core.errors import DataError
from retrieval.search.query import Query
from retrieval.search.query_box import check_box, crop_to_box


def test_inside_boxes_are_rounded_as_the_crop_rounds():
    assert check_box((0, 0, 64, 48), (64, 48)) == (0, 0, 64, 48)
    assert check_box((1.4, 2.6, 20.5, 10.2), (64, 48)) == (1, 3, 20, 10)  # round(20.5) = 20
    assert check_box((-0.4, 0, 64.4, 48.3), (64, 48)) == (0, 0, 64, 48)  # sub-pixel slack at the edges
    img = Image.fromarray(np.arange(48 * 64 * 3, dtype=np.uint8).reshape(48, 64, 3) % 251)
    cut = crop_to_box(img, (8, 4, 40.2, 36))
    assert np.array_equal(np.asarray(cut), np.asarray(img)[4:36, 8:40])
    assert crop_to_box(img, None) is img


@pytest.mark.parametrize("box, needle", [
    ((600, 500, 700, 600), "not inside the 64x48 image"),  # fully outside
    ((0, 0, 5000, 5000), "not inside"),  # around the image: refused, not clipped
    ((40, 20, 70, 40), "not inside"),  # partly outside
    ((-1, 0, 10, 10), "not inside"),
    ((10, 10, 5, 20), "not inside"),  # x2 < x1
    ((1, 1, 1.2, 9), "no whole pixel"),
    ((1, 2, 3), "four finite numbers"),
    ((1, 1, float("nan"), 9), "four finite numbers"),
])
def test_other_boxes_are_refused_in_one_line(box, needle):
    with pytest.raises(DataError, match=needle) as e:
        check_box(box, (64, 48), "q.jpg")
    assert "\n" not in str(e.value) and ("q.jpg" in str(e.value) or "four" in needle)


@pytest.mark.slow
def test_cli_api_and_server_refuse_the_same_box_with_the_same_line(tiny_index):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from retrieval.serve.app import create_app
    from retrieval.serve.errors import status_for
    from retrieval.serve.service import SearchService

    ix, photos, _ = tiny_index
    q = photos / "img001.jpg"
    svc = SearchService.open(ix)
    try:
        client = TestClient(create_app(service=svc))
        for box in ("40,20,70,40", "600,500,700,600"):
            cli = run_tool("search", "--query", q, "--index", ix, "--box", box)
            r = client.post("/api/search", files={"image": ("q.jpg", q.read_bytes(), "image/jpeg")}, data={"box": box})
            assert cli.returncode == 2 and r.status_code == 422, (cli.stderr, r.text)
            served, printed = r.json()["error"], cli.stderr.strip()
            head = f"box {box} is not inside the 64x48 image of "
            assert served.startswith(head) and printed.startswith("error: " + head)
            assert served.split(": need ")[1] == printed.split(": need ")[1]
        # a DataError raised inside the query path (past the form's check) is a 422 too
        with pytest.raises(DataError) as e:
            svc.search(Query(image=Image.open(q).convert("RGB"), box=(0, 0, 65, 48)))
        assert status_for(e.value) == 422
        ok = client.post("/api/search", files={"image": ("q.jpg", q.read_bytes(), "image/jpeg")},
                         data={"box": "0,0,64.4,48", "top": "3"})
        assert ok.status_code == 200, ok.text
        same = json.loads(run_tool("search", "--query", q, "--index", ix, "--box", "0,0,64.4,48", "--top", "3",
                                   "--json").stdout)["results"][0]["hits"]
        assert [h["id"] for h in ok.json()["hits"]] == [h["id"] for h in same]
    finally:
        svc.close()
