"""retrieval.dedup.pairs: range search against numpy brute force, exact and through IVF."""
from __future__ import annotations

import numpy as np
import pytest

from retrieval.core.errors import DataError
from retrieval.dedup.pairs import Pairs, n_lists_for, range_pairs


def _planted(n: int, d: int, n_copies: int, seed: int = 0) -> np.ndarray:
    """``n`` random unit rows, the last ``n_copies`` noisy copies of the first ones."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(np.float32)
    X[n - n_copies:] = X[:n_copies] + 0.25 * rng.standard_normal((n_copies, d)).astype(np.float32)
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def _brute(X: np.ndarray, t: float) -> set:
    S = X @ X.T
    i, j = np.nonzero(np.triu(S >= t, 1))
    return set(zip(i.tolist(), j.tolist()))


def test_exact_range_search_finds_exactly_the_pairs_numpy_finds():
    X = _planted(600, 32, 40)
    got = range_pairs(X, 0.7)
    want = _brute(X, 0.7)
    assert want and set(zip(got.i.tolist(), got.j.tolist())) == want
    assert np.all(got.i < got.j)
    np.testing.assert_allclose(got.score, np.einsum("md,md->m", X[got.i], X[got.j]), atol=1e-5)
    assert list(zip(got.i, got.j)) == sorted(zip(got.i, got.j))


@pytest.mark.slow
def test_ivf_range_search_keeps_exact_scores_and_nearly_all_pairs():
    X = _planted(6000, 32, 300, seed=1)
    got = range_pairs(X, 0.7, exact_up_to=1000, nlist=32, nprobe=8)
    want = _brute(X, 0.7)
    found = set(zip(got.i.tolist(), got.j.tolist()))
    assert found <= want  # re-scored exactly: nothing below the threshold
    assert len(found) / len(want) >= 0.95
    np.testing.assert_allclose(got.score, np.einsum("md,md->m", X[got.i], X[got.j]), atol=1e-5)


def test_memory_mapped_descriptors_are_searched_without_loading(tmp_path):
    X = _planted(300, 16, 20, seed=2)
    np.save(tmp_path / "x.npy", X)
    M = np.load(tmp_path / "x.npy", mmap_mode="r")
    assert set(zip(*[a.tolist() for a in (range_pairs(M, 0.6).i, range_pairs(M, 0.6).j)])) == _brute(X, 0.6)


def test_pairs_select_and_empty():
    p = Pairs(np.array([0, 1]), np.array([2, 3]), np.array([0.9, 0.8], np.float32))
    assert len(p.select(np.array([False, True]))) == 1 and len(Pairs.empty()) == 0


def test_list_count_grows_as_the_square_root():
    assert n_lists_for(10_000) == 512 and n_lists_for(1_000_000) == 4096


def test_an_empty_matrix_is_one_clear_error():
    with pytest.raises(DataError, match="N ≥ 1"):
        range_pairs(np.zeros((0, 8), np.float32), 0.5)
