"""retrieval.search.rerank.qe: α-QE as a step of the query path: the query expanded with its top k
hits (weights sim^α), searched again; k = 0 leaves the shortlist; one-line errors."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import unit_rows

from retrieval.core.errors import DataError
from retrieval.search.expansion import alpha_qe
from retrieval.search.index import ImageIndex
from retrieval.search.query import Query, QueryPath
from retrieval.search.rerank.qe import QEParams, QueryExpansion
from retrieval.search.rerank.registry import parse_steps


@pytest.fixture(scope="module")
def flat():
    X = unit_rows(60, 16, seed=4)
    idx = ImageIndex(16, "Flat", fingerprint="fp")
    idx.add(X, [f"/p/{i}.jpg" for i in range(60)])
    return idx, X


def test_the_step_is_alpha_qe_then_a_new_search(flat):
    idx, X = flat
    q = unit_rows(1, 16, seed=9)[0]
    (step,) = parse_steps("qe:k=3:alpha=2")
    assert isinstance(step, QueryExpansion) and step.params == QEParams(k=3, alpha=2.0) and step.depth() == 4
    got = QueryPath(idx, steps="qe:k=3:alpha=2").run(Query(vector=q), top=10)
    want = alpha_qe(q[None], X, k=3, alpha=2.0)
    np.testing.assert_allclose(got.descriptors, want, atol=1e-6)  # the expanded query replaces the query
    S = (want @ X.T)[0]
    np.testing.assert_array_equal(got.ids[0], np.argsort(-S, kind="stable")[:10])
    np.testing.assert_allclose(got.scores[0], np.sort(S)[::-1][:10], rtol=1e-5)
    plain = QueryPath(idx).run(Query(vector=q), top=10)
    assert not np.array_equal(plain.ids, got.ids) or not np.allclose(plain.scores, got.scores)


def test_k_zero_leaves_the_shortlist(flat):
    idx, _ = flat
    q = unit_rows(1, 16, seed=10)[0]
    off = QueryPath(idx, steps="qe:k=0").run(Query(vector=q), top=8)
    plain = QueryPath(idx).run(Query(vector=q), top=8)
    np.testing.assert_array_equal(off.ids, plain.ids)
    np.testing.assert_array_equal(off.scores, plain.scores)
    assert parse_steps("qe:k=0")[0].depth() == 0


@pytest.mark.parametrize("params, needle", [(dict(k=-1), "≥ 0"), (dict(k=True), "neighbours"),
                                            (dict(alpha=-0.5), "α ≥ 0"), (dict(alpha=float("inf")), "finite")])
def test_bad_parameters_are_one_line_errors(params, needle):
    with pytest.raises(DataError, match=needle) as e:
        QEParams(**params).validate()
    assert "\n" not in str(e.value)
