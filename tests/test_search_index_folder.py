"""The index folder (retrieval.search.index_folder): its one writer, called by a save, an append,
a build from shards and a compaction, leaves meta.json, the segments and the path store telling the
same story; an interrupted commit leaves the folder as it was."""
from __future__ import annotations

import json

import faiss
import numpy as np
import pytest
from conftest import fake_shards, unit_rows

from retrieval.core.errors import DataError
from retrieval.search import descriptor_file
from retrieval.search.build import build_index_from_shards
from retrieval.search.compaction import compact_index
from retrieval.search.factory import is_exact, make_faiss_index
from retrieval.search.index import ImageIndex, IndexConfig
from retrieval.search.index_folder import (
    DESCRIPTORS,
    META,
    SEGMENTS,
    STORE,
    TRAINED,
    IndexInfo,
    read_index_folder,
    read_meta,
    read_segment,
    segment_bytes,
    write_index,
)
from retrieval.search.paths_store import PathStore

D = 16


def assert_consistent(folder, n, removed=()):
    """meta.json, the path store, the descriptor file and the segment files agree on ``n`` ids of
    which ``removed`` are flagged; the loaded index reports the meta that was written."""
    meta = json.loads((folder / META).read_text())
    store = PathStore(folder / STORE)
    try:
        assert store.count() == meta["count"] == n
        np.testing.assert_array_equal(store.removed_ids(), np.unique(np.asarray(removed, np.int64)))
        segs = store.info("segments", [])
    finally:
        store.close()
    assert meta["live"] == n - np.unique(np.asarray(removed, np.int64)).size
    assert descriptor_file.read_header(folder / DESCRIPTORS)[0] == n
    counts = [s["count"] for s in segs]
    assert [s["offset"] for s in segs] == [int(c) for c in np.cumsum([0] + counts)[:-1]]  # consecutive ranges
    if is_exact(meta["factory"]):
        assert segs == [] and not (folder / TRAINED).exists()
        assert meta["bytes_per_vector"] == (4.0 * D if n else None)
    else:
        assert sum(counts) == n and (folder / TRAINED).is_file()
        for s in segs:
            assert read_segment(folder / s["file"], s["ondisk"]).ntotal == s["count"]
        files = {f"{SEGMENTS}/{f.name}" for f in (folder / SEGMENTS).iterdir()}
        assert files == {s["file"] for s in segs} | {s["file"].replace(".index", ".ivfdata") for s in segs
                                                     if s["ondisk"]}  # nothing stray
        assert meta["bytes_per_vector"] == pytest.approx(segment_bytes(folder) / n)
    back = ImageIndex.load(folder)
    assert back.meta() == meta
    back.close()
    return meta


def saved_index(folder, factory, X, removed=()):
    idx = ImageIndex(D, factory, fingerprint="fp", config=IndexConfig(factory=factory, seed=1))
    idx.add(X, [f"/p/{i}.jpg" for i in range(len(X))], [(i, i) for i in range(len(X))])
    idx.remove(removed)
    idx.save(folder)
    return ImageIndex.load(folder)


@pytest.mark.parametrize("factory", ["Flat", "IVF4,Flat", "HNSW16"])
def test_save_append_and_copy_leave_a_consistent_folder(tmp_path, factory):
    X = unit_rows(300, D)
    idx = saved_index(tmp_path / "ix", factory, X[:200], removed=[3, 5])
    assert_consistent(tmp_path / "ix", 200, [3, 5])
    idx.add(X[200:], [f"/p/{i}.jpg" for i in range(200, 300)])
    idx.remove([7, 250])
    idx.save(tmp_path / "ix")  # appended in place
    meta = assert_consistent(tmp_path / "ix", 300, [3, 5, 7, 250])
    assert len(ImageIndex.load(tmp_path / "ix").segments) == (0 if factory == "Flat" else 2)
    assert meta["factory"] == factory and meta["fingerprint"] == "fp" and meta["index_config"]["seed"] == 1
    idx.add(X[:10], [f"/q/{i}.jpg" for i in range(10)])
    idx.save(tmp_path / "copy")  # the saved part copied, then what is new appended
    assert_consistent(tmp_path / "copy", 310, [3, 5, 7, 250])
    assert_consistent(tmp_path / "ix", 300, [3, 5, 7, 250])  # the folder it came from: untouched
    back = ImageIndex.load(tmp_path / "copy")
    np.testing.assert_array_equal(back.descriptors(), np.concatenate([X, X[:10]]))
    assert back.paths[305] == "/q/5.jpg" and back.find(["/p/3.jpg", "/p/4.jpg"]) == {"/p/4.jpg": (4, (4, 4))}


