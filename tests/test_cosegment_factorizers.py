"""cosegment.factorizers: the common factorize() / project() API over every registered factoriser."""
import numpy as np
import pytest
import torch
from conftest import low_rank_activations
from scipy.optimize import nnls

from cosegment.factorizers import FACTORIZERS, factorize, project
from retrieval.core.errors import DataError


@pytest.mark.slow
@pytest.mark.parametrize("method", list(FACTORIZERS))
def test_factorize_registry(method):
    A = low_rank_activations(seed=7)
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
        factorize(low_rank_activations(), 2, method="pca")


def test_project_is_nnls_even_for_mixed_sign_H():
    rng = np.random.default_rng(8)
    H = rng.normal(size=(3, 12)).astype(np.float32)
    A = np.maximum(rng.normal(size=(6, 12)), 0).astype(np.float32)
    W = project(A, H, max_iter=2000, tol=0)
    for i in range(6):
        w, _ = nnls(H.T.astype(np.float64), A[i].astype(np.float64))
        np.testing.assert_allclose(W[i], w, atol=1e-3)
