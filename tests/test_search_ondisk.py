"""Inverted lists on disk (retrieval.search.ondisk): merging IVF parts into a lists file answers
exactly as merging them in memory; lists move to disk and back."""
from __future__ import annotations

import faiss
import numpy as np
import pytest

from retrieval.search.factory import make_faiss_index
from retrieval.search.ondisk import lists_in_memory, lists_to_disk, merge_parts, read_ondisk

D = 16


def unit_rows(n, seed=0):
    x = np.random.default_rng(seed).normal(size=(n, D)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(params=["IVF16,Flat", "IVF16,PQ4np"])
def parts(request, tmp_path):
    """A trained, empty index and three part files holding 1,500 vectors under their global ids."""
    X = unit_rows(1500)
    trained = make_faiss_index(request.param, D)
    trained.train(X)
    files = []
    for k, (a, b) in enumerate(((0, 700), (700, 1100), (1100, 1500))):
        part = faiss.clone_index(trained)
        part.add_with_ids(X[a:b], np.arange(a, b, dtype=np.int64))
        faiss.write_index(part, str(tmp_path / f"part{k}.index"))
        files.append(tmp_path / f"part{k}.index")
    return trained, files


def search(index, Q, nprobe=16):
    faiss.extract_index_ivf(index).nprobe = nprobe
    return index.search(Q, 10)


def test_merging_on_disk_equals_merging_in_memory(tmp_path, parts):
    trained, files = parts
    Q = unit_rows(20, 1)
    mem = merge_parts(faiss.clone_index(trained), files)
    (tmp_path / "disk").mkdir()
    disk = merge_parts(faiss.clone_index(trained), files, tmp_path / "disk" / "lists.ivfdata")
    assert mem.ntotal == disk.ntotal == 1500
    faiss.write_index(disk, str(tmp_path / "disk" / "seg.index"))
    (tmp_path / "disk").rename(tmp_path / "moved")  # the lists file is found beside the index
    back = read_ondisk(tmp_path / "moved" / "seg.index")
    s0, i0 = search(mem, Q)
    for other in (disk, back):
        s1, i1 = search(other, Q)
        np.testing.assert_array_equal(i1, i0)
        np.testing.assert_array_equal(s1, s0)
    s2, i2 = search(lists_in_memory(back), Q)  # copied back into RAM: the same lists
    np.testing.assert_array_equal(i2, i0)
    if isinstance(faiss.downcast_index(faiss.extract_index_ivf(mem)), faiss.IndexIVFFlat):
        exact = np.argsort(-(Q @ unit_rows(1500).T), 1)[:, :10]
        np.testing.assert_array_equal(i0, exact)  # every list visited, lossless codes: the exact answer


def test_lists_moved_to_disk_answer_as_before(tmp_path, parts):
    trained, files = parts
    Q = unit_rows(20, 1)
    index = merge_parts(faiss.clone_index(trained), files)
    s0, i0 = search(index, Q, 4)
    lists_to_disk(index, tmp_path / "l.ivfdata")
    assert (tmp_path / "l.ivfdata").stat().st_size > 0
    assert isinstance(faiss.downcast_InvertedLists(faiss.extract_index_ivf(index).invlists),
                      faiss.OnDiskInvertedLists)
    s1, i1 = search(index, Q, 4)
    np.testing.assert_array_equal(i1, i0)
    np.testing.assert_array_equal(s1, s0)


@pytest.mark.slow
def test_only_empty_ivf_indexes_are_merged_into(tmp_path, parts):
    trained, files = parts
    with pytest.raises(ValueError, match="only IVF indexes"):
        merge_parts(make_faiss_index("HNSW16", D), files)
    full = merge_parts(faiss.clone_index(trained), files[:1])
    with pytest.raises(ValueError, match="empty index"):
        merge_parts(full, files[1:])
    with pytest.raises(ValueError, match="only IVF indexes"):
        lists_to_disk(make_faiss_index("Flat", D), tmp_path / "l.ivfdata")
