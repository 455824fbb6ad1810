"""tools/evaluate.py."""
from __future__ import annotations

import json

from conftest import assert_one_line_error


def test_evaluate_tool_reranks_and_refuses_bad_values(tmp_path, tiny_config, run_tool):
    from retrieval.toy.collection import make_retrieval_collection

    make_retrieval_collection(tmp_path / "toy", n_objects=3, views=3, distractors=2, image_size=64, seed=0)
    args = ["--dataset", "toy", "--data-root", tmp_path / "toy", "--config", tiny_config, "--json"]
    proc = run_tool("evaluate", *args, "--coseg-rerank", "100", "--coseg-k", "2")
    assert proc.returncode == 0, proc.stderr
    rep = json.loads(proc.stdout)
    assert rep["coseg"]["K"] == 100 and rep["coseg"]["queries"] == 3 and rep["coseg"]["hits"] == 3 * 8
    assert 0 <= rep["medium"]["map"] <= 1
    assert_one_line_error(run_tool("evaluate", *args, "--coseg-rerank", "-1"), "coseg-rerank")
    assert_one_line_error(run_tool("evaluate", *args, "--coseg-rerank", "4", "--coseg-k", "0"), "coseg-k")
