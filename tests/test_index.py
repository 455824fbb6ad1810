
import numpy as np
import pytest

import retrieval.search.index as index_mod
from retrieval.core.errors import DataError, ModelMismatchError
from retrieval.search.index import ImageIndex, resolve_factory


def unit_rows(n, d, seed=0):
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_flat_search_equals_numpy_brute_force():
    X, Q = unit_rows(200, 32, 0), unit_rows(7, 32, 1)
    idx = ImageIndex(32, "Flat", fingerprint="abc")
    idx.add(X[:120], [f"a{i}" for i in range(120)])
    idx.add(X[120:], [f"b{i}" for i in range(80)])  # adding in two steps
    scores, ids = idx.search(Q, 10)
    S = Q @ X.T
    ref_ids = np.argsort(-S, axis=1)[:, :10]
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_allclose(scores, np.take_along_axis(S, ref_ids, 1), rtol=1e-5, atol=1e-6)
    assert idx.paths[ids[0, 0]] == (f"a{ref_ids[0, 0]}" if ref_ids[0, 0] < 120 else f"b{ref_ids[0, 0] - 120}")


def test_save_load_round_trip_and_fingerprint_refusal(tmp_path):
    X = unit_rows(50, 16)
    idx = ImageIndex(16, "Flat", model_config={"backbone": "x"}, fingerprint="fp1")
    idx.add(X, [f"img{i}.jpg" for i in range(50)])
    idx.save(tmp_path / "ix")
    back = ImageIndex.load(tmp_path / "ix")
    assert back.paths == idx.paths and back.fingerprint == "fp1" and back.model_config == {"backbone": "x"}
    np.testing.assert_array_equal(back.descriptors(), X)
    s1, i1 = idx.search(X[:3], 5)
    s2, i2 = back.search(X[:3], 5, fingerprint="fp1")
    np.testing.assert_array_equal(i1, i2)
    with pytest.raises(ModelMismatchError, match="fp2"):
        back.search(X[:1], 5, fingerprint="fp2")
    with pytest.raises(ModelMismatchError, match="dimension"):
        back.search(unit_rows(1, 8), 5)


def test_interrupted_save_leaves_old_index_readable(tmp_path, monkeypatch):
    folder = tmp_path / "ix"
    old = ImageIndex(16, "Flat", fingerprint="fp")
    old.add(unit_rows(10, 16), [f"old{i}" for i in range(10)])
    old.save(folder)
    new = ImageIndex(16, "Flat", fingerprint="fp")
    new.add(unit_rows(20, 16, 3), [f"new{i}" for i in range(20)])

    real_create = index_mod.descriptor_file.create

    def crash(*a, **k):  # the descriptors are written, then the process "dies"
        real_create(*a, **k)
        raise KeyboardInterrupt

    monkeypatch.setattr(index_mod.descriptor_file, "create", crash)
    with pytest.raises(KeyboardInterrupt):
        new.save(folder)
    monkeypatch.undo()
    back = ImageIndex.load(folder)
    assert back.paths == [f"old{i}" for i in range(10)]
    assert [p.name for p in tmp_path.iterdir()] == ["ix"]  # no temporary left behind


def test_refuses_to_overwrite_a_foreign_folder(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    idx = ImageIndex(4, "Flat")
    idx.add(unit_rows(3, 4), ["a", "b", "c"])
    with pytest.raises(DataError, match="not a gemseg index"):
        idx.save(tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    with pytest.raises(DataError, match="not found"):
        ImageIndex.load(tmp_path / "nothing")


def test_factory_templates_and_training():
    assert resolve_factory("ivfpq", 10000, 128) == "IVF256,PQ8np"
    assert resolve_factory("IVF{n},Flat", 100, 64) == "IVF2,Flat"
    X = unit_rows(3000, 32)
    idx = ImageIndex(32, "IVF{n},Flat", fingerprint="f")
    idx.add(X, [str(i) for i in range(3000)])
    assert idx.factory.startswith("IVF") and "{" not in idx.factory
    _, ids = idx.search(X[:5], 1, nprobe=idx.factory and 1000)
    np.testing.assert_array_equal(ids[:, 0], np.arange(5))
