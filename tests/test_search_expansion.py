"""retrieval.search.expansion: α-QE and DBA against a plain numpy loop."""
from __future__ import annotations

import numpy as np
import pytest

from retrieval.search.expansion import alpha_qe, dba, dba_index, expansion_weights, first_other


def _unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def loop_expand(v, db, k, alpha, skip=None):
    """Reference: sort by exact dot product, skip the own entry, weighted sum, L2."""
    sims = db @ v
    order = [i for i in np.argsort(-sims, kind="stable") if i != skip][:k]
    out = v.astype(np.float64).copy()
    for i in order:
        w = max(float(sims[i]), 0.0) ** alpha if alpha != 0 else 1.0
        out += w * db[i]
    return out / np.linalg.norm(out)


@pytest.fixture
def data():
    rng = np.random.default_rng(3)
    db = _unit(rng.standard_normal((50, 16)))
    q = _unit(rng.standard_normal((7, 16)))
    return q, db


@pytest.mark.parametrize("k,alpha", [(1, 3.0), (2, 3.0), (5, 1.5), (3, 0.0)])
def test_alpha_qe_matches_loop(data, k, alpha):
    q, db = data
    got = alpha_qe(q, db, k=k, alpha=alpha)
    ref = np.stack([loop_expand(q[i], db, k, alpha) for i in range(len(q))])
    assert got.dtype == np.float32 and got.shape == q.shape
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_alpha_zero_is_average_qe(data):
    q, db = data
    k = 4
    got = alpha_qe(q, db, k=k, alpha=0.0)
    top = np.argsort(-(q @ db.T), axis=1)[:, :k]
    avg = q + db[top].sum(axis=1)  # plain mean of query and its k neighbours (before L2)
    np.testing.assert_allclose(got, _unit(avg), atol=1e-5)


def test_self_ids_skip_own_copy(data):
    _, db = data
    q = db[[3, 10]]
    got = alpha_qe(q, db, k=2, alpha=3.0, self_ids=np.array([3, 10]))
    ref = np.stack([loop_expand(db[i], db, 2, 3.0, skip=i) for i in (3, 10)])
    np.testing.assert_allclose(got, ref, atol=1e-5)
    # without self_ids the own copy is the top-1 neighbour and weighs 1
    plain = alpha_qe(q, db, k=1, alpha=3.0)
    np.testing.assert_allclose(plain, q, atol=1e-5)


def test_dba_matches_loop(data):
    _, db = data
    got = dba(db, k=3, alpha=2.0)
    ref = np.stack([loop_expand(db[i], db, 3, 2.0, skip=i) for i in range(len(db))])
    np.testing.assert_allclose(got, ref, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_k_zero_and_negative_similarity_clamp():
    db = np.array([[1.0, 0.0], [-1.0, 0.0]], np.float32)
    q = np.array([[0.6, 0.8]], np.float32)
    np.testing.assert_allclose(alpha_qe(q, db, k=0), q, atol=1e-6)
    # neighbour 2 has similarity -0.6: clamped to weight 0 for α = 0.5 (no NaN)
    out = alpha_qe(q, db, k=2, alpha=0.5)
    ref = q + np.sqrt(0.6) * db[0]
    np.testing.assert_allclose(out, _unit(ref), atol=1e-6)
    w = expansion_weights(np.array([-0.5, 0.25]), 0.5)
    np.testing.assert_allclose(w, [0.0, 0.5])
    with pytest.raises(ValueError):
        expansion_weights(np.array([0.5]), -1.0)


def test_expansion_helps_on_clusters():
    """On a clustered set, α-QE moves a noisy query closer to its cluster centre."""
    rng = np.random.default_rng(0)
    centres = _unit(rng.standard_normal((4, 32)))
    db = _unit(np.repeat(centres, 10, axis=0) + 0.3 * rng.standard_normal((40, 32)))
    q = _unit(centres[:1] + 0.5 * rng.standard_normal((1, 32)))
    qe = alpha_qe(q, db, k=5, alpha=1.0)
    assert float((qe @ centres[0])[0]) > float((q @ centres[0])[0])


def test_dba_index(data):
    from retrieval.search.index import ImageIndex

    _, db = data
    idx = ImageIndex(db.shape[1], "Flat", fingerprint="fp")
    idx.add(db, [f"{i}.jpg" for i in range(len(db))])
    aug = dba_index(idx, k=2, alpha=3.0)
    np.testing.assert_allclose(aug.descriptors(), dba(db, k=2, alpha=3.0), atol=1e-6)
    assert aug.paths == idx.paths and aug.fingerprint == "fp" and aug.factory == "Flat"


def test_first_other_skips_the_own_copy_and_pads():
    ids = np.array([[5, 3, 7, -1], [2, -1, -1, -1], [4, 4, 1, 0]], np.int64)
    np.testing.assert_array_equal(first_other(ids, np.array([3, -1, 4]), 2), [[5, 7], [2, -1], [1, 0]])
    np.testing.assert_array_equal(first_other(ids, None, 3), [[5, 3, 7], [2, -1, -1], [4, 4, 1]])
    assert first_other(ids, None, 6).shape == (3, 6)
