"""retrieval.search.query: the one query path. The CLI, the server and the evaluation return the same
hit lists for the same query, box and steps (Flat and IVF); queries by stored id use the stored row
(no forward pass); queries by vector; DBA's by-id difference; one-line errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import run_tool

from retrieval.core.errors import DataError, ModelMismatchError
from retrieval.evaluation.datasets import EvalDataset
from retrieval.evaluation.run import rank_dataset
from retrieval.loading import search_model
from retrieval.search.expansion import alpha_qe, dba_index
from retrieval.search.index import ImageIndex
from retrieval.search.query import Query, QueryPath, query_steps

N = 14  # images in the query_collection fixture
BOX = (4.0, 6.0, 52.0, 40.0)
STEPS = "qe:k=2:alpha=3,coseg:K=5:k=2"


def _cli(index, query, *extra):
    proc = run_tool("search", "--query", query, "--index", index, "--top", "6", "--box", ",".join(map(str, BOX)),
                    "--rerank", STEPS, "--json", *extra)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["results"][0]["hits"]


def _server(index, query):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from retrieval.serve.app import create_app
    from retrieval.serve.service import SearchService

    svc = SearchService.open(index)
    try:
        client = TestClient(create_app(service=svc))
        r = client.post("/api/search", files={"image": ("q.jpg", query.read_bytes(), "image/jpeg")},
                        data={"top": "6", "box": ",".join(map(str, BOX)), "rerank": STEPS})
        assert r.status_code == 200, r.text
        return r.json()["hits"]
    finally:
        svc.close()


def _evaluation(index_dir, query, search_cache):
    idx = ImageIndex.load(index_dir)
    net = search_model(idx)
    db = list(idx.paths)
    ds = EvalDataset(name="one", query_paths=[query], query_boxes=[BOX], db_paths=db,
                     gnd=[{"easy": np.array([0]), "hard": np.array([], np.int64), "junk": np.array([], np.int64)}])
    if search_cache:
        searched = idx
    else:
        searched = ImageIndex(idx.dim, "Flat", idx.model_config, idx.fingerprint)
        searched.add(idx.descriptors(), db)
    res = rank_dataset(net, ds, searched, idx.descriptors(), query_steps(rerank=STEPS))
    return res.records()[0]["hits"][:6]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_cli_server_and_evaluation_return_the_same_hits(query_collection, kind):
    index = query_collection["root"] / kind
    cli = _cli(index, query_collection["query"])
    assert len(cli) == 6 and all({"rank", "id", "path", "score", "missing"} <= set(h) for h in cli)
    assert _server(index, query_collection["query"]) == cli
    assert _evaluation(index, query_collection["query"], search_cache=(kind == "ivf")) == cli
    # the steps ran: without them the order (or the scores) differ
    plain = json.loads(run_tool("search", "--query", query_collection["query"], "--index", index, "--top", "6",
                                "--box", ",".join(map(str, BOX)), "--json").stdout)["results"][0]["hits"]
    assert [(h["id"], round(h["score"], 5)) for h in plain] != [(h["id"], round(h["score"], 5)) for h in cli]


@pytest.mark.slow
def test_a_query_by_id_is_the_stored_row_and_runs_no_forward_pass(query_collection):
    idx = ImageIndex.load(query_collection["root"] / "flat")
    net = search_model(idx)
    calls = []
    hook = net.backbone.register_forward_hook(lambda *a: calls.append(1))
    try:
        path = QueryPath(idx, net)
        by_id = path.run(Query(id=3), top=5)
        assert calls == []
        by_file = path.run(Query(image=query_collection["paths"][3]), top=5)
        assert calls  # a file is described
    finally:
        hook.remove()
    np.testing.assert_array_equal(by_id.descriptors[0], idx.rows(np.array([3]))[0])
    # the same image by file: described again (batch of one vs the indexing batches), same ranking
    assert [h["id"] for h in by_id.hits(0)] == [h["id"] for h in by_file.hits(0)]
    np.testing.assert_allclose(by_id.scores, by_file.scores, atol=1e-4)
    assert by_id.hits(0)[0]["id"] == 3 and by_id.labels == [idx.paths[3]]
    # the CLI's --query-id gives the same hits
    proc = run_tool("search", "--query-id", "3", "--index", query_collection["root"] / "flat", "--top", "5", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["results"][0]["hits"] == by_id.hits(0)


@pytest.mark.slow
def test_a_query_by_vector_equals_the_same_descriptor_by_id(query_collection):
    idx = ImageIndex.load(query_collection["root"] / "ivf")
    path = QueryPath(idx)  # no network needed
    row = idx.rows(np.array([5]))[0]
    assert path.run(Query(vector=row), 4).hits(0) == path.run(Query(id=5), 4).hits(0)
    with pytest.raises(ModelMismatchError, match="values"):
        path.run(Query(vector=row[:-1]), 4)
    with pytest.raises(DataError, match="finite"):
        path.run(Query(vector=np.full(idx.dim, np.nan, np.float32)), 4)
    with pytest.raises(DataError, match="no indexed image"):
        path.run(Query(id=N + 5), 4)
    with pytest.raises(DataError, match="network"):
        path.run(Query(image=query_collection["query"]), 4)
    with pytest.raises(DataError, match="network"):
        QueryPath(idx, steps="coseg")


@pytest.mark.slow
def test_qe_skips_the_own_copy_only_of_a_query_that_says_it_is_one(query_collection):
    idx = ImageIndex.load(query_collection["root"] / "flat")
    X = idx.descriptors()
    path = QueryPath(idx, steps="qe:k=2:alpha=3")
    skip = path.run(Query(vector=X[2], self_id=2), top=N)
    want = alpha_qe(X[2:3], X, k=2, alpha=3.0, self_ids=np.array([2]))
    np.testing.assert_allclose(skip.descriptors, want, atol=1e-6)
    np.testing.assert_array_equal(skip.ids[0], np.argsort(-(want @ X.T)[0], kind="stable"))
    by_id = path.run(Query(id=2), top=N)  # a query by id is expanded as the same file would be
    np.testing.assert_allclose(by_id.descriptors, alpha_qe(X[2:3], X, k=2, alpha=3.0), atol=1e-6)
    assert not np.allclose(by_id.descriptors, skip.descriptors, atol=1e-4)


@pytest.mark.slow
def test_on_a_dba_index_a_query_by_id_uses_the_augmented_row(query_collection, tmp_path):
    """The documented difference: stored rows of a DBA index are augmented, a file is not."""
    idx = ImageIndex.load(query_collection["root"] / "flat")
    net = search_model(idx)
    aug = dba_index(idx, k=2, alpha=3.0)
    aug.save(tmp_path / "dba")
    aug = ImageIndex.load(tmp_path / "dba")
    path = QueryPath(aug, net)
    by_id, by_file = path.run(Query(id=4), 3), path.run(Query(image=query_collection["paths"][4]), 3)
    np.testing.assert_array_equal(by_id.descriptors[0], aug.rows(np.array([4]))[0])
    np.testing.assert_allclose(by_file.descriptors[0], idx.rows(np.array([4]))[0], atol=1e-5)
    assert not np.allclose(by_id.descriptors[0], by_file.descriptors[0], atol=1e-4)
