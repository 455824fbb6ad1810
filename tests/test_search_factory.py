"""Which faiss index (retrieval.search.factory): making one from a factory string, and the one
check for inverted lists (``ivf_of``) that building, training, merging, compaction and search use."""
from __future__ import annotations

import faiss
import numpy as np
import pytest

from retrieval.core.errors import ConfigError
from retrieval.search.factory import auto_factory, ivf_of, make_faiss_index, n_lists, train_size
from retrieval.search.index import minimum_size

D = 32


@pytest.mark.parametrize("factory,nlist,kind", [
    ("Flat", None, None),
    ("IVF8,Flat", 8, faiss.IndexIVFFlat),
    ("PCAR16,IVF8,PQ4", 8, faiss.IndexIVFPQ),  # behind a pre-transform
    ("OPQ4,IVF16_HNSW32,PQ4np", 16, faiss.IndexIVFPQ),
    ("HNSW16", None, None),
    ("PQ4", None, None),
])
def test_ivf_of_finds_the_inverted_lists_or_none(factory, nlist, kind):
    index = make_faiss_index(factory, D)
    ivf = ivf_of(index)
    if nlist is None:
        assert ivf is None
    else:
        assert isinstance(faiss.downcast_index(ivf), kind) and ivf.nlist == nlist
        ivf.nprobe = 5  # the very object inside the index, not a copy
        assert faiss.extract_index_ivf(index).nprobe == 5


def test_ivf_of_sees_through_a_refinement_of_a_trained_index():
    X = np.random.default_rng(0).normal(size=(2000, D)).astype(np.float32)
    index = make_faiss_index("IVF8,PQ4x4,RFlat", D)  # 4-bit codes: 16 centroids to train, not 256
    index.train(X)
    assert ivf_of(index).nlist == 8 and ivf_of(index).is_trained


def test_train_size_follows_the_inverted_lists():
    assert train_size(make_faiss_index("IVF1024,Flat", D), 10 ** 7, None) == 50 * 1024
    assert train_size(make_faiss_index("IVF65536_HNSW32,Flat", D), 10 ** 7, None) == 30 * 65536
    assert train_size(make_faiss_index("PQ4", D), 10 ** 7, None) == 256 * 40  # no lists: the floor


def test_make_faiss_index_reports_a_bad_string_in_one_line():
    with pytest.raises(ConfigError, match="invalid faiss factory string 'IVF8,Nope' for dimension 32") as e:
        make_faiss_index("IVF8,Nope", D)
    assert "\n" not in str(e.value)
    assert make_faiss_index("Flat", D).metric_type == faiss.METRIC_INNER_PRODUCT


def test_minimum_size_of_factories():
    assert minimum_size("Flat", 64, 10) == 0 and minimum_size("hnsw", 64, 10) == 0
    assert minimum_size("ivfpq", 64, 53) == 256 and minimum_size("opq", 64, 5000) == 256
    assert minimum_size("IVF1024,Flat", 64, 53) == 1024 and minimum_size("IVF16,PQ8x4fs", 64, 53) == 16


def test_auto_factory_follows_size_and_budget():
    assert auto_factory(5_000, 128, "4G") == "Flat"
    assert auto_factory(200_000, 128, "4G") == "HNSW32"
    assert auto_factory(200_000, 128, "4G", on_disk=True) == f"IVF{n_lists(200_000)},Flat"
    assert auto_factory(10_000_000, 128, "4G").startswith("OPQ64,IVF65536_HNSW32,PQ64")  # 5 GB raw > 4G
    assert n_lists(1_000_000) == 4096 and n_lists(10_000_000) == 65536


@pytest.mark.slow
def test_hnsw_indexes_are_made_with_a_wider_beam_that_finds_more_neighbours():
    from conftest import unit_rows

    from retrieval.search.factory import HNSW_EF_SEARCH
    from retrieval.search.tuning import knn_recall

    X, Q = unit_rows(20000, D), unit_rows(100, D, 1)
    truth = np.argsort(-(Q @ X.T), axis=1)[:, :10]
    index = make_faiss_index("HNSW32", D)
    assert faiss.downcast_index(index).hnsw.efSearch == HNSW_EF_SEARCH == 128
    assert faiss.downcast_index(make_faiss_index("PCA16,HNSW32", D).index).hnsw.efSearch == 128
    index.add(X)
    copy = faiss.deserialize_index(faiss.serialize_index(index))  # what a saved segment reads back
    assert faiss.downcast_index(copy).hnsw.efSearch == 128
    wide = knn_recall(copy.search(Q, 10)[1], truth, 10)
    faiss.downcast_index(copy).hnsw.efSearch = 16  # faiss's default
    narrow = knn_recall(copy.search(Q, 10)[1], truth, 10)
    assert wide >= 0.95 and wide > narrow + 0.05, (wide, narrow)


def test_hnsw_indexes_are_built_with_a_wider_construction_beam_that_survives_saving():
    from retrieval.search.factory import HNSW_EF_CONSTRUCTION

    for factory in ("HNSW32", "PCA16,HNSW32"):
        index = make_faiss_index(factory, D)
        copy = faiss.deserialize_index(faiss.serialize_index(index))  # the trained index a build writes
        core = faiss.downcast_index(copy)
        core = faiss.downcast_index(core.index) if isinstance(core, faiss.IndexPreTransform) else core
        assert core.hnsw.efConstruction == HNSW_EF_CONSTRUCTION == 64  # faiss's own: 40
        assert faiss.clone_index(copy) is not None


@pytest.mark.parametrize("factory, knob, lossless", [
    ("HNSW32", "ef_search", True), ("IVF16,Flat", "nprobe", True), ("IVF16_HNSW32,Flat", "nprobe", True),
    ("IVF16,PQ8np", "nprobe", False), ("OPQ8,IVF16,PQ8np", "nprobe", False), ("HNSW32,SQ8", "ef_search", False),
    ("PCA16,HNSW32", "ef_search", False), ("PQ8", None, False), ("Flat", None, False)])
def test_search_knob_and_lossless_codes_of_each_kind(factory, knob, lossless):
    from retrieval.search.factory import lossless_codes, search_knob

    index = make_faiss_index(factory, D)
    assert search_knob(index) == knob
    assert lossless_codes(index) is lossless