@pytest.mark.slow
@pytest.mark.parametrize("factory,on_disk", [("Flat", False), ("IVF8,Flat", False), ("IVF8,Flat", True),
                                             ("HNSW16", False)])
def test_build_from_shards_and_compaction_leave_a_consistent_folder(tmp_path, factory, on_disk):
    X = unit_rows(700, D)
    fake_shards(tmp_path / "desc", X, 150)
    rep = build_index_from_shards(tmp_path / "desc", tmp_path / "ix", factory=factory, on_disk=on_disk,
                                  progress=False)
    meta = assert_consistent(tmp_path / "ix", 700)
    assert meta["on_disk"] == on_disk and meta["bytes_per_vector"] == pytest.approx(rep.bytes_per_vector)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["desc", "ix"]  # the work folder is gone
    idx = ImageIndex.load(tmp_path / "ix")
    Q = unit_rows(5, D, 1)
    s0, i0 = idx.search(Q, 5, nprobe=8)
    idx.add(X[:50], [f"/again/{i}.jpg" for i in range(50)])  # an in-memory segment beside the built one
    idx.remove(np.arange(0, 700, 2))
    idx.save(tmp_path / "ix")
    assert_consistent(tmp_path / "ix", 750, np.arange(0, 700, 2))
    compact_index(tmp_path / "ix", progress=False)
    meta = assert_consistent(tmp_path / "ix", 400)
    assert meta["on_disk"] == on_disk
    new = ImageIndex.load(tmp_path / "ix")
    np.testing.assert_array_equal(new.descriptors(), np.concatenate([X[1::2], X[:50]]))
    assert new.paths[350] == "/again/0.jpg"


def test_an_interrupted_append_leaves_the_folder_as_it_was(tmp_path, monkeypatch):
    X, Q = unit_rows(300, D), unit_rows(6, D, 1)
    saved_index(tmp_path / "ix", "IVF4,Flat", X[:200], removed=[1])
    before = {f: f.read_bytes() for f in (tmp_path / "ix").rglob("*") if f.is_file()}
    s0, i0 = ImageIndex.load(tmp_path / "ix").search(Q, 8)
    idx = ImageIndex.load(tmp_path / "ix")
    idx.add(X[200:], [f"/p/{i}.jpg" for i in range(200, 300)])
    idx.remove([2, 210])

    def die(*a, **k):
        raise KeyboardInterrupt  # the rows and the segment are written, the store is not committed

    monkeypatch.setattr(PathStore, "commit", die)
    with pytest.raises(KeyboardInterrupt):
        idx.save(tmp_path / "ix")
    monkeypatch.undo()
    assert (tmp_path / "ix" / SEGMENTS / "000000000200.index").is_file()  # written, but not committed
    changed = {f.relative_to(tmp_path).as_posix() for f, b in before.items() if f.read_bytes() != b}
    assert changed == {"ix/descriptors.npy"}  # rows past the committed count (meta.json, the store: as they were)
    back = ImageIndex.load(tmp_path / "ix")
    assert len(back) == 200 and len(back.segments) == 1 and back.removed_ids.tolist() == [1]
    s1, i1 = back.search(Q, 8)
    np.testing.assert_array_equal(i1, i0)
    np.testing.assert_array_equal(s1, s0)
    back.add(X[200:], [f"/p/{i}.jpg" for i in range(200, 300)])  # the same commit again succeeds
    back.remove([2, 210])
    back.save(tmp_path / "ix")
    assert_consistent(tmp_path / "ix", 300, [1, 2, 210])
    np.testing.assert_array_equal(ImageIndex.load(tmp_path / "ix").descriptors(), X)


