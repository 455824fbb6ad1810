"""retrieval.search.rerank.superglobal: the refinement against a numpy loop written from the
paper's equations (ties included) and against the first, dense implementation (an (M, M) weight
matrix times X); the step permutes only the top M, keeps every id, leaves a shortlist of one."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import unit_rows

from retrieval.core.errors import DataError
from retrieval.search.index import ImageIndex
from retrieval.search.query import Query, QueryPath
from retrieval.search.rerank.registry import parse_steps
from retrieval.search.rerank.step import RerankContext
from retrieval.search.rerank.superglobal import SuperGlobalParams, hit_graph, refine_hits, superglobal_scores


def loop_scores(q, X, K, beta):
    """Eqs. from Shao et al. 2023, one hit and one dimension at a time."""
    M, D = X.shape
    R = np.zeros((M, D))
    for i in range(M):
        sims = [(float(X[i] @ X[j]), j) for j in range(M) if j != i]
        sims.sort(key=lambda t: -t[0])
        num = X[i].astype(np.float64).copy()
        den = 1.0
        for s, j in sims[:K]:
            num += beta * s * X[j]
            den += beta * s
        R[i] = num / den
    s1 = [float(R[i] @ q) for i in range(M)]
    top = sorted(range(M), key=lambda i: -s1[i])[:K + 1]
    q2 = [max(R[i, d] for i in top) for d in range(D)]
    return np.array([(s1[i] + float(R[i] @ np.array(q2))) / 2 for i in range(M)])


def dense_refine(X, K, beta):
    """The first implementation: neighbours by a partition of X Xᵀ with the diagonal at +inf (a
    hit its own first neighbour, weight 1), the weights as a dense (M, M) matrix, one BLAS product."""
    G = X @ X.T
    M = X.shape[0]
    k = min(K + 1, M)
    H = G.copy()
    np.fill_diagonal(H, np.inf)
    nn = np.argsort(-H, axis=1, kind="stable")[:, :k]
    w = np.take_along_axis(G, nn, 1).astype(np.float32) * np.float32(beta)
    w[:, 0] = 1.0
    A = np.zeros((M, M), np.float32)
    np.put_along_axis(A, nn, w, 1)
    return ((A @ X) / w.sum(1, keepdims=True)).astype(np.float32)


def dense_scores(q, X, K, beta):
    R = dense_refine(X, K, beta)
    s1 = R @ q
    top = np.argsort(-s1, kind="stable")[:min(K + 1, X.shape[0])]
    return (s1 + R @ R[top].max(axis=0)) / 2.0


def with_duplicates(M, D, seed):
    """Unit rows where some hits repeat (ties at the K-th place among the others)."""
    X = unit_rows(M, D, seed=seed)
    X[1::4] = X[0]
    X[3::5] = X[2]
    return X


@pytest.mark.parametrize("M, K, beta", [(30, 9, 0.15), (12, 3, 0.5), (5, 9, 0.15), (6, 5, 0.15), (2, 1, 0.3)])
def test_scores_follow_the_equations(M, K, beta):
    X = unit_rows(M, 10, seed=M)
    q = unit_rows(1, 10, seed=99)[0]
    np.testing.assert_allclose(superglobal_scores(q, X, K, beta), loop_scores(q, X, K, beta), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("M, K", [(40, 3), (40, 9), (9, 9)])
def test_ties_follow_the_equations(M, K):
    """Duplicated hits tie at the K-th place: the lowest-numbered are taken, as a stable sort does."""
    X = with_duplicates(M, 12, seed=M + K)
    q = unit_rows(1, 12, seed=7)[0]
    A = hit_graph(X, K, 0.15)
    assert np.all(np.diff(A.indptr) == min(K, M - 1)) and not A.diagonal().any()
    for i in range(M):  # each row's neighbours: the loop reference's (stable sort of the others)
        others = [j for j in np.argsort(-(X @ X[i]), kind="stable") if j != i]
        assert sorted(A.indices[A.indptr[i]:A.indptr[i + 1]]) == sorted(others[:K])
    np.testing.assert_allclose(superglobal_scores(q, X, K, 0.15), loop_scores(q, X, K, 0.15), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("M, D, K, beta", [(400, 64, 9, 0.15), (60, 200, 5, 0.4), (33, 16, 40, 0.15)])
def test_the_sparse_path_is_the_dense_one(M, D, K, beta):
    """hit_graph + sparse products (and scores that never form the refined hits) against the dense
    (M, M) weight matrix the step first used."""
    X = unit_rows(M, D, seed=D)
    q = unit_rows(1, D, seed=D + 1)[0]
    np.testing.assert_allclose(refine_hits(X, K, beta), dense_refine(X, K, beta), rtol=1e-6, atol=1e-7)
    got, want = superglobal_scores(q, X, K, beta), dense_scores(q, X, K, beta)
    assert got.dtype == np.float32 and got.shape == (M,)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(np.argsort(-got, kind="stable")[:20], np.argsort(-want, kind="stable")[:20])


def test_beta_zero_leaves_the_hits():
    X = unit_rows(20, 8, seed=3)
    np.testing.assert_allclose(refine_hits(X, 5, 0.0), X, atol=1e-7)


@pytest.fixture(scope="module")
def flat():
    X = unit_rows(200, 16, seed=4)
    idx = ImageIndex(16, "Flat", fingerprint="fp")
    idx.add(X, [f"/p/{i}.jpg" for i in range(200)])
    return idx, X


def test_the_step_permutes_the_top_M_only(flat):
    idx, X = flat
    q = Query(vector=unit_rows(1, 16, seed=5)[0])
    plain = QueryPath(idx).run(q, top=100)
    (step,) = parse_steps("superglobal:M=40:K=5")
    assert step.depth() == 40 and step.params == SuperGlobalParams(M=40, K=5)
    got = QueryPath(idx, steps=[step]).run(q, top=100)
    assert sorted(got.ids[0, :40]) == sorted(plain.ids[0, :40])
    np.testing.assert_array_equal(got.ids[0, 40:], plain.ids[0, 40:])
    want = superglobal_scores(plain.descriptors[0], X[plain.ids[0, :40]], 5, 0.15)
    np.testing.assert_allclose(got.scores[0, :40], np.sort(want)[::-1], rtol=1e-5)
    assert not np.array_equal(got.ids[0, :40], plain.ids[0, :40])
    one = QueryPath(idx, steps="superglobal").run(Query(vector=X[0]), top=1)
    assert one.ids.shape == (1, 1)
    ctx_ids = plain.ids[:, :1]
    ctx = RerankContext(plain.descriptors, idx, None, None, np.array([-1]), [None], [None])
    i1, s1 = step.rerank(ctx, ctx_ids, plain.scores[:, :1])
    np.testing.assert_array_equal(i1, ctx_ids)
    np.testing.assert_array_equal(s1, plain.scores[:, :1])


@pytest.mark.parametrize("params, needle", [(dict(M=0), "M"), (dict(K=-1), "K"), (dict(beta=-1.0), "beta")])
def test_bad_parameters_are_one_line_errors(params, needle):
    with pytest.raises(DataError, match=needle) as e:
        SuperGlobalParams(**params).validate()
    assert "\n" not in str(e.value)
