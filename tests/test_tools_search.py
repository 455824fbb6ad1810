"""tools/search.py: one JSON shape, notices on stderr, --box crops the query, co-segmentation
re-ranking options and their one-line errors."""
from __future__ import annotations

import json

import numpy as np
from conftest import assert_one_line_error, run_tool
from PIL import Image


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


def test_search_json_is_always_results_and_notices_go_to_stderr(tiny_index, tmp_path):
    ix, photos, _ = tiny_index
    one = run_tool("search", "--query", photos / "img000.jpg", "--index", ix, "--top", "2", "--json",
                   "--html", tmp_path / "h.html")
    two = run_tool("search", "--query", photos / "img000.jpg", photos / "img001.jpg", "--index", ix, "--json")
    for proc, n in ((one, 1), (two, 2)):
        assert proc.returncode == 0, proc.stderr
        doc = json.loads(proc.stdout)  # nothing but the document on stdout
        assert list(doc) == ["results"] and len(doc["results"]) == n
        assert all(set(r) == {"query", "hits"} for r in doc["results"])
    assert f"wrote {tmp_path / 'h.html'}" in one.stderr


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