def test_an_interrupted_new_folder_leaves_the_old_one_and_no_temporary(tmp_path, monkeypatch):
    import retrieval.search.index_folder as mod

    X = unit_rows(120, D)
    saved_index(tmp_path / "ix", "IVF4,Flat", X[:60])
    new = ImageIndex(D, "IVF4,Flat", fingerprint="other")
    new.add(X[60:], [f"/n/{i}.jpg" for i in range(60)])

    def die(*a, **k):
        raise KeyboardInterrupt  # everything written but meta.json, before the rename

    monkeypatch.setattr(mod, "write_meta", die)
    with pytest.raises(KeyboardInterrupt):
        new.save(tmp_path / "ix")
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["ix"]
    assert_consistent(tmp_path / "ix", 60)
    assert ImageIndex.load(tmp_path / "ix").fingerprint == "fp"


def info(factory="IVF4,Flat"):
    return IndexInfo(D, factory, "fp", {}, None, IndexConfig(factory=factory))


def trained_ivf(X):
    index = make_faiss_index("IVF4,Flat", D)
    index.train(X)
    return index


def test_the_writer_refuses_a_segment_that_does_not_cover_the_new_ids(tmp_path):
    X = unit_rows(100, D)
    trained = trained_ivf(X)
    seg = faiss.clone_index(trained)
    seg.add(X[:90])
    with pytest.raises(ValueError, match="90 vectors for 100"):
        write_index(tmp_path / "ix", info(), descriptors=[X], paths=[str(i) for i in range(100)],
                    stats=[None] * 100, segment=seg, trained=trained)
    assert list(tmp_path.iterdir()) == []


def test_the_writer_moves_an_in_memory_segments_lists_to_disk(tmp_path):
    X, Q = unit_rows(400, D), unit_rows(5, D, 1)
    trained = trained_ivf(X)
    seg = faiss.clone_index(trained)
    seg.add(X)
    seg.nprobe = 4
    s0, i0 = seg.search(Q, 10)
    write_index(tmp_path / "ix", info(), descriptors=[X[:150], X[150:]], paths=[str(i) for i in range(400)],
                stats=[None] * 400, segment=faiss.clone_index(seg), ondisk=True, trained=trained)
    assert (tmp_path / "ix" / SEGMENTS / "000000.ivfdata").is_file()
    (tmp_path / "ix").rename(tmp_path / "moved")  # the lists file is found beside its segment
    saved = read_index_folder(tmp_path / "moved")
    assert saved.count == 400 and saved.paths is None and len(saved.segments) == 1
    np.testing.assert_array_equal(saved.descriptors, X)
    s1, i1 = saved.segments[0].index.search(Q, 10)
    np.testing.assert_array_equal(i1, i0)
    np.testing.assert_array_equal(s1, s0)
    saved.store.close()


def test_a_version_1_folder_is_read_as_a_list_of_paths(tmp_path):
    X = unit_rows(30, D)
    (tmp_path / "v1").mkdir()
    np.save(tmp_path / "v1" / DESCRIPTORS, X)
    (tmp_path / "v1" / "paths.json").write_text(json.dumps([f"/v/{i}" for i in range(30)]))
    (tmp_path / "v1" / META).write_text(json.dumps({"format": "gemseg-index", "factory": "Flat", "dim": D}))
    saved = read_index_folder(tmp_path / "v1")
    assert saved.store is None and saved.paths[29] == "/v/29" and saved.segments == []
    np.testing.assert_array_equal(saved.descriptors, X)
    assert saved.info == IndexInfo(D, "Flat", None, {}, None, IndexConfig())


def test_read_meta_refuses_what_is_not_an_index_this_version_reads(tmp_path):
    with pytest.raises(DataError, match="index not found"):
        read_meta(tmp_path / "nothing")
    (tmp_path / "ix").mkdir()
    with pytest.raises(DataError, match="no meta.json"):
        read_meta(tmp_path / "ix")
    (tmp_path / "ix" / META).write_text(json.dumps({"format": "gemseg-index", "version": 99}))
    with pytest.raises(DataError, match="newer gemseg"):
        read_meta(tmp_path / "ix")
    (tmp_path / "ix" / META).write_text(json.dumps({"format": "other"}))
    with pytest.raises(DataError, match="not a gemseg index"):
        read_meta(tmp_path / "ix")
