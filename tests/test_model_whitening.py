"""retrieval.model.whitening: learned (Lw) and PCA whitening against a column-major numpy/scipy
reference of the formula."""
import numpy as np
import pytest
import scipy.linalg

from retrieval.core.errors import DataError
from retrieval.model.whitening import Whitening, learn_whitening, pca_whitening


def _pairs_data(n_pairs=200, d=8, seed=0):
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(d, d))
    base = rng.normal(size=(n_pairs, d)) @ A.T + 0.5  # correlated, off-centre
    B = np.diag(np.linspace(0.05, 0.6, d)) @ rng.normal(size=(d, d))
    q = base + rng.normal(size=(n_pairs, d)) @ B.T * 0.5
    p = base + rng.normal(size=(n_pairs, d)) @ B.T * 0.5
    X = np.concatenate([q, p]).astype(np.float32)
    return X, np.arange(n_pairs), np.arange(n_pairs, 2 * n_pairs)


def _reference_lw(Xc, qidx, pidx):
    """The formula on columns (D × N), float64, scipy's Cholesky and eigh."""
    m = Xc[:, qidx].mean(axis=1, keepdims=True)
    df = Xc[:, qidx] - Xc[:, pidx]
    S = df @ df.T / df.shape[1]
    P1 = np.linalg.inv(scipy.linalg.cholesky(S, lower=True))
    Y = P1 @ (Xc - m)
    w, E = scipy.linalg.eigh(Y @ Y.T)
    E = E[:, np.argsort(w)[::-1]]
    return m[:, 0], E.T @ P1


def _align_rows(P, R):
    """Flip the sign of rows of P to match R (eigenvectors are defined up to sign)."""
    s = np.sign(np.sum(P * R, axis=1, keepdims=True))
    return P * s


def test_lw_matches_reference_and_whitens_differences():
    X, qi, pi = _pairs_data()
    w = learn_whitening(X, qi, pi)
    assert w.m.dtype == np.float32 and w.P.dtype == np.float32 and w.P.shape == (8, 8)
    m_ref, P_ref = _reference_lw(X.T.astype(np.float64), qi, pi)
    np.testing.assert_allclose(w.m, m_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_align_rows(w.P, P_ref), P_ref, rtol=1e-4, atol=1e-4 * np.abs(P_ref).max())
    # whitened matching differences have identity covariance
    df = (X[qi] - X[pi]).astype(np.float64) @ w.P.astype(np.float64).T
    np.testing.assert_allclose(df.T @ df / len(df), np.eye(8), atol=1e-4)
    assert w.jitter == 0.0


def test_lw_apply_is_projection_then_l2_and_reduces_dim():
    X, qi, pi = _pairs_data(seed=1)
    w = learn_whitening(X, qi, pi)
    Y = w.apply(X, dim=3)
    ref = (X.astype(np.float64) - w.m) @ w.P[:3].T.astype(np.float64)
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    assert Y.shape == (len(X), 3) and Y.dtype == np.float32
    np.testing.assert_allclose(Y, ref, atol=1e-5)
    w2 = Whitening.from_state(w.to_state())
    np.testing.assert_array_equal(w2.apply(X), w.apply(X))
    with pytest.raises(ValueError):
        w.apply(X[:, :5])


def test_lw_rank_deficient_uses_jitter():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(10, 16)).astype(np.float32)  # 5 pairs in 16-D: S has rank ≤ 5
    w = learn_whitening(X, np.arange(5), np.arange(5, 10))
    assert w.jitter > 0 and np.isfinite(w.P).all()
    with pytest.raises(DataError):
        learn_whitening(X, [0], [1])


def test_pca_whitening_reference():
    X, _, _ = _pairs_data(seed=3)
    w = pca_whitening(X)
    Xc = X.astype(np.float64) - X.mean(axis=0)
    vals, E = scipy.linalg.eigh(Xc.T @ Xc / len(X))
    order = np.argsort(vals)[::-1]
    P_ref = np.diag(vals[order] ** -0.5) @ E[:, order].T
    np.testing.assert_allclose(_align_rows(w.P, P_ref), P_ref, rtol=1e-4, atol=1e-4 * np.abs(P_ref).max())
    Y = Xc @ w.P.T.astype(np.float64)
    np.testing.assert_allclose(Y.T @ Y / len(Y), np.eye(8), atol=1e-4)
    assert w.kind == "pca"


def test_ledoit_wolf_matches_sklearn_and_shrunk_lw_whitens_shrunk_s():
    sk = pytest.importorskip("sklearn.covariance")
    rng = np.random.default_rng(4)
    Z = rng.normal(size=(30, 12)) * np.linspace(0.2, 2, 12)
    from retrieval.model.whitening import ledoit_wolf_shrinkage

    _, a_ref = sk.ledoit_wolf(Z, assume_centered=True)
    assert ledoit_wolf_shrinkage(Z) == pytest.approx(a_ref, rel=1e-6)
    X = rng.normal(size=(40, 12)).astype(np.float32)
    qi, pi = np.arange(20), np.arange(20, 40)
    w = learn_whitening(X, qi, pi, shrinkage=0.3)
    df = (X[qi] - X[pi]).astype(np.float64)
    S = df.T @ df / 20
    S = 0.7 * S + 0.3 * np.trace(S) / 12 * np.eye(12)
    P = w.P.astype(np.float64)
    np.testing.assert_allclose(P @ S @ P.T, np.eye(12), atol=1e-4)
    assert learn_whitening(X, qi, pi, shrinkage="auto").shrinkage > 0
