"""Two-level k-means for large coarse quantizers (retrieval.search.ivf_training), against faiss's
own flat k-means and a hand-worked split."""
import faiss
import numpy as np
import pytest

from retrieval.search.index import make_faiss_index
from retrieval.search.ivf_training import split_counts, train_index, two_level_kmeans


def clustered(n: int, d: int = 32, centres: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    C = rng.normal(size=(centres, d))
    X = C[rng.integers(0, centres, n)] + 0.5 * rng.normal(size=(n, d))
    return (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)


def test_split_counts_is_proportional_with_one_per_cluster_and_capped():
    # 10 centroids over sizes 50/30/15/5: shares 5, 3, 1.5, 0.5 → floors 5,3,1,(min)1 = 10
    assert split_counts(np.array([50, 30, 15, 5]), 10).tolist() == [5, 3, 1, 1]
    # shares 4.5, 2.7, 1.8 → floors 4, 2, 1, then the largest remainders (.8, .7) get one each
    assert split_counts(np.array([45, 27, 18]), 9).tolist() == [4, 3, 2]
    # shares 49.02, 0.98, 0: an empty cluster gets none
    assert split_counts(np.array([100, 2, 0]), 50).tolist() == [49, 1, 0]
    # shares 1.94, 1.94, 93.1 → 2, 2, 94 by remainders; the last one left can only go to the big one
    assert split_counts(np.array([2, 2, 96]), 99).tolist() == [2, 2, 95]
    rng = np.random.default_rng(0)
    for _ in range(300):
        sizes = rng.integers(0, 60, rng.integers(1, 30))
        if sizes.sum() == 0:
            continue
        k = int(rng.integers(1, sizes.sum() + 1))
        out = split_counts(sizes, k)
        assert out.sum() == k and (out <= sizes).all() and (out >= 0).all()
        if k >= (sizes > 0).sum():
            assert ((out > 0) == (sizes > 0)).all()


@pytest.mark.slow
def test_two_level_kmeans_is_as_good_as_flat_kmeans():
    X = clustered(20_000)
    k = 256
    two = two_level_kmeans(X, k, seed=0)
    assert two.shape == (k, X.shape[1]) and two.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(two, axis=1), 1.0, atol=1e-5)
    flat = faiss.Kmeans(X.shape[1], k, niter=20, seed=0, spherical=True)
    flat.train(X)
    rand = X[np.random.default_rng(1).choice(len(X), k, replace=False)]  # no k-means at all

    def fit(C: np.ndarray) -> float:  # mean inner product of a vector with its nearest centroid
        return float(faiss.knn(X, np.ascontiguousarray(C), 1, faiss.METRIC_INNER_PRODUCT)[0].mean())

    assert fit(two) >= fit(flat.centroids) - 0.01
    assert fit(two) > fit(rand) + 0.02


@pytest.mark.slow
@pytest.mark.parametrize("factory", ["IVF256,Flat", "PCAR32,IVF256,SQ8"])
def test_two_level_trained_index_searches_as_well_as_faiss_trained(factory):
    X = clustered(12_000, seed=2)
    Q = clustered(200, seed=3)
    truth = faiss.knn(Q, X, 10, faiss.METRIC_INNER_PRODUCT)[1]
    recalls = []
    for two_level_from in (2 ** 30, 64):  # faiss's own training, then two-level
        index = make_faiss_index(factory, X.shape[1])
        train_index(index, X[:10_000], two_level_from=two_level_from)
        ivf = faiss.extract_index_ivf(index)
        assert index.is_trained and ivf.quantizer.ntotal == 256
        index.add(X)
        ivf.nprobe = 16
        ids = index.search(Q, 10)[1]
        recalls.append(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, truth)]))
    assert recalls[1] >= recalls[0] - 0.03, recalls
    assert recalls[1] > 0.7, recalls  # measured 0.831 (faiss-trained 0.835): SQ8 codes, no re-ranking


@pytest.mark.slow
def test_hnsw_coarse_quantizer_assigns_with_a_wide_beam():
    X = clustered(12_000, seed=4)
    index = make_faiss_index("IVF256_HNSW32,Flat", X.shape[1])
    assert faiss.downcast_index(faiss.extract_index_ivf(index).quantizer).hnsw.efSearch == 16  # faiss's default
    train_index(index, X, two_level_from=64)
    q = faiss.downcast_index(faiss.extract_index_ivf(index).quantizer)
    assert q.hnsw.efSearch == 64
    copy = faiss.clone_index(index)  # what every segment of a growing index is made from
    assert faiss.downcast_index(faiss.extract_index_ivf(copy).quantizer).hnsw.efSearch == 64
    # the list each vector lands in is its nearest centroid's (what a narrow beam gets wrong at 65,536 lists)
    cent = q.storage.reconstruct_n(0, q.ntotal)
    nearest = faiss.knn(X, cent, 1, faiss.METRIC_INNER_PRODUCT)[1][:, 0]
    assigned = q.search(X, 1)[1][:, 0]
    assert (assigned == nearest).mean() > 0.99
