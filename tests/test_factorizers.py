"""Non-linear factorisers (sigmoid-NMF, Deep Semi-NMF) and the common factorize()/project() API."""
import numpy as np
import pytest
import torch
from scipy.optimize import nnls

from cosegment.factorizers import FACTORIZERS, factorize, project
from cosegment.factorizers.deep_semi_nmf import (
    EPS,
    deep_semi_nmf_fit,
    default_layers,
    semi_nmf,
    semi_nmf_update_H,
    semi_nmf_update_Z,
)
from cosegment.factorizers.nmf import cpu_threads_for
from cosegment.factorizers.sigmoid_nmf import sigmoid_nmf_fit
from retrieval.core.errors import DataError


def _acts(n=120, C=16, r=4, seed=0):
    rng = np.random.default_rng(seed)
    return np.maximum(rng.random((n, r)) @ rng.random((r, C)) - 0.3, 0).astype(np.float32)


def _np_semi_update(X, Z, H):
    pos = lambda M: (np.abs(M) + M) / 2  # noqa: E731
    neg = lambda M: (np.abs(M) - M) / 2  # noqa: E731
    ZtX, ZtZ = Z.T @ X, Z.T @ Z
    return H * np.sqrt((pos(ZtX) + neg(ZtZ) @ H) / (neg(ZtX) + pos(ZtZ) @ H + EPS))


def test_semi_nmf_update_matches_numpy():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(7, 11))
    Z = rng.normal(size=(7, 3))
    H = rng.random((3, 11))
    got = semi_nmf_update_H(torch.from_numpy(X), torch.from_numpy(Z), torch.from_numpy(H)).numpy()
    np.testing.assert_allclose(got, _np_semi_update(X, Z, H), rtol=1e-10)
    # a hand-checked entry: ZᵀX etc. computed element-wise
    ZtX, ZtZ = Z.T @ X, Z.T @ Z
    i, j = 1, 4
    num = max(ZtX[i, j], 0) + sum(max(-ZtZ[i, l], 0) * H[l, j] for l in range(3))
    den = max(-ZtX[i, j], 0) + sum(max(ZtZ[i, l], 0) * H[l, j] for l in range(3))
    assert got[i, j] == pytest.approx(H[i, j] * np.sqrt(num / (den + EPS)), rel=1e-10)


def test_semi_nmf_Z_is_least_squares_and_loss_falls():
    with cpu_threads_for(0):  # tiny matrices: one thread (a busy machine makes threads crawl)
        _semi_nmf_Z_is_least_squares_and_loss_falls()


def _semi_nmf_Z_is_least_squares_and_loss_falls():
    X = torch.from_numpy(_acts(seed=2).T.astype(np.float64))  # (C, n)
    rng = np.random.default_rng(3)
    H = torch.from_numpy(rng.random((3, X.shape[1])))
    Z = semi_nmf_update_Z(X, H)
    Zr = np.linalg.lstsq(H.numpy().T, X.numpy().T, rcond=None)[0].T
    np.testing.assert_allclose(Z.numpy(), Zr, rtol=1e-6, atol=1e-8)
    losses = []
    for _ in range(20):
        H = semi_nmf_update_H(X, Z, H)
        losses.append(float(((X - Z @ H) ** 2).sum()))
        Z = semi_nmf_update_Z(X, H)
        losses.append(float(((X - Z @ H) ** 2).sum()))
    assert np.all(np.diff(losses) <= 1e-9 * losses[0])
    Zs, Hs = semi_nmf(X.float(), 3, n_iter=30)
    assert (Hs >= 0).all()


def test_deep_semi_nmf_shapes_monotone_finetune_and_consistent_H():
    A = _acts(seed=4)
    r = deep_semi_nmf_fit(A, 3, layers=(5, 4, 3), pre_iter=30, fine_iter=30)
    assert r.W.shape == (120, 3) and r.H.shape == (3, 16) and (r.W >= 0).all()
    assert [z.shape for z in r.Zs] == [(16, 5), (5, 4), (4, 3)]
    assert np.all(np.diff(r.losses) <= 1e-6)
    rel2 = ((A - r.W @ r.H) ** 2).sum() / (A ** 2).sum()
    assert rel2 == pytest.approx(r.losses[-1], rel=1e-3, abs=1e-6)
    assert r.losses[-1] < 0.2
    assert default_layers(4) == (6, 5, 4)
    with pytest.raises(DataError, match="last layer"):
        deep_semi_nmf_fit(A, 3, layers=(5, 4))


@pytest.mark.parametrize("nonneg", ["clamp", "relu", "softplus"])
def test_sigmoid_nmf_loss_falls_and_W_nonnegative(nonneg):
    A = _acts(seed=5)
    r = sigmoid_nmf_fit(A, 3, epochs=150, lr=0.05, nonneg=nonneg, init="random", seed=1)
    assert r.losses[-1] < 0.3 * r.losses[0]
    assert (r.W >= 0).all()
    assert ((r.H > 0) & (r.H < 1)).all()  # σ(H)
    # the returned pair reproduces the final loss
    ms = float((A.astype(np.float64) ** 2).mean())
    assert ((A - r.W @ r.H) ** 2).mean() / ms == pytest.approx(r.losses[-1], rel=1e-3)


def test_sigmoid_nmf_from_nmf_init_improves_on_its_start():
    A = _acts(seed=6)
    r = sigmoid_nmf_fit(A, 3, epochs=100, init="nmf", init_iter=3)
    assert r.losses[-1] <= r.losses[0]
    assert (r.W >= 0).all()


@pytest.mark.parametrize("method", list(FACTORIZERS))
def test_factorize_registry(method):
    A = _acts(seed=7)
    opts = {"epochs": 30} if method == "sigmoid-nmf" else {"pre_iter": 10, "fine_iter": 5} if method == "deep-semi-nmf" else {}
    f = factorize(A, 3, method=method, seed=0, **opts)
    assert f.W.shape == (120, 3) and f.H.shape == (3, 16) and f.W.dtype == np.float32
    assert (f.W >= 0).all() and f.seconds > 0 and f.method == method
    rel = np.linalg.norm(A - f.W @ f.H) / np.linalg.norm(A)
    assert rel < 0.5
    Wt = factorize(torch.from_numpy(A), 3, method=method, **opts).W
    assert isinstance(Wt, torch.Tensor)


def test_factorize_unknown_method():
    with pytest.raises(DataError, match="unknown factorizer"):
        factorize(_acts(), 2, method="pca")


def test_project_is_nnls_even_for_mixed_sign_H():
    rng = np.random.default_rng(8)
    H = rng.normal(size=(3, 12)).astype(np.float32)
    A = np.maximum(rng.normal(size=(6, 12)), 0).astype(np.float32)
    W = project(A, H, max_iter=2000, tol=0)
    for i in range(6):
        w, _ = nnls(H.T.astype(np.float64), A[i].astype(np.float64))
        np.testing.assert_allclose(W[i], w, atol=1e-3)
