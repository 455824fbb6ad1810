"""retrieval.search.verify: tentative matches against a brute-force loop; robust fits on synthetic
point sets with a known transform and outliers (inlier count, recovered matrix, inlier pairs);
the threshold's scaling with image size; determinism; one-line errors."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import unit_rows

from retrieval.core.errors import DataError
from retrieval.search.local_features import LocalFeatures
from retrieval.search.verify import Verification, match_descriptors, verify_pair

H_TRUE = np.array([[0.92, 0.12, 25.0], [-0.06, 1.05, -12.0], [1.5e-4, -8e-5, 1.0]])


def project(M: np.ndarray, xy: np.ndarray) -> np.ndarray:
    p = np.c_[xy.astype(np.float64), np.ones(len(xy))] @ M.T
    return p[:, :2] / p[:, 2:3]


def scene(M=H_TRUE, n_in=120, n_out=40, n_extra=60, noise=0.3, size=(640, 480), seed=0):
    """Image a's features; image b holds the first n_in projected by M (plus noise), n_out with the
    same descriptors at wrong places (≥ 60 px off), and n_extra unrelated features in each."""
    rng = np.random.default_rng(seed)
    n = n_in + n_out
    xa = rng.uniform([40, 40], [size[0] - 40, size[1] - 40], (n + n_extra, 2)).astype(np.float32)
    da = unit_rows(n + n_extra, 32, seed=seed + 1)
    xb = project(M, xa[:n]) + rng.normal(0, noise, (n, 2))
    off = rng.uniform(60, 200, (n_out, 2)) * rng.choice([-1, 1], (n_out, 2))
    xb[n_in:] += off
    xb = np.r_[xb, rng.uniform(0, 600, (n_extra, 2))].astype(np.float32)
    db = np.r_[da[:n] + rng.normal(0, 0.01, (n, 32)), unit_rows(n_extra, 32, seed=seed + 2)].astype(np.float32)
    perm = rng.permutation(len(xb))  # b's features in another order
    return LocalFeatures(xa, da, size), LocalFeatures(xb[perm], db[perm], size), perm


def test_match_descriptors_is_the_mutual_ratio_test():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(40, 8)).astype(np.float32)
    b = np.r_[a[:25] + rng.normal(0, 0.3, (25, 8)), rng.normal(size=(30, 8))].astype(np.float32)
    for ratio, mutual in [(0.8, True), (0.8, False), (1.0, True), (0.6, True)]:
        want = []
        for i in range(len(a)):
            d = [float(np.sqrt(((a[i] - b[j]) ** 2).sum())) for j in range(len(b))]
            j = int(np.argmin(d))
            d2 = sorted(d)[1]
            if ratio < 1.0 and not d[j] < ratio * d2:
                continue
            if mutual and int(np.argmin([((a[k] - b[j]) ** 2).sum() for k in range(len(a))])) != i:
                continue
            want.append((i, j))
        got = match_descriptors(a, b, ratio=ratio, mutual=mutual)
        assert got.dtype == np.int64 and [tuple(p) for p in got] == want
    assert match_descriptors(a, b[:1]).shape == (0, 2)  # no second neighbour: no ratio test
    assert match_descriptors(a[:0], b).shape == (0, 2)
    with pytest.raises(DataError, match="cannot be matched"):
        match_descriptors(a, b[:, :4])


@pytest.mark.parametrize("method", ["magsac", "ransac"])
def test_homography_inliers_and_matrix(method):
    a, b, perm = scene()
    v = verify_pair(a, b, method=method)
    assert isinstance(v, Verification)
    assert v.inliers == 120 and v.tentative == 160 and v.matches.shape == (120, 4) and v.matches.dtype == np.float32
    M = v.matrix / v.matrix[2, 2]
    np.testing.assert_allclose(M, H_TRUE, rtol=0.02, atol=2e-3 * np.abs(H_TRUE).max())
    grid = np.array([[x, y] for x in (0, 320, 640) for y in (0, 240, 480)], np.float32)
    np.testing.assert_allclose(project(M, grid), project(H_TRUE, grid), atol=1.0)  # < 1 px over the image
    # inlier pairs are true correspondences, each in its own image's pixels
    ia = {tuple(np.round(p, 3)) for p in a.xy[:120]}
    assert all(tuple(np.round(m[:2], 3)) in ia for m in v.matches)
    np.testing.assert_allclose(project(H_TRUE, v.matches[:, :2]), v.matches[:, 2:], atol=2.0)
    again = verify_pair(a, b, method=method)  # seeded: the same pair, the same answer
    assert again.inliers == v.inliers and np.array_equal(again.matrix, v.matrix)


@pytest.mark.parametrize("model", ["affine", "similarity"])
def test_affine_and_similarity_models(model):
    c, s = np.cos(0.3) * 1.2, np.sin(0.3) * 1.2
    A = np.array([[c, -s, 30.0], [s, c, -20.0], [0, 0, 1.0]])
    if model == "affine":
        A[0, 1] += 0.2
    a, b, _ = scene(M=A, n_in=80, n_out=30, seed=4)
    v = verify_pair(a, b, model=model)
    assert v.inliers == 80
    np.testing.assert_allclose(v.matrix, A, atol=0.02 * np.abs(A).max())
    assert np.array_equal(v.matrix[2], [0.0, 0.0, 1.0])


def test_threshold_grows_with_image_b():
    # correspondences 12-18 px off: outliers at 640 px (threshold 6), inliers in a 2560 px image b
    # (threshold 24), where detection at 640 px is 4x coarser
    rng = np.random.default_rng(5)
    xa = rng.uniform(0, 600, (100, 2)).astype(np.float32)
    da = unit_rows(100, 16, seed=6)
    err = rng.uniform(12, 18, 50)[:, None] * np.c_[np.cos(t := rng.uniform(0, 6.3, 50)), np.sin(t)]
    xb = (xa + 10.0).astype(np.float64)
    xb[50:] += err
    a = LocalFeatures(xa, da, (640, 640))
    small = verify_pair(a, LocalFeatures(xb.astype(np.float32), da, (640, 640)), method="ransac")
    large = verify_pair(a, LocalFeatures(xb.astype(np.float32), da, (2560, 2560)), method="ransac")
    assert small.inliers == 50 and large.inliers == 100


def test_nothing_to_verify():
    a, b, _ = scene(n_in=3, n_out=0, n_extra=0)
    v = verify_pair(a, b)  # 3 matches: no homography
    assert v.inliers == 0 and v.matrix is None and v.matches.shape == (0, 4) and v.tentative == 3
    empty = LocalFeatures.empty((10, 10), dim=32)
    assert verify_pair(empty, b).inliers == 0 and verify_pair(a, empty).inliers == 0


@pytest.mark.parametrize("kw, needle", [(dict(model="projective"), "verification model"),
                                        (dict(method="lmeds"), "robust fit"),
                                        (dict(ratio=0), "ratio"), (dict(threshold_px=-1), "threshold")])
def test_bad_settings_are_one_line_errors(kw, needle):
    a, b, _ = scene(seed=8)
    with pytest.raises(DataError, match=needle) as e:
        verify_pair(a, b, **kw)
    assert "\n" not in str(e.value)
