"""retrieval.demo: the demo collection generated, indexed and searched with each query cropped to its
object; the hits written as pages; the report scores the full rankings."""
from __future__ import annotations

import json

import pytest

from retrieval.demo import demo
from retrieval.search.index import ImageIndex


@pytest.mark.slow
def test_demo_indexes_searches_and_writes_its_pages(small_net, tmp_path):
    res = demo(small_net, tmp_path / "d", n_objects=2, views=3, distractors=1, image_size=64, top=3,
               source="synthetic", progress=False)
    coll = res.collection
    assert len(res.results) == 2 and all(len(r["hits"]) == 3 for r in res.results)
    assert [r["query"] for r in res.results] == [str(p) for p in coll.query_paths]
    index = ImageIndex.load(tmp_path / "d" / "index")
    assert sorted(index.paths) == sorted(coll.db_paths) and index.fingerprint == small_net.fingerprint()
    assert set(res.report) == {"easy", "medium", "hard"} and 0 <= res.report["medium"]["map"] <= 1
    assert res.html == tmp_path / "d" / "hits.html" and res.png.is_file() and res.index_seconds > 0
    assert res.html.read_text().count("<figure") >= 2 * (1 + 3)
    again = demo(small_net, tmp_path / "d", n_objects=2, views=3, distractors=3, image_size=64, top=3,
                 source="synthetic", progress=False)  # another collection: the old index is replaced
    assert len(ImageIndex.load(tmp_path / "d" / "index")) == len(again.collection.db_paths) == len(coll.db_paths) + 2
    assert json.dumps(again.report)  # JSON-able, as tools/demo.py --json prints it
