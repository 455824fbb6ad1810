"""cosegment.factorizers.sigmoid_nmf: W⁺·σ(H) trained with Adam: the loss falls, W stays ≥ 0."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import low_rank_activations

from cosegment.factorizers.sigmoid_nmf import sigmoid_nmf_fit


@pytest.mark.parametrize("nonneg", ["clamp", "relu", "softplus"])
def test_sigmoid_nmf_loss_falls_and_W_nonnegative(nonneg):
    A = low_rank_activations(seed=5)
    r = sigmoid_nmf_fit(A, 3, epochs=150, lr=0.05, nonneg=nonneg, init="random", seed=1)
    assert r.losses[-1] < 0.3 * r.losses[0]
    assert (r.W >= 0).all()
    assert ((r.H > 0) & (r.H < 1)).all()  # σ(H)
    # the returned pair reproduces the final loss
    ms = float((A.astype(np.float64) ** 2).mean())
    assert ((A - r.W @ r.H) ** 2).mean() / ms == pytest.approx(r.losses[-1], rel=1e-3)


def test_sigmoid_nmf_from_nmf_init_improves_on_its_start():
    A = low_rank_activations(seed=6)
    r = sigmoid_nmf_fit(A, 3, epochs=100, init="nmf", init_iter=3)
    assert r.losses[-1] <= r.losses[0]
    assert (r.W >= 0).all()
