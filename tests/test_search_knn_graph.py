"""retrieval.search.knn_graph: the graph against brute force (built, grown, dropped, renumbered),
the mutual affinity against its definition, and the index folder keeping its stored graph equal to
brute force through add / remove / compact."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import unit_rows

from retrieval.search.compaction import compact_index
from retrieval.search.index import ImageIndex
from retrieval.search.knn_graph import (
    KnnGraph,
    build_knn_graph,
    drop_from_graph,
    grow_knn_graph,
    renumber_graph,
)


def brute(X: np.ndarray, k: int, removed=()) -> KnnGraph:
    """Row by row: sort the other live ids by inner product (numpy, no faiss)."""
    N = X.shape[0]
    gone = set(int(i) for i in removed)
    ids = np.full((N, k), -1, np.int64)
    sims = np.full((N, k), -np.inf, np.float32)
    for i in range(N):
        if i in gone:
            continue
        cand = [j for j in range(N) if j != i and j not in gone]
        s = X[cand] @ X[i]
        order = np.argsort(-s, kind="stable")[:k]
        ids[i, :order.size] = np.asarray(cand)[order]
        sims[i, :order.size] = s[order]
    return KnnGraph(ids, sims, np.array(sorted(gone), np.int64))


def same(a: KnnGraph, b: KnnGraph) -> None:
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_allclose(a.sims, b.sims, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(a.removed, b.removed)


def test_build_is_brute_force():
    X = unit_rows(90, 12, seed=1)
    same(build_knn_graph(X, 7), brute(X, 7))
    same(build_knn_graph(X, 7, removed=[3, 50, 4]), brute(X, 7, [3, 4, 50]))
    tiny = build_knn_graph(X[:4], 7)  # fewer ids than k: −1 pads
    assert tiny.k == 7 and np.all(tiny.ids[:, 3:] == -1) and np.all((tiny.ids[:, :3] >= 0))
    with pytest.raises(ValueError):
        build_knn_graph(X, 0)


def test_grow_drop_renumber_equal_brute_force():
    X = unit_rows(120, 10, seed=2)
    g = build_knn_graph(X[:70], 6)
    same(grow_knn_graph(g, X), brute(X, 6))
    same(grow_knn_graph(g, X, removed=[5, 80]), brute(X, 6, [5, 80]))  # removed while growing
    d = drop_from_graph(build_knn_graph(X, 6), X, np.array([0, 17, 18, 99]))
    same(d, brute(X, 6, [0, 17, 18, 99]))
    r = renumber_graph(d)
    live = np.setdiff1d(np.arange(120), [0, 17, 18, 99])
    same(r, brute(X[live], 6))
    with pytest.raises(ValueError, match="came back"):
        grow_knn_graph(d, X, removed=[0])


def test_affinity_is_mutual_neighbours_to_the_gamma():
    X = unit_rows(40, 6, seed=3)
    g = build_knn_graph(X, 5, removed=[7])
    W = g.affinity(k=4, gamma=3.0).toarray()
    want = np.zeros((40, 40))
    for i in range(40):
        for j in range(40):
            if i != j and j in g.ids[i, :4] and i in g.ids[j, :4]:
                want[i, j] = max(float(X[i] @ X[j]), 0.0) ** 3
    np.testing.assert_allclose(W, want, rtol=1e-5, atol=1e-9)
    assert np.count_nonzero(want) > 20 and not W[7].any()


def test_save_and_load(tmp_path):
    X = unit_rows(30, 8, seed=4)
    g = build_knn_graph(X, 5, removed=[2])
    g.save(tmp_path / "g.npz")
    same(KnnGraph.load(tmp_path / "g.npz"), g)
    assert g.nbytes() == 30 * 5 * 8 + 8


def test_the_index_folder_keeps_its_graph(tmp_path):
    X = unit_rows(150, 16, seed=5)
    folder = tmp_path / "idx"
    idx = ImageIndex(16, "Flat", fingerprint="fp")
    idx.add(X[:100], [f"/p/{i}.jpg" for i in range(100)])
    idx.save(folder)
    assert not idx.has_stored_graph
    idx.store_graph(k=8)
    files = list((folder / "graph").glob("*.npz"))
    assert len(files) == 1
    again = ImageIndex.load(folder)
    assert again.has_stored_graph
    same(again.knn_graph(), brute(X[:100], 8))
    again.add(X[100:], [f"/p/{i}.jpg" for i in range(100, 150)])  # grown on add
    again.remove([3, 120])
    same(again.knn_graph(), brute(X, 8, [3, 120]))  # in memory, before saving
    again.save(folder)
    third = ImageIndex.load(folder)
    assert third.has_stored_graph and len(list((folder / "graph").glob("*.npz"))) == 1  # the old file dropped
    stored = KnnGraph.load(next((folder / "graph").glob("*.npz")))
    same(stored, brute(X, 8, [3, 120]))
    third.remove([60])
    third.save(folder)
    same(ImageIndex.load(folder).knn_graph(), brute(X, 8, [3, 60, 120]))
    compact_index(folder, progress=False)  # renumbered
    live = np.setdiff1d(np.arange(150), [3, 60, 120])
    c = ImageIndex.load(folder)
    assert c.has_stored_graph and c.ntotal == live.size
    same(KnnGraph.load(next((folder / "graph").glob("*.npz"))), brute(X[live], 8))


def test_first_use_builds_in_memory_and_writes_nothing(tmp_path):
    X = unit_rows(60, 8, seed=6)
    idx = ImageIndex(8, "Flat", fingerprint="fp")
    idx.add(X, [f"/p/{i}.jpg" for i in range(60)])
    idx.save(tmp_path / "idx")
    loaded = ImageIndex.load(tmp_path / "idx")
    same(loaded.knn_graph(5), brute(X, 5))
    assert not (tmp_path / "idx" / "graph").exists() and not loaded.has_stored_graph
