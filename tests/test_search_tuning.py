"""retrieval.search.tuning: recall@k against exact search (hand-worked and against a set loop), and
the cheapest knob value reaching a recall on a real faiss IVF index."""
from __future__ import annotations

import faiss
import numpy as np
import pytest
from conftest import unit_rows

from retrieval.search.tuning import knn_recall, smallest_reaching


def test_knn_recall_hand_worked():
    truth = np.array([[1, 2, 3, 9], [4, 5, 6, 9]])
    ids = np.array([[3, 1, 7, 2], [-1, -1, 4, 5]])
    # k=2: query 0 has {3, 1} ∩ {1, 2} = {1} → 1/2; query 1 has {−1} ∩ {4, 5} = ∅ → 0
    assert knn_recall(ids, truth, 2) == pytest.approx(0.25)
    # k=3: {3, 1, 7} ∩ {1, 2, 3} = 2/3; {−1, −1, 4} ∩ {4, 5, 6} = 1/3
    assert knn_recall(ids, truth, 3) == pytest.approx(0.5)
    assert knn_recall(truth, truth, 4) == 1.0
    # −1 in both lists (fewer results than k) is not a hit
    assert knn_recall(np.array([[-1]]), np.array([[-1]]), 1) == 0.0


def test_knn_recall_matches_a_set_loop():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 30, (50, 12))  # duplicates and misses
    truth = np.stack([rng.permutation(30)[:10] for _ in range(50)])  # exact lists are distinct
    for k in (1, 5, 10):
        ref = np.mean([len(set(a[:k].tolist()) & set(b[:k].tolist())) / k for a, b in zip(ids, truth)])
        # a set loop counts an id returned twice once; so does knn_recall
        assert knn_recall(ids, truth, k) == pytest.approx(ref)


def test_knn_recall_refuses_mismatched_shapes():
    with pytest.raises(ValueError):
        knn_recall(np.zeros((3, 5), np.int64), np.zeros((4, 5), np.int64), 5)
    with pytest.raises(ValueError):
        knn_recall(np.zeros((3, 5), np.int64), np.zeros((3, 5), np.int64), 6)


def test_smallest_reaching_stops_at_the_first_value_that_reaches():
    asked = []

    def recall_of(v):
        asked.append(v)
        return min(1.0, v / 8)

    value, seen = smallest_reaching([1, 2, 4, 8, 16], recall_of, 0.5)
    assert value == 4 and asked == [1, 2, 4] and seen == [(1, 0.125), (2, 0.25), (4, 0.5)]
    value, seen = smallest_reaching([1, 2], recall_of, 0.9)
    assert value is None and len(seen) == 2


def test_smallest_reaching_tunes_nprobe_of_an_ivf_index():
    X, Q = unit_rows(4000, 32), unit_rows(50, 32, 1)
    truth = np.argsort(-(Q @ X.T), axis=1)[:, :10]
    index = faiss.index_factory(32, "IVF32,Flat", faiss.METRIC_INNER_PRODUCT)
    index.train(X)
    index.add(X)

    def recall_of(nprobe):
        index.nprobe = nprobe
        return knn_recall(index.search(Q, 10)[1], truth, 10)

    value, seen = smallest_reaching([1, 2, 4, 8, 16, 32], recall_of, 0.9)
    recalls = [r for _, r in seen]
    assert value is not None and recalls[-1] >= 0.9 and all(r < 0.9 for r in recalls[:-1])
    assert recall_of(32) == pytest.approx(1.0)  # every list probed: the exact answer (lossless codes)
    assert recalls[0] < 1.0  # one list of 32 misses neighbours: the tuning had something to find


def test_without_self_drops_each_rows_own_id_as_a_loop_does():
    from retrieval.search.tuning import without_self

    rng = np.random.default_rng(3)
    own = rng.integers(0, 20, 40)
    ids = np.stack([rng.permutation(20)[:8] for _ in range(40)])
    ids[::5, 3] = -1  # fewer results than asked
    ids[1::7] = np.arange(8) + 100  # own id absent
    got = without_self(ids, own, 6)
    for row, o, g in zip(ids, own, got):
        ref = [int(i) for i in row if i != o and i >= 0][:6]
        assert g.tolist() == ref + [-1] * (6 - len(ref))
    assert without_self(np.array([[5, 1]]), np.array([5]), 3).tolist() == [[1, -1, -1]]
    with pytest.raises(ValueError):
        without_self(np.zeros((3, 4), np.int64), np.zeros(2, np.int64), 2)


def test_nprobe_ladder_doubles_up_to_every_list():
    from retrieval.search.tuning import EF_LADDER, nprobe_ladder

    assert nprobe_ladder(32) == [1, 2, 4, 8, 16, 32]
    assert nprobe_ladder(48) == [1, 2, 4, 8, 16, 32, 48] and nprobe_ladder(1) == [1]
    assert list(EF_LADDER) == sorted(set(EF_LADDER)) and all(b / a <= 1.34 for a, b in zip(EF_LADDER, EF_LADDER[1:]))
