"""retrieval.search.rerank.registry: a re-ranker registered in one place is reachable from the CLI,
the API and the evaluation with no other edit; the written form of steps; one-line errors."""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass

import numpy as np
import pytest
from conftest import REPO, TINY_CONFIG, assert_one_line_error, random_images, run_tool

from retrieval.core.errors import DataError
from retrieval.jobs import run_index
from retrieval.search.rerank.registry import (
    describe_rerankers,
    parameters,
    parse_steps,
    register_reranker,
    reranker_names,
    unregister_reranker,
)
from retrieval.search.rerank.step import Reranker


@dataclass
class FlipParams:
    n: int = 3
    tag: str = "x"
    on: bool = True


class Flip(Reranker):
    """A toy step: the first n hits of each shortlist in reverse order, each tagged."""

    name = "toyflip"
    summary = "reverse the top n (a test)"
    Params = FlipParams

    def depth(self) -> int:
        return self.params.n

    def rerank(self, ctx, ids, scores):
        n = min(self.params.n, ids.shape[1])
        ids, scores = ids.copy(), scores.copy()
        if self.params.on:
            ids[:, :n], scores[:, :n] = ids[:, :n][:, ::-1], scores[:, :n][:, ::-1]
        for q in range(ids.shape[0]):
            for i in ids[q, :n]:
                ctx.annotate(q, int(i), flipped=self.params.tag)
        ctx.notes[self.name] = {"queries": ids.shape[0]}
        return ids, scores


@pytest.fixture
def flip():
    register_reranker(Flip)
    yield Flip
    unregister_reranker("toyflip")


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    root = tmp_path_factory.mktemp("registry")
    (root / "tiny.yaml").write_text(TINY_CONFIG)
    paths = random_images(root / "images", 8, size=(48, 64), seed=2)
    run_index(root / "images", root / "index", config=root / "tiny.yaml", progress=False)
    return root, paths


def test_names_come_from_the_package_without_importing_it():
    code = ("import sys; from retrieval.search.rerank.registry import reranker_names; print(reranker_names()); "
            "print(any(m.startswith('retrieval.search.rerank.') and not m.endswith(('registry', 'step')) "
            "for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    names, imported = out.stdout.strip().splitlines()
    assert {"qe", "coseg"} <= set(eval(names)) and imported == "False", out.stderr


def test_written_steps_are_parsed_by_field_type(flip):
    (a, b, c) = parse_steps(["qe:k=4:alpha=0.5", "toyflip:n=2:tag=y:on=no,toyflip"])
    assert (a.name, a.params.k, a.params.alpha) == ("qe", 4, 0.5)
    assert (b.params.n, b.params.tag, b.params.on) == (2, "y", False) and c.params == FlipParams()
    assert [s.spec() for s in parse_steps("qe:k=2,toyflip:n=5")] == ["qe", "toyflip:n=5"]
    assert parse_steps("") == [] and parse_steps(None) == []
    assert parameters("toyflip") == {"n": 3, "tag": "x", "on": True}
    assert "toyflip: reverse the top n" in describe_rerankers()
    assert "toyflip" in reranker_names()


@pytest.mark.parametrize("text, needle", [
    ("qee", "did you mean 'qe'"), ("qe:kk=2", "no parameter 'kk'"), ("qe:k=two", "not a valid int"),
    ("qe:k", "key=value"), ("qe:k=-1", "≥ 0"), ("qe:alpha=nan", "not a valid float"),
    ("coseg:K=0", "K ≥ 1"), ("coseg:mask=1", "no parameter 'mask'"),
])
def test_bad_steps_are_one_line_errors(text, needle):
    with pytest.raises(DataError, match=needle):
        parse_steps(text)


@pytest.mark.slow
def test_a_registered_reranker_is_reachable_everywhere(flip, indexed, tmp_path):
    root, paths = indexed
    # the CLI
    base = ["--query", paths[0], "--index", root / "index", "--top", "4", "--json"]
    plain = json.loads(run_tool("search", *base).stdout)["results"][0]["hits"]
    proc = run_tool("search", *base, "--rerank", "toyflip:n=3:tag=t")
    assert proc.returncode == 0, proc.stderr
    flipped = json.loads(proc.stdout)["results"][0]["hits"]
    assert [h["id"] for h in flipped] == [h["id"] for h in plain][:3][::-1] + [plain[3]["id"]]
    assert [h.get("flipped") for h in flipped] == ["t", "t", "t", None]
    assert "toyflip" in run_tool("search", "--help").stdout
    # the API
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from retrieval.serve.app import create_app
    from retrieval.serve.service import SearchService

    svc = SearchService.open(root / "index")
    try:
        client = TestClient(create_app(service=svc))
        r = client.post("/api/search", data={"id": "0", "top": "4", "rerank": "toyflip:n=3:tag=t"})
        assert r.status_code == 200, r.text
        assert r.json()["rerank"] == ["toyflip:tag=t"]  # defaults are not written
        by_id = client.post("/api/search", data={"id": "0", "top": "4"}).json()["hits"]
        assert [h["id"] for h in r.json()["hits"]] == [h["id"] for h in by_id][:3][::-1] + [by_id[3]["id"]]
        bad = client.post("/api/search", data={"id": "0", "rerank": "toyflip:n=x"})
        assert bad.status_code == 422 and "not a valid int" in bad.json()["error"]
    finally:
        svc.close()
    # the evaluation (a folder of classes: every image a query)
    for i, p in enumerate(paths):
        (tmp_path / "classes" / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        (tmp_path / "classes" / f"c{i % 2}" / p.name).write_bytes(p.read_bytes())
    args = ["--dataset", f"folder:{tmp_path / 'classes'}", "--config", root / "tiny.yaml", "--json"]
    rep_plain = json.loads(run_tool("evaluate", *args).stdout)
    proc = run_tool("evaluate", *args, "--rerank", "toyflip:n=8")
    assert proc.returncode == 0, proc.stderr
    rep = json.loads(proc.stdout)
    assert rep["rerank"] == ["toyflip:n=8"]
    assert rep["medium"]["map"] != rep_plain["medium"]["map"]  # reversing the top 8 of 8 moves every AP
    assert_one_line_error(run_tool("evaluate", *args, "--rerank", "toyflipp"), "did you mean 'toyflip'")
    assert_one_line_error(run_tool("search", *base, "--rerank", "nope"), "unknown re-ranker")


@pytest.mark.slow
def test_steps_run_in_order(flip, indexed):
    from retrieval.loading import search_model
    from retrieval.search.index import ImageIndex
    from retrieval.search.query import QueryPath

    root, paths = indexed
    idx = ImageIndex.load(root / "index")
    path = QueryPath(idx, search_model(idx))
    once = path.with_steps("toyflip:n=4").run(paths[1], 4)
    twice = path.with_steps("toyflip:n=4,toyflip:n=4").run(paths[1], 4)
    plain = path.run(paths[1], 4)
    np.testing.assert_array_equal(twice.ids, plain.ids)
    np.testing.assert_array_equal(once.ids, plain.ids[:, ::-1])
