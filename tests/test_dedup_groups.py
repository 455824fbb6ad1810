"""retrieval.dedup.groups: components against scipy, a chain split by the cap, a clique kept whole."""
from __future__ import annotations

import numpy as np
import pytest

from retrieval.dedup.groups import components, group, merge_groups
from retrieval.dedup.pairs import Pairs, range_pairs


def _vectors(gram: np.ndarray) -> np.ndarray:
    """Unit rows whose inner products are ``gram`` (Cholesky)."""
    return np.linalg.cholesky(gram).astype(np.float32)


def test_components_match_scipy():
    csgraph = pytest.importorskip("scipy.sparse.csgraph")
    import scipy.sparse as sp
    rng = np.random.default_rng(0)
    n = 200
    i = rng.integers(0, n, 150)
    j = rng.integers(0, n, 150)
    keep = i < j
    p = Pairs(i[keep], j[keep], np.ones(int(keep.sum()), np.float32))
    got = components(n, p)
    A = sp.coo_matrix((np.ones(len(p)), (p.i, p.j)), shape=(n, n))
    _, lab = csgraph.connected_components(A, directed=False)
    want = {}
    for k, l in enumerate(lab):
        want.setdefault(l, []).append(k)
    assert got == sorted((g for g in want.values() if len(g) > 1), key=lambda g: g[0])


def test_a_chain_is_split_but_a_clique_is_kept():
    # A·B = B·C = 0.9 but A·C = 0.65: A ≈ B ≈ C, A ≠ C
    chain = _vectors(np.array([[1, .9, .65], [.9, 1, .9], [.65, .9, 1]]))
    p = range_pairs(chain, 0.85)
    assert components(3, p) == [[0, 1, 2]]
    assert group(3, p, chain, cap=0.8) == [[0, 1]]  # centre B (two pairs); A first (tie: lower id); C below the cap with A
    # with a cap the chain clears, it stays one group
    assert group(3, p, chain, cap=0.6) == [[0, 1, 2]]
    clique = _vectors(np.array([[1, .9, .88], [.9, 1, .9], [.88, .9, 1]]))
    assert group(3, range_pairs(clique, 0.85), clique, cap=0.8) == [[0, 1, 2]]


def test_without_descriptors_only_the_pairs_count():
    p = Pairs(np.array([0, 1]), np.array([1, 2]), np.array([0.9, 0.9], np.float32))
    assert group(3, p, None, cap=0.8) == [[0, 1]]  # A–C was never paired: below the cap


def test_every_split_group_has_a_centre_at_the_threshold_and_no_pair_below_the_cap():
    rng = np.random.default_rng(3)
    # a drifting burst: each vector a small step from the previous one
    X = np.cumsum(rng.standard_normal((30, 16)) * 0.15, axis=0) + rng.standard_normal(16)
    X = (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)
    t, cap = 0.9, 0.85
    groups = group(30, range_pairs(X, t), X, cap)
    assert groups
    for g in groups:
        S = X[g] @ X[g].T
        assert S.min() >= cap - 1e-6
        assert any((S[k] >= t - 1e-6).all() for k in range(len(g)))
    flat = [m for g in groups for m in g]
    assert len(flat) == len(set(flat))


def test_merge_groups_joins_overlaps():
    assert merge_groups([[0, 1], [1, 5], [7, 8]]) == [[0, 1, 5], [7, 8]]
