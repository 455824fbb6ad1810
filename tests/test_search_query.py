"""retrieval.search.query: the one query path. The CLI, the server and the evaluation return the same
hit lists for the same query, box and steps (Flat and IVF); queries by stored id use the stored row
(no forward pass); queries by vector; DBA's by-id difference; one-line errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import TINY_CONFIG, random_images, run_tool

from retrieval.core.errors import DataError, ModelMismatchError
from retrieval.evaluation.datasets import EvalDataset
from retrieval.evaluation.run import rank_dataset
from retrieval.jobs import run_index
from retrieval.loading import search_model
from retrieval.search.collection import search_images
from retrieval.search.expansion import alpha_qe, dba_index
from retrieval.search.index import ImageIndex
from retrieval.search.query import Query, QueryPath, as_queries, query_steps
from retrieval.search.rerank.coseg import CosegRerankOptions

N = 14
BOX = (4.0, 6.0, 52.0, 40.0)
STEPS = "qe:k=2:alpha=3,coseg:K=5:k=2"


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    """A Flat and an IVF index (random-init ResNet-18 at 64 px) over the same images, and a query."""
    root = tmp_path_factory.mktemp("query")
    (root / "tiny.yaml").write_text(TINY_CONFIG)
    paths = random_images(root / "images", N, size=(48, 64), seed=5)
    query = random_images(root / "q", 1, size=(48, 64), seed=9)[0]
    run_index(root / "images", root / "flat", config=root / "tiny.yaml", progress=False)
    run_index(root / "images", root / "ivf", config=root / "tiny.yaml", factory="IVF2,Flat", progress=False)
    return {"root": root, "paths": paths, "query": query}


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


@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_cli_server_and_evaluation_return_the_same_hits(collection, kind):
    index = collection["root"] / kind
    cli = _cli(index, collection["query"])
    assert len(cli) == 6 and all({"rank", "id", "path", "score", "missing"} <= set(h) for h in cli)
    assert _server(index, collection["query"]) == cli
    assert _evaluation(index, collection["query"], search_cache=(kind == "ivf")) == cli
    # the steps ran: without them the order (or the scores) differ
    plain = json.loads(run_tool("search", "--query", collection["query"], "--index", index, "--top", "6",
                                "--box", ",".join(map(str, BOX)), "--json").stdout)["results"][0]["hits"]
    assert [(h["id"], round(h["score"], 5)) for h in plain] != [(h["id"], round(h["score"], 5)) for h in cli]


def test_a_query_by_id_is_the_stored_row_and_runs_no_forward_pass(collection):
    idx = ImageIndex.load(collection["root"] / "flat")
    net = search_model(idx)
    calls = []
    hook = net.backbone.register_forward_hook(lambda *a: calls.append(1))
    try:
        path = QueryPath(idx, net)
        by_id = path.run(Query(id=3), top=5)
        assert calls == []
        by_file = path.run(Query(image=collection["paths"][3]), top=5)
        assert calls  # a file is described
    finally:
        hook.remove()
    np.testing.assert_array_equal(by_id.descriptors[0], idx.rows(np.array([3]))[0])
    # the same image by file: described again (batch of one vs the indexing batches), same ranking
    assert [h["id"] for h in by_id.hits(0)] == [h["id"] for h in by_file.hits(0)]
    np.testing.assert_allclose(by_id.scores, by_file.scores, atol=1e-4)
    assert by_id.hits(0)[0]["id"] == 3 and by_id.labels == [idx.paths[3]]
    # the CLI's --query-id gives the same hits
    proc = run_tool("search", "--query-id", "3", "--index", collection["root"] / "flat", "--top", "5", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["results"][0]["hits"] == by_id.hits(0)


def test_a_query_by_vector_equals_the_same_descriptor_by_id(collection):
    idx = ImageIndex.load(collection["root"] / "ivf")
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
        path.run(Query(image=collection["query"]), 4)
    with pytest.raises(DataError, match="network"):
        QueryPath(idx, steps="coseg")


def test_qe_skips_the_own_copy_only_of_a_query_that_says_it_is_one(collection):
    idx = ImageIndex.load(collection["root"] / "flat")
    X = idx.descriptors()
    path = QueryPath(idx, steps="qe:k=2:alpha=3")
    skip = path.run(Query(vector=X[2], self_id=2), top=N)
    want = alpha_qe(X[2:3], X, k=2, alpha=3.0, self_ids=np.array([2]))
    np.testing.assert_allclose(skip.descriptors, want, atol=1e-6)
    np.testing.assert_array_equal(skip.ids[0], np.argsort(-(want @ X.T)[0], kind="stable"))
    by_id = path.run(Query(id=2), top=N)  # a query by id is expanded as the same file would be
    np.testing.assert_allclose(by_id.descriptors, alpha_qe(X[2:3], X, k=2, alpha=3.0), atol=1e-6)
    assert not np.allclose(by_id.descriptors, skip.descriptors, atol=1e-4)


def test_on_a_dba_index_a_query_by_id_uses_the_augmented_row(collection, tmp_path):
    """The documented difference: stored rows of a DBA index are augmented, a file is not."""
    idx = ImageIndex.load(collection["root"] / "flat")
    net = search_model(idx)
    aug = dba_index(idx, k=2, alpha=3.0)
    aug.save(tmp_path / "dba")
    aug = ImageIndex.load(tmp_path / "dba")
    path = QueryPath(aug, net)
    by_id, by_file = path.run(Query(id=4), 3), path.run(Query(image=collection["paths"][4]), 3)
    np.testing.assert_array_equal(by_id.descriptors[0], aug.rows(np.array([4]))[0])
    np.testing.assert_allclose(by_file.descriptors[0], idx.rows(np.array([4]))[0], atol=1e-5)
    assert not np.allclose(by_id.descriptors[0], by_file.descriptors[0], atol=1e-4)


def test_search_images_keeps_its_api(collection):
    idx = ImageIndex.load(collection["root"] / "flat")
    net = search_model(idx)
    (one,) = search_images(net, idx, collection["query"], top=3)  # one query alone
    both = search_images(net, idx, [collection["query"], Query(id=1)], top=3)
    assert both[0] == one and both[1]["hits"][0]["id"] == 1
    co = search_images(net, idx, [collection["query"]], top=3, coseg_rerank=CosegRerankOptions(K=4, k=2))
    assert {h["id"] for h in co[0]["hits"]} <= set(range(N))
    with pytest.raises(DataError, match="boxes"):
        as_queries([collection["query"]], boxes=[None, None])
    with pytest.raises(DataError, match="unknown re-ranker"):
        search_images(net, idx, collection["query"], steps="diffusionn")
