"""retrieval.search.topk: exact top-k over blocks of rows and faiss searches that skip removed ids
inside faiss, against numpy."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import unit_rows

D = 16


@pytest.mark.slow
@pytest.mark.parametrize("factory", ["IVF8,Flat", "PCAR16,IVF8,PQ4np", "HNSW32", "PQ4np"])
def test_search_without_skips_ids_inside_faiss(factory):
    import faiss

    from retrieval.search.index import make_faiss_index
    from retrieval.search.topk import search_without

    X, Q = unit_rows(3000, D), unit_rows(15, D, 1)
    index = make_faiss_index(factory, D)
    index.train(X)
    index.add(X)
    faiss.ParameterSpace().set_index_parameters(index, "nprobe=8" if "IVF" in factory else
                                                ("efSearch=256" if "HNSW" in factory else ""))
    gone = np.random.default_rng(0).choice(3000, 2700, replace=False)  # 90 % removed
    s, i = search_without(index, Q, 10, gone)
    assert i.shape == (15, 10) and (i >= 0).all() and not np.isin(i, gone).any()
    S = Q @ X.T
    S[:, gone] = -np.inf
    exact = np.argsort(-S, 1)[:, :10]
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(i, exact)])
    if factory in ("IVF8,Flat", "HNSW32"):  # lossless codes, every list / a wide beam: the exact answer
        assert recall > 0.97, recall
        np.testing.assert_allclose(s, np.take_along_axis(S, i, 1), rtol=1e-5)
    else:
        assert recall > 0.3, recall


def test_exact_search_with_removed_ids_matches_numpy():
    from retrieval.search.topk import exact_knn

    X, Q = unit_rows(1000, D), unit_rows(7, D, 1)
    removed = np.sort(np.random.default_rng(1).choice(1000, 600, replace=False))
    s, i = exact_knn(Q, [(X[:400], 0), (X[400:], 400)], 12, removed)
    S = Q @ X.T
    S[:, removed] = -np.inf
    ref = np.argsort(-S, 1, kind="stable")[:, :12]
    np.testing.assert_array_equal(i, ref)
    np.testing.assert_allclose(s, np.take_along_axis(S, ref, 1), rtol=1e-5)


def test_rerank_exact_orders_candidates_by_their_inner_products_as_a_loop_does():
    from retrieval.search.topk import rerank_exact

    X, Q = unit_rows(50, D), unit_rows(4, D, 1)
    cand = np.random.default_rng(2).choice(50, (4, 12), replace=True).astype(np.int64)
    cand[1, 3:] = -1  # fewer candidates than asked
    s, i = rerank_exact(Q, cand, lambda ids: X[ids], 5)
    assert s.dtype == np.float32 and i.shape == (4, 5)
    for q in range(4):
        pairs = [(-float(X[c] @ Q[q]) if c >= 0 else np.inf, j, int(c)) for j, c in enumerate(cand[q])]
        want = [c for _, _, c in sorted(pairs)[:5]]  # ties: candidate order; −1 last
        assert i[q].tolist() == want
        live = i[q] >= 0
        np.testing.assert_allclose(s[q][live], X[i[q][live]] @ Q[q], rtol=1e-5)
        assert np.isneginf(s[q][~live]).all()
