"""retrieval.model.pooling: GeM (against a numpy loop, its limits SPoC and MAC, the gradient in p),
masked GeM, R-MAC regions and R-MAC."""
import numpy as np
import pytest
import torch

from retrieval.model.pooling import RMAC, GeM, gem, mac, masked_gem, rmac, rmac_regions, spoc


def numpy_gem(x: np.ndarray, p: float, eps: float = 1e-6) -> np.ndarray:
    N, C, H, W = x.shape
    out = np.zeros((N, C))
    for n in range(N):
        for c in range(C):
            s = 0.0
            for i in range(H):
                for j in range(W):
                    s += max(x[n, c, i, j], eps) ** p
            out[n, c] = (s / (H * W)) ** (1.0 / p)
    return out


@pytest.mark.parametrize("p", [1.0, 2.5, 3.0, 7.0])
def test_gem_matches_numpy_loop(p):
    rng = np.random.default_rng(0)
    x = rng.random((2, 3, 4, 5)).astype(np.float32)
    x[0, 0, 0, 0] = 0.0  # exercises the eps clamp
    got = gem(torch.from_numpy(x), p=p).numpy()
    np.testing.assert_allclose(got, numpy_gem(x.astype(np.float64), p), rtol=1e-5)


def test_gem_limits_spoc_and_mac():
    x = torch.rand(3, 8, 5, 6) + 0.1
    torch.testing.assert_close(gem(x, p=1.0), spoc(x), rtol=1e-6, atol=1e-7)
    prev = None
    for p in (4.0, 16.0, 64.0, 256.0, 1024.0):
        err = (gem(x.double(), p=p) - mac(x.double())).abs().max().item()
        assert prev is None or err < prev
        prev = err
    assert prev < 0.01


def test_gem_gradient_wrt_p_is_finite_and_nonzero():
    pool = GeM()
    x = torch.rand(2, 4, 3, 3)
    x[0, 0] = 0.0  # zeros are clamped: the gradient must stay finite
    pool(x).sum().backward()
    g = pool.p.grad
    assert g is not None and torch.isfinite(g) and g.abs() > 0


def test_masked_gem_all_ones_equals_gem_and_region_equals_crop():
    x = torch.rand(2, 5, 6, 7)
    torch.testing.assert_close(masked_gem(x, torch.ones(2, 6, 7), p=3.0), gem(x, 3.0))
    m = torch.zeros(2, 6, 7)
    m[:, 1:4, 2:6] = 1
    torch.testing.assert_close(masked_gem(x, m, p=3.0), gem(x[..., 1:4, 2:6], 3.0))
    # an empty mask falls back to plain GeM
    torch.testing.assert_close(masked_gem(x, torch.zeros(2, 6, 7), 3.0), gem(x, 3.0))


def test_rmac_regions_square_and_wide():
    regs = rmac_regions(12, 12, levels=3)
    assert len(regs) == 1 + 4 + 9  # l×l regions at level l on a square map
    for top, left, h, w in rmac_regions(10, 23, levels=3):
        assert 0 <= top and top + h <= 10 and 0 <= left and left + w <= 23
    # the long side is covered at level 1
    lefts = [l for t, l, h, w in rmac_regions(10, 23, levels=1)]
    assert min(lefts) == 0 and max(lefts) + 10 == 23


def test_rmac_equals_sum_of_normalised_region_macs():
    x = torch.rand(1, 4, 6, 9)
    ref = torch.nn.functional.normalize(x.amax((-2, -1)), dim=-1)
    for t, l, h, w in rmac_regions(6, 9):
        ref = ref + torch.nn.functional.normalize(x[..., t:t + h, l:l + w].amax((-2, -1)), dim=-1)
    torch.testing.assert_close(rmac(x), ref)
    torch.testing.assert_close(RMAC()(x), ref)


def _gem_ref(x: np.ndarray, w: np.ndarray, p: float) -> np.ndarray:
    """numpy loop: f_c = (Σ_x w(x) X_c(x)^p / Σ_x w(x))^(1/p)."""
    N, C = x.shape[:2]
    out = np.zeros((N, C))
    for n in range(N):
        for c in range(C):
            out[n, c] = ((w[n] * np.maximum(x[n, c], 1e-6) ** p).sum() / w[n].sum()) ** (1 / p)
    return out


def test_masked_gem_ones_region_and_reference():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 4, 5, 6, generator=g)
    torch.testing.assert_close(masked_gem(x, torch.ones(2, 5, 6), p=3.0), gem(x, 3.0))
    m = torch.zeros(2, 5, 6)
    m[:, 1:3, 2:5] = 1
    torch.testing.assert_close(masked_gem(x, m, p=3.0), gem(x[..., 1:3, 2:5], 3.0))
    soft = torch.rand(2, 5, 6, generator=g)
    np.testing.assert_allclose(masked_gem(x.double(), soft.double(), p=2.5).numpy(),
                               _gem_ref(x.double().numpy(), soft.double().numpy(), 2.5), rtol=1e-10)


def test_masked_gem_gradient_reaches_p():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(3, 4, 5, 5, generator=g, dtype=torch.float64)
    m = torch.rand(3, 5, 5, generator=g, dtype=torch.float64)
    pool = GeM(p=3.0).double()
    pool(x, m).sum().backward()
    assert pool.p.grad is not None and torch.isfinite(pool.p.grad) and pool.p.grad.abs() > 0
    h = 1e-6  # central finite difference of the same function
    fd = (masked_gem(x, m, 3.0 + h).sum() - masked_gem(x, m, 3.0 - h).sum()) / (2 * h)
    assert float(pool.p.grad) == pytest.approx(float(fd), rel=1e-5)
