"""tools/search.py: one JSON shape, notices on stderr, --box crops the query (a box not inside the
image: one line, exit 2), one bad query in a batch does not stop the others (exit 1), co-segmentation
re-ranking options and their one-line errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import assert_one_line_error, run_tool
from PIL import Image


@pytest.mark.slow
def test_search_tool_k_larger_than_the_index_and_bad_values(eight_images, tmp_path, tiny_config, run_tool):
    out = tmp_path / "ix"
    assert run_tool("index", "--images", eight_images[0].parent, "--config", tiny_config, "--out", out).returncode == 0
    plain = run_tool("search", "--query", eight_images[1], "--index", out, "--top", "8", "--json")
    proc = run_tool("search", "--query", eight_images[1], "--index", out, "--top", "3", "--coseg-rerank", "50",
                    "--coseg-k", "2", "--json")
    assert proc.returncode == 0, proc.stderr
    hits, ref = json.loads(proc.stdout)["results"][0]["hits"], json.loads(plain.stdout)["results"][0]["hits"]
    assert len(hits) == 3 and [h["rank"] for h in hits] == [1, 2, 3]
    assert {h["path"] for h in hits} <= {h["path"] for h in ref}  # a permutation of the 8 indexed
    for bad in (["--coseg-rerank", "-2"], ["--coseg-rerank", "5", "--coseg-k", "0"],
                ["--coseg-rerank", "5", "--coseg-weight", "2"]):
        assert_one_line_error(run_tool("search", "--query", eight_images[1], "--index", out, *bad), "coseg")


@pytest.mark.slow
def test_search_json_is_always_results_and_notices_go_to_stderr(tiny_index, tmp_path):
    ix, photos, _ = tiny_index
    one = run_tool("search", "--query", photos / "img000.jpg", "--index", ix, "--top", "2", "--json",
                   "--html", tmp_path / "h.html")
    two = run_tool("search", "--query", photos / "img000.jpg", photos / "img001.jpg", "--index", ix, "--json")
    for proc, n in ((one, 1), (two, 2)):
        assert proc.returncode == 0, proc.stderr
        doc = json.loads(proc.stdout)  # nothing but the document on stdout
        assert list(doc) == ["results", "failed"] and len(doc["results"]) == n and doc["failed"] == []
        assert all(set(r) == {"query", "hits"} for r in doc["results"])
    assert f"wrote {tmp_path / 'h.html'}" in one.stderr


@pytest.mark.slow
def test_search_box_crops_the_query(tiny_index, tmp_path):
    ix, photos, cfg = tiny_index
    q = photos / "img003.jpg"
    Image.open(q).crop((8, 4, 40, 36)).save(tmp_path / "crop.png")
    boxed = run_tool("search", "--query", q, "--index", ix, "--box", "8,4,40,36", "--json")
    crop = run_tool("search", "--query", tmp_path / "crop.png", "--index", ix, "--json")
    whole = run_tool("search", "--query", q, "--index", ix, "--json")
    b, c, w = (json.loads(p.stdout)["results"][0]["hits"] for p in (boxed, crop, whole))
    assert np.allclose([h["score"] for h in b], [h["score"] for h in c], atol=1e-5)
    assert not np.allclose([h["score"] for h in b], [h["score"] for h in w], atol=1e-3)
    bad = run_tool("search", "--query", q, "--index", ix, "--box", "40,4,8,36")
    assert bad.returncode == 2 and "x1 < x2" in bad.stderr


@pytest.mark.slow
def test_a_box_not_inside_the_query_is_one_line_and_exit_2(tiny_index):
    """Failed on the tree before issue 27: exit 0 with the hits of the whole image."""
    ix, photos, _ = tiny_index
    q = photos / "img003.jpg"  # 64 x 48
    for box in ("600,500,700,600", "0,0,5000,5000", "40,20,70,40"):  # outside, around, partly outside
        assert_one_line_error(run_tool("search", "--query", q, "--index", ix, "--box", box, "--json"),
                              "not inside", "64x48", str(q))
    by_id = run_tool("search", "--query-id", "0", "--index", ix, "--box", "600,500,700,600")
    assert_one_line_error(by_id, "not inside")
    ok = run_tool("search", "--query", q, "--index", ix, "--box", "0,0,64.4,48", "--json")  # rounds to 64
    assert ok.returncode == 0, ok.stderr


@pytest.mark.slow
def test_one_bad_query_does_not_stop_a_batch(tiny_index, tmp_path):
    """Failed on the tree before issue 27: exit 2 and no results for the good queries."""
    ix, photos, _ = tiny_index
    good = [photos / "img000.jpg", photos / "img001.jpg"]
    data = (photos / "img002.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (tmp_path / "notes.txt").write_text("not an image")
    queries = [good[0], tmp_path / "truncated.jpg", good[1], tmp_path / "notes.txt"]
    proc = run_tool("search", "--query", *queries, "--index", ix, "--top", "3", "--json")
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    doc = json.loads(proc.stdout)
    assert [r["query"] for r in doc["results"]] == [str(g) for g in good]
    alone = [json.loads(run_tool("search", "--query", g, "--index", ix, "--top", "3", "--json").stdout)["results"][0]
             for g in good]
    assert doc["results"] == alone  # the good ones answered as if searched alone
    assert [f["query"] for f in doc["failed"]] == [str(tmp_path / "truncated.jpg"), str(tmp_path / "notes.txt")]
    assert all(f["reason"] for f in doc["failed"])
    assert "2 of 4 queries could not be searched" in proc.stderr and "truncated.jpg:" in proc.stderr
    text = run_tool("search", "--query", *queries, "--index", ix, "--top", "3")
    assert text.returncode == 1 and text.stdout.count("query: ") == 2 and "notes.txt:" in text.stderr
    # a bad id and a box outside count as bad queries too; every query bad: exit 2, one line
    mixed = run_tool("search", "--query", good[0], "--query-id", "99", "--index", ix, "--json")
    assert mixed.returncode == 1 and "no indexed image with id 99" in json.loads(mixed.stdout)["failed"][0]["reason"]
    assert_one_line_error(run_tool("search", "--query", tmp_path / "notes.txt", tmp_path / "truncated.jpg",
                                   "--index", ix), "none of the 2 queries")
