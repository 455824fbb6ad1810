"""cosegment.factorizers.deep_semi_nmf: Semi-NMF updates against numpy, least-squares Z, monotone
loss, Deep Semi-NMF (Trigeorgis et al. 2014) shapes and fine-tuning."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import low_rank_activations

from cosegment.factorizers.deep_semi_nmf import (
    EPS,
    deep_semi_nmf_fit,
    default_layers,
    semi_nmf,
    semi_nmf_update_H,
    semi_nmf_update_Z,
)
from cosegment.factorizers.nmf import cpu_threads_for
from retrieval.core.errors import DataError


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
    X = torch.from_numpy(low_rank_activations(seed=2).T.astype(np.float64))  # (C, n)
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
    A = low_rank_activations(seed=4)
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
