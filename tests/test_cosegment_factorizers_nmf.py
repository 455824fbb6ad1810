"""cosegment.factorizers.nmf: both solvers against numpy loops of the same updates, monotone loss, fixed-H mode."""
import numpy as np
import pytest
import torch
from scipy.optimize import nnls

from cosegment.factorizers import factorize
from cosegment.factorizers.nmf import EPS, init_factors, nmf, nmf_fit, relative_error, small_threads
from retrieval.core.errors import DataError


def _data(n=60, m=24, r=4, seed=0):
    rng = np.random.default_rng(seed)
    V = rng.random((n, r)) @ rng.random((r, m)) + 0.05 * rng.random((n, m))
    return V.astype(np.float32)


def _np_mu(V, W, H, iters):
    V, W, H = V.astype(np.float64), W.astype(np.float64), H.astype(np.float64)
    for _ in range(iters):
        W = W * (V @ H.T) / (W @ (H @ H.T) + EPS)
        H = H * (W.T @ V) / ((W.T @ W) @ H + EPS)
    return W, H


def _np_hals(V, W, H, iters, sweeps):
    V, W, H = V.astype(np.float64), np.maximum(W.astype(np.float64), EPS), np.maximum(H.astype(np.float64), EPS)
    k = W.shape[1]
    for _ in range(iters):
        A, B = V @ H.T, H @ H.T
        for _ in range(sweeps):
            for j in range(k):
                W[:, j] = np.maximum(EPS, W[:, j] + (A[:, j] - W @ B[:, j]) / B[j, j])
        C, D = W.T @ V, W.T @ W
        for _ in range(sweeps):
            for j in range(k):
                H[j] = np.maximum(EPS, H[j] + (C[j] - D[j] @ H) / D[j, j])
    return W, H


def test_init_matches_formula():
    W, H = init_factors(5, 7, 3, mean=2.0, seed=4)
    g = torch.Generator().manual_seed(4)
    s = np.sqrt(2.0 / 3)
    np.testing.assert_allclose(W.numpy(), torch.randn(5, 3, generator=g).abs().numpy() * s, rtol=1e-6)
    np.testing.assert_allclose(H.numpy(), torch.randn(3, 7, generator=g).abs().numpy() * s, rtol=1e-6)


