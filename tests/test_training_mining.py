"""retrieval.training.mining: hard-negative mining: other clusters only, one per cluster, the hardest
ones (vs brute force)."""
import numpy as np
import pytest
import torch

from retrieval.core.errors import DataError
from retrieval.training.mining import hardest_negatives, mine_tuples, random_tuples, tuple_labels
from retrieval.training.pairs import PairSet


def _brute_force(scores, qlab, plab, nnum):
    """Per query: the best-scoring image of every other cluster, clusters ordered by that score."""
    out = []
    for q in range(scores.shape[0]):
        best = {}
        for j in range(scores.shape[1]):
            c = int(plab[j])
            if c == qlab[q]:
                continue
            if c not in best or scores[q, j] > scores[q, best[c]]:
                best[c] = j
        ranked = sorted(best.values(), key=lambda j: -scores[q, j])
        out.append(ranked[:nnum])
    return np.array(out)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hardest_negatives_vs_brute_force(seed):
    rng = np.random.default_rng(seed)
    Q, P, C, n = 7, 60, 9, 4
    scores = rng.normal(size=(Q, P))
    plab = rng.integers(0, C, P)
    qlab = rng.integers(0, C, Q)
    got = hardest_negatives(torch.from_numpy(scores), qlab, plab, n)
    np.testing.assert_array_equal(got, _brute_force(scores, qlab, plab, n))
    for q in range(Q):
        labs = plab[got[q]]
        assert qlab[q] not in labs and len(set(labs.tolist())) == n


def test_hardest_negatives_falls_back_to_full_ranking():
    # the top of the ranking is all one other cluster: the fallback must dig deeper
    P = 100
    plab = np.zeros(P, dtype=np.int64)
    plab[-3:] = [1, 2, 3]
    scores = torch.linspace(1, 0, P)[None]
    got = hardest_negatives(scores, np.array([5]), plab, 3)
    assert got.tolist() == [[0, 97, 98]]


def _tiny_pairs(tmp_path, n_classes=6, per_class=3):
    from PIL import Image

    paths, labels = [], []
    rng = np.random.default_rng(0)
    for c in range(n_classes):
        base = rng.integers(0, 255, (4, 4, 3))
        for i in range(per_class):
            a = np.clip(base + rng.integers(-20, 20, base.shape), 0, 255).astype(np.uint8)
            p = tmp_path / f"c{c}_{i}.png"
            Image.fromarray(a).resize((32, 32)).save(p)
            paths.append(p)
            labels.append(c)
    return PairSet.from_labels(paths, labels)


def test_mine_tuples_with_network(tmp_path):
    from retrieval.model.network import ModelConfig, build_network
    from retrieval.search.extract import extract_descriptors

    pairs = _tiny_pairs(tmp_path)
    net = build_network(ModelConfig(backbone="resnet18", weights="none", image_size=32, scales=[1.0]))
    t = mine_tuples(net, pairs, nnum=3, qsize=10, poolsize=12, image_size=32, batch_size=8, workers=0,
                    seed=0, progress=False)
    assert len(t) == 10 and t.nidx.shape == (10, 3)
    labs = tuple_labels(pairs, t)
    assert np.all(labs[:, 0] == labs[:, 1])  # positives match
    for row in labs:
        assert row[0] not in row[2:] and len(set(row[2:].tolist())) == 3
    # the negatives are the hardest in the drawn pool, per the brute force on the same descriptors
    X = extract_descriptors(net, pairs.paths, image_size=32, scales=[1.0], workers=0, progress=False).descriptors
    rng = np.random.default_rng(0)  # replay mine_tuples' draws: pairs first, then the pool
    rng.permutation(pairs.n_pairs)
    pool = np.sort(rng.permutation(pairs.n_images)[:12])
    want = pool[_brute_force(X[t.qidx] @ X[pool].T, pairs.labels[t.qidx], pairs.labels[pool], 3)]
    np.testing.assert_array_equal(t.nidx, want)
    assert 0 < t.avg_neg_distance < 2


def test_mine_caps_and_errors(tmp_path):
    pairs = _tiny_pairs(tmp_path, n_classes=3, per_class=2)
    t = random_tuples(pairs, nnum=5, qsize=100, seed=0)
    assert len(t) == pairs.n_pairs and t.nidx.shape[1] == 2  # only 2 other clusters exist
    one = PairSet.from_labels(pairs.paths[:2], [0, 0])
    with pytest.raises(DataError):
        mine_tuples(None, one, nnum=2, progress=False)
