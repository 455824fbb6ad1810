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