def test_mu_equals_numpy_lee_seung():
    V = _data()
    k = 3
    W0, H0 = init_factors(*V.shape, k, float(V.mean()), seed=1)
    W, H = nmf(V, k, max_iter=30, tol=0, seed=1, solver="mu")
    Wr, Hr = _np_mu(V, W0.numpy(), H0.numpy(), 30)
    np.testing.assert_allclose(W, Wr, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(H, Hr, rtol=1e-4, atol=1e-6)
    assert W.dtype == np.float32 and W.shape == (60, 3) and H.shape == (3, 24)


def test_hals_equals_numpy_loop():
    V = _data(seed=2)
    k = 4
    W0, H0 = init_factors(*V.shape, k, float(V.mean()), seed=3)
    W, H = nmf(V, k, max_iter=15, tol=0, seed=3, solver="hals", inner=2)
    Wr, Hr = _np_hals(V, W0.numpy(), H0.numpy(), 15, 2)
    assert np.abs(W @ H - Wr @ Hr).max() < 1e-4 * np.abs(V).max()
    np.testing.assert_allclose(W, Wr, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("solver", ["mu", "hals"])
def test_loss_never_increases_and_errors_are_exact(solver):
    V = _data(seed=5)
    r = nmf_fit(V, 3, max_iter=60, tol=0, seed=0, solver=solver, check_every=1)
    e = np.array(r.errors)
    assert len(e) == 61
    assert np.all(np.diff(e) <= 1e-6), np.diff(e).max()
    assert e[-1] < 0.5 * e[0]
    # error computed from cached products equals the exact residual
    assert abs(e[-1] - relative_error(V, r.W, r.H)) < 1e-4
    assert (r.W >= 0).all() and (r.H >= 0).all()


def test_hals_reaches_lower_error_than_mu_in_same_iterations():
    V = _data(n=200, m=40, r=6, seed=6)
    e_mu = relative_error(V, *nmf(V, 6, max_iter=30, tol=0, solver="mu"))
    e_hals = relative_error(V, *nmf(V, 6, max_iter=30, tol=0, solver="hals"))
    assert e_hals < e_mu


def test_tol_stops_early():
    V = _data(seed=7)
    r = nmf_fit(V, 3, max_iter=5000, tol=1e-3, solver="hals")
    assert r.converged and r.n_iter < 5000 and r.n_iter % 10 == 0


def test_fixed_H_equals_nnls_per_row():
    V = _data(n=30, m=20, seed=8)
    _, H = nmf(V, 3, max_iter=100, tol=0, seed=0)
    Vn = _data(n=10, m=20, seed=9)
    W, H2 = nmf(Vn, 3, max_iter=500, tol=0, H=H)
    np.testing.assert_array_equal(H2, H)
    for i in range(Vn.shape[0]):
        w, _ = nnls(H.T.astype(np.float64), Vn[i].astype(np.float64))
        np.testing.assert_allclose(W[i], w, atol=2e-3 * max(1.0, w.max()))


def test_fixed_H_mu_equals_numpy_w_updates():
    V = _data(seed=10)
    _, H = nmf(V, 3, max_iter=50, tol=0)
    W0, _ = init_factors(*V.shape, 3, float(V.mean()), seed=2)
    W, _ = nmf(V, 3, max_iter=20, tol=0, seed=2, H=H, solver="mu")
    Wr = W0.numpy().astype(np.float64)
    for _ in range(20):
        Wr = Wr * (V @ H.T) / (Wr @ (H @ H.T) + EPS)
    np.testing.assert_allclose(W, Wr, rtol=1e-4, atol=1e-6)


def test_torch_in_torch_out_and_seed_determinism():
    V = torch.from_numpy(_data(seed=11))
    W1, H1 = nmf(V, 2, max_iter=20, seed=3)
    W2, H2 = nmf(V, 2, max_iter=20, seed=3)
    assert isinstance(W1, torch.Tensor) and torch.equal(W1, W2) and torch.equal(H1, H2)


def test_user_errors():
    V = _data(n=5, m=4)
    with pytest.raises(DataError, match="larger than the data allows"):
        nmf(V, 5)
    with pytest.raises(DataError, match="negative"):
        nmf(-V, 2)
    with pytest.raises(DataError, match="solver"):
        nmf(V, 2, solver="bogus")


@pytest.mark.parametrize("method", ["nmf", "sigmoid-nmf", "deep-semi-nmf"])
def test_thread_limit_is_scoped_and_restored(method):
    """A small factorisation runs on one thread, and the caller's thread count comes back after
    it, also when it raises (never a process-wide change)."""
    before = torch.get_num_threads()
    seen = []

    @small_threads
    def probe(A, k, fail=False):
        seen.append(torch.get_num_threads())
        if fail:
            raise DataError("boom")
        return A, k

    torch.set_num_threads(2)
    try:
        opts = {"epochs": 5} if method == "sigmoid-nmf" else {"pre_iter": 3, "fine_iter": 2} if method == "deep-semi-nmf" else {}
        factorize(_data(n=40, m=12), 2, method=method, **opts)
        assert torch.get_num_threads() == 2
        probe(_data(n=40, m=12), 2)
        with pytest.raises(DataError, match="boom"):
            probe(_data(n=40, m=12), 2, fail=True)
        assert seen == [1, 1] and torch.get_num_threads() == 2
        probe(np.zeros((4096, 1024), np.float32), 2)  # large work: the count is left alone
        assert seen[-1] == 2 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("solver", ["mu", "hals"])
def test_cuda_matches_cpu(solver):
    V = _data(seed=12)
    Wc, Hc = nmf(V, 3, max_iter=20, tol=0, solver=solver, inner=2)
    Wg, Hg = nmf(torch.from_numpy(V).cuda(), 3, max_iter=20, tol=0, solver=solver, inner=2)
    assert Wg.is_cuda
    np.testing.assert_allclose(Wg.cpu().numpy() @ Hg.cpu().numpy(), Wc @ Hc, rtol=1e-3, atol=1e-4)
