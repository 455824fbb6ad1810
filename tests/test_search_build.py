"""retrieval.search.build: an index built from descriptor shards, in memory or with its inverted lists
on disk, answers as brute force does."""
from __future__ import annotations

import os

import numpy as np
from conftest import fake_shards, unit_rows

from retrieval.search.build import build_index_from_shards
from retrieval.search.index import ImageIndex


def test_on_disk_index_returns_the_in_memory_top_k_and_moves_with_its_folder(tmp_path):
    X, Q = unit_rows(3000, 16), unit_rows(20, 16, 1)
    fake_shards(tmp_path / "desc", X, 700)
    mem = build_index_from_shards(tmp_path / "desc", tmp_path / "mem", factory="IVF16,Flat", progress=False)
    disk = build_index_from_shards(tmp_path / "desc", tmp_path / "disk", factory="IVF16,Flat", on_disk=True,
                                   progress=False)
    assert mem.factory == disk.factory == "IVF16,Flat" and disk.on_disk
    assert list((tmp_path / "disk" / "segments").glob("*.ivfdata"))
    os.rename(tmp_path / "disk", tmp_path / "moved")  # the lists file is found beside its index
    a, b = ImageIndex.load(tmp_path / "mem"), ImageIndex.load(tmp_path / "moved")
    for kw in ({"rerank": False}, {}):
        sa, ia = a.search(Q, 10, **kw)
        sb, ib = b.search(Q, 10, **kw)
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_allclose(sa, sb, rtol=1e-6)
    ref = np.argsort(-(Q @ X.T), 1)[:, :10]
    _, ib = b.search(Q, 10, nprobe=16)  # every list visited + exact re-ranking = exact search
    np.testing.assert_array_equal(ib, ref)
    assert b.paths[int(ib[0, 0])] == f"/img/{ref[0, 0]}.jpg"
