"""retrieval.search.rerank.diffusion: conjugate gradient against the dense closed form
(I − αS)⁻¹y and against scipy's cg (the same iterates); the sub-graph of a shortlist against
``W[nodes][:, nodes]``; the re-ranking against a dense numpy diffusion of the whole graph; a step that only
permutes the shortlist's top K; diffusion recovering a manifold that plain search misses."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import unit_rows
from scipy.sparse.linalg import cg

import retrieval.search.rerank.diffusion as diffusion_mod
from retrieval.core.errors import DataError
from retrieval.search.index import ImageIndex
from retrieval.search.knn_graph import build_knn_graph
from retrieval.search.query import Query, QueryPath
from retrieval.search.rerank.diffusion import (
    DiffusionParams,
    conjugate_gradient,
    diffuse,
    diffusion_rerank,
    normalized_affinity,
)
from retrieval.search.rerank.registry import parse_steps


def dense_S(X: np.ndarray, k: int, gamma: float) -> np.ndarray:
    """S = D^-1/2 W D^-1/2 from the definition: mutual k-NN (numpy sort), w = max(s, 0)^γ."""
    N = X.shape[0]
    G = X @ X.T
    np.fill_diagonal(G, -np.inf)
    nn = [set(np.argsort(-G[i], kind="stable")[:k].tolist()) for i in range(N)]
    W = np.zeros((N, N))
    for i in range(N):
        for j in nn[i]:
            if i in nn[j]:
                W[i, j] = max(float(X[i] @ X[j]), 0.0) ** gamma
    d = W.sum(1) + 1e-12
    return W / np.sqrt(d)[:, None] / np.sqrt(d)[None, :]


def test_cg_solves_the_closed_form():
    X = unit_rows(50, 8, seed=1)
    g = build_knn_graph(X, 6)
    S = normalized_affinity(g.affinity(6, 3.0), np.arange(50))
    np.testing.assert_allclose(S.toarray(), dense_S(X, 6, 3.0), rtol=1e-6, atol=1e-10)
    y = np.zeros(50)
    y[[3, 9, 20]] = [1.0, 0.5, 0.2]
    f = diffuse(S, y, alpha=0.9, iters=500, tol=1e-12)
    want = np.linalg.solve(np.eye(50) - 0.9 * S.toarray(), y)
    np.testing.assert_allclose(f, want, rtol=1e-7, atol=1e-9)


def test_the_sub_graph_is_the_sliced_matrix():
    """normalized_affinity's gathered rows and column map against scipy's W[nodes][:, nodes],
    for nodes in shortlist order (not sorted); the scratch table is left all −1."""
    X = unit_rows(300, 8, seed=5)
    g = build_knn_graph(X, 9)
    W, deg = g.affinity(9, 3.0), g.degrees(9, 3.0)
    nodes = np.random.default_rng(0).permutation(300)[:120]
    inv = 1.0 / np.sqrt(deg[nodes] + 1e-12)
    want = inv[:, None] * W[nodes][:, nodes].toarray() * inv[None, :]
    scratch = np.full(300, -1, np.int64)
    S = normalized_affinity(W, nodes, deg, scratch)
    assert S.shape == (120, 120) and S.dtype == np.float64 and S.nnz == np.count_nonzero(want)
    np.testing.assert_allclose(S.toarray(), want, rtol=1e-12, atol=0)
    assert np.all(scratch == -1)
    np.testing.assert_allclose(normalized_affinity(W, nodes).toarray(), want, rtol=1e-12, atol=0)


@pytest.mark.parametrize("iters, tol", [(20, 1e-6), (3, 1e-6), (500, 1e-12), (20, 2.0)])
def test_cg_has_scipys_iterates(iters, tol):
    """The same iterates as scipy.sparse.linalg.cg (x0 = 0, no preconditioner), converged or cut
    short, and the same exit code."""
    X = unit_rows(200, 8, seed=6)
    g = build_knn_graph(X, 10)
    S = normalized_affinity(g.affinity(10, 3.0), np.arange(200))
    A = sp.identity(200, format="csr") - 0.99 * S
    y = np.zeros(200)
    y[:7] = np.linspace(1.0, 0.3, 7)
    want, code = cg(A, y, rtol=tol, maxiter=iters)
    got, got_code = conjugate_gradient(lambda p: A @ p, y, iters, tol)
    assert got_code == code
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(diffuse(S, y, 0.99, iters, tol), want, rtol=1e-10, atol=1e-13)
    z, zc = conjugate_gradient(lambda p: A @ p, np.zeros(200), iters, tol)
    assert zc == 0 and not z.any()


def test_rerank_is_the_dense_diffusion():
    X = unit_rows(80, 8, seed=2)
    q = unit_rows(1, 8, seed=3)
    s = (q @ X.T)[0]
    order = np.argsort(-s, kind="stable")
    ids, scores = order[None], s[order][None].astype(np.float32)
    p = DiffusionParams(K=80, kq=5, k=7, alpha=0.95, gamma=3.0, iters=1000, tol=1e-12)
    got_ids, got_scores = diffusion_rerank(build_knn_graph(X, 7), ids, scores, p)
    S = dense_S(X, 7, 3.0)
    y = np.zeros(80)
    y[order[:5]] = np.maximum(s[order[:5]], 0) ** 3
    f = np.linalg.solve(np.eye(80) - 0.95 * S, y)
    want = np.argsort(-f, kind="stable")
    np.testing.assert_array_equal(got_ids[0], want)
    np.testing.assert_allclose(got_scores[0], f[want] / f.max(), rtol=1e-5, atol=1e-7)


def chain_index():
    """Two 'objects' seen along a chain of views (a manifold: each view near the next), plus
    distractors; the far end of a chain is less similar to its start than some distractors."""
    rng = np.random.default_rng(0)
    rows = []
    for c in range(2):
        a, b = unit_rows(2, 32, seed=10 + c)
        for t in np.linspace(0, 1, 15):
            v = np.cos(t * 1.3) * a + np.sin(t * 1.3) * (b - (b @ a) * a) / np.linalg.norm(b - (b @ a) * a)
            rows.append(v + rng.normal(0, 0.01, 32))
    X = np.array(rows, np.float32)
    D = unit_rows(120, 32, seed=20)
    X = np.r_[X, 0.45 * D + 0.55 * X[rng.integers(0, 30, 120)]].astype(np.float32)  # near-ish distractors
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    idx = ImageIndex(32, "Flat", fingerprint="fp")
    idx.add(X, [f"/p/{i}.jpg" for i in range(X.shape[0])])
    return idx, X


def test_diffusion_follows_the_manifold():
    idx, X = chain_index()
    plain = QueryPath(idx).run(Query(vector=X[0]), top=15)
    diff = QueryPath(idx, steps="diffusion:k=5:kq=3").run(Query(vector=X[0]), top=15)
    chain = set(range(15))
    assert len(chain & set(diff.ids[0].tolist())) > len(chain & set(plain.ids[0].tolist()))
    assert diff.notes["diffusion"]["graph_stored"] is False


def test_the_step_permutes_the_top_K_only():
    idx, X = chain_index()
    q = Query(vector=X[3])
    plain = QueryPath(idx).run(q, top=60)
    (step,) = parse_steps("diffusion:K=30:k=5")
    assert step.depth() == 30 and step.params == DiffusionParams(K=30, k=5)
    got = QueryPath(idx, steps=[step]).run(q, top=60)
    assert sorted(got.ids[0, :30]) == sorted(plain.ids[0, :30])  # the same ids, re-ordered
    assert not np.array_equal(got.ids[0, :30], plain.ids[0, :30])
    np.testing.assert_array_equal(got.ids[0, 30:], plain.ids[0, 30:])  # past K: untouched
    np.testing.assert_array_equal(got.scores[0, 30:], plain.scores[0, 30:])
    assert np.all(np.diff(got.scores[0, :30]) <= 0) and got.scores[0, 0] == pytest.approx(1.0)
    one_ids, one_scores = diffusion_rerank(idx.knn_graph(5), plain.ids[:, :1], plain.scores[:, :1], DiffusionParams())
    np.testing.assert_array_equal(one_ids, plain.ids[:, :1])  # a shortlist of one stays
    np.testing.assert_array_equal(one_scores, plain.scores[:, :1])
    pads = np.array([[plain.ids[0, 0], plain.ids[0, 1], -1]])
    i2, _ = diffusion_rerank(idx.knn_graph(5), pads, np.array([[0.9, 0.8, -np.inf]], np.float32), DiffusionParams())
    assert i2[0, 2] == -1 and sorted(i2[0, :2]) == sorted(pads[0, :2])


@pytest.mark.parametrize("params, needle", [(dict(K=0), "K"), (dict(alpha=1.0), "alpha"), (dict(kq=True), "kq"),
                                            (dict(gamma=0.0), "gamma")])
def test_bad_parameters_are_one_line_errors(params, needle):
    with pytest.raises(DataError, match=needle) as e:
        DiffusionParams(**params).validate()
    assert "\n" not in str(e.value)


def test_a_large_index_without_a_stored_graph_is_refused(monkeypatch):
    idx, X = chain_index()
    monkeypatch.setattr(diffusion_mod, "FIRST_USE_MAX", 50)
    with pytest.raises(DataError, match="--graph") as e:
        QueryPath(idx, steps="diffusion").run(Query(vector=X[0]), top=5)
    assert "\n" not in str(e.value)
    idx.knn_graph(50)  # once a graph is in memory (or stored), it is used
    assert QueryPath(idx, steps="diffusion").run(Query(vector=X[0]), top=5).ids.shape == (1, 5)
