"""The growable descriptor file (retrieval.search.descriptor_file): a plain .npy file, appended to
in place; an interrupted append's rows are dropped by the next one."""
from __future__ import annotations

import numpy as np
import pytest

from retrieval.core.errors import DataError
from retrieval.search import descriptor_file


def rows(n, d=8, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def test_a_file_written_from_blocks_is_a_plain_npy_file(tmp_path):
    X = rows(50)
    assert descriptor_file.create(tmp_path / "d.npy", 8, [X[:20], X[20:20], X[20:].astype(np.float64)]) == 50
    np.testing.assert_array_equal(np.load(tmp_path / "d.npy"), X)
    assert descriptor_file.read_header(tmp_path / "d.npy") == (50, 8, descriptor_file.HEADER_BYTES)
    np.testing.assert_array_equal(descriptor_file.open_rows(tmp_path / "d.npy", 30), X[:30])
    np.testing.assert_array_equal(descriptor_file.read_rows(tmp_path / "d.npy", 10, 45), X[10:45])
    assert descriptor_file.open_rows(tmp_path / "d.npy", 0).shape == (0, 8)
    assert descriptor_file.create(tmp_path / "empty.npy", 8) == 0 and np.load(tmp_path / "empty.npy").shape == (0, 8)


def test_append_writes_after_the_committed_rows_and_drops_the_rest(tmp_path):
    X = rows(40)
    descriptor_file.create(tmp_path / "d.npy", 8, [X[:10]])
    assert descriptor_file.append(tmp_path / "d.npy", X[10:25], 10) == 25
    np.testing.assert_array_equal(np.load(tmp_path / "d.npy"), X[:25])
    # an append whose commit never happened: its caller still counts 25 rows, so the next append
    # at 25 replaces them
    descriptor_file.append(tmp_path / "d.npy", rows(7, seed=9), 25)
    assert descriptor_file.append(tmp_path / "d.npy", X[25:], 25) == 40
    np.testing.assert_array_equal(np.load(tmp_path / "d.npy"), X)
    np.testing.assert_array_equal(descriptor_file.open_rows(tmp_path / "d.npy", 40), X)


def test_what_does_not_fit_is_refused(tmp_path):
    descriptor_file.create(tmp_path / "d.npy", 8, [rows(5)])
    with pytest.raises(ValueError, match="do not fit a file of 8-d rows"):
        descriptor_file.append(tmp_path / "d.npy", rows(3, d=4), 5)
    with pytest.raises(DataError, match="fewer than the 6 descriptors"):
        descriptor_file.open_rows(tmp_path / "d.npy", 6)
    with pytest.raises(DataError, match="ends before row 9"):
        descriptor_file.read_rows(tmp_path / "d.npy", 2, 9)
    np.save(tmp_path / "ints.npy", np.zeros((3, 2), np.int64))
    with pytest.raises(DataError, match="C-order float32"):
        descriptor_file.read_header(tmp_path / "ints.npy")
    (tmp_path / "text.npy").write_text("not numpy")
    with pytest.raises(DataError, match="not a .npy file"):
        descriptor_file.read_header(tmp_path / "text.npy")
