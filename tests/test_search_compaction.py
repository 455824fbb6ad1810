"""retrieval.search.compaction: compacting an index: removed ids dropped, live ids renumbered,
segments merged; search results are the old ones, renumbered."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import fake_shards, grown_index, unit_rows

from retrieval.search.build import build_index_from_shards
from retrieval.search.compaction import compact_index, new_ids
from retrieval.search.index import ImageIndex

D = 16


def test_new_ids_match_a_loop():
    removed = np.array([2, 3, 7, 11], np.int64)
    live = [i for i in range(15) if i not in set(removed.tolist())]
    expected = []
    for i in live:  # a live id moves down by one for every removed id below it
        expected.append(i - sum(1 for r in removed if r < i))
    assert new_ids(np.array(live), removed).tolist() == expected == list(range(len(live)))




def renumbered(ids: np.ndarray, removed: np.ndarray) -> np.ndarray:
    return np.where(ids >= 0, new_ids(np.clip(ids, 0, None), removed), -1)


@pytest.mark.slow
@pytest.mark.parametrize("factory", ["Flat", "IVF16,Flat", "IVF16,PQ8np", "HNSW32"])
def test_compacted_index_answers_as_before_renumbered(tmp_path, factory):
    X, Q = unit_rows(1200, D), unit_rows(25, D, 1)
    removed = np.sort(np.random.default_rng(3).choice(1200, 150, replace=False)).astype(np.int64)
    old = grown_index(tmp_path / "ix", factory, X, removed)
    assert old.n_live == 1050 and len(old.segments) == (0 if factory == "Flat" else 3)
    kws = [{}, {"rerank": False}] if factory != "Flat" else [{}]
    before = [old.search(Q, 10, nprobe=4, **kw) for kw in kws]
    rep = compact_index(tmp_path / "ix", progress=False)
    assert (rep.before, rep.removed, rep.live) == (1200, 150, 1050) and rep.bytes_after < rep.bytes_before
    new = ImageIndex.load(tmp_path / "ix")
    live = np.setdiff1d(np.arange(1200), removed)
    assert len(new) == new.n_live == 1050 and new.removed_ids.size == 0
    assert len(new.segments) == (0 if factory == "Flat" else 1)
    np.testing.assert_array_equal(new.descriptors(), X[live])
    assert list(new.paths) == [f"/p/{i}.jpg" for i in live]
    assert new.find(["/p/1199.jpg"])["/p/1199.jpg"] == (1049, (1199, 1199))  # stats kept
    for kw, (s0, i0) in zip(kws, before):
        s1, i1 = new.search(Q, 10, nprobe=4, **kw)
        if factory == "HNSW32":  # a new graph: the same neighbours, found again
            assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(i1, renumbered(i0, removed))]) > 0.95
        else:  # the same codes in the same lists: the same results, renumbered, the same scores
            np.testing.assert_array_equal(i1, renumbered(i0, removed))
            np.testing.assert_array_equal(s1, s0)


@pytest.mark.slow
def test_on_disk_index_stays_on_disk_and_answers_as_before(tmp_path):
    X, Q = unit_rows(3000, D), unit_rows(20, D, 1)
    fake_shards(tmp_path / "desc", X, 700)
    build_index_from_shards(tmp_path / "desc", tmp_path / "ix", factory="IVF16,PQ8np", on_disk=True, progress=False)
    old = ImageIndex.load(tmp_path / "ix")
    removed = np.arange(0, 3000, 7, dtype=np.int64)
    old.remove(removed)
    old.save(tmp_path / "ix")
    old = ImageIndex.load(tmp_path / "ix")
    s0, i0 = old.search(Q, 10, rerank=False)
    compact_index(tmp_path / "ix", tmp_path / "small", progress=False)
    assert list((tmp_path / "small" / "segments").glob("*.ivfdata"))
    new = ImageIndex.load(tmp_path / "small")
    assert new.on_disk and len(new) == 3000 - removed.size
    s1, i1 = new.search(Q, 10, rerank=False)
    np.testing.assert_array_equal(i1, renumbered(i0, removed))
    np.testing.assert_array_equal(s1, s0)
    assert len(ImageIndex.load(tmp_path / "ix")) == 3000  # compacting into another folder leaves this one


def test_interrupted_compaction_leaves_the_index_as_it_was(tmp_path, monkeypatch):
    import retrieval.search.index_folder as mod  # the one writer of index folders, which compaction calls

    X, Q = unit_rows(400, D), unit_rows(5, D, 1)
    old = grown_index(tmp_path / "ix", "IVF4,Flat", X, np.arange(0, 400, 3))
    s0, i0 = old.search(Q, 5)

    def die(*a, **k):
        raise KeyboardInterrupt  # everything written but meta.json, before the rename

    monkeypatch.setattr(mod, "write_meta", die)
    with pytest.raises(KeyboardInterrupt):
        compact_index(tmp_path / "ix", progress=False)
    monkeypatch.undo()
    again = ImageIndex.load(tmp_path / "ix")
    assert len(again) == 400 and len(again.segments) == 3
    s1, i1 = again.search(Q, 5)
    np.testing.assert_array_equal(i1, i0)
    assert [p.name for p in tmp_path.iterdir()] == ["ix"]  # no temporary folder left behind


def test_is_in_sorted_matches_numpy_isin():
    from retrieval.search.compaction import is_in_sorted

    rng = np.random.default_rng(5)
    for _ in range(50):
        ids = rng.integers(0, 200, rng.integers(0, 60))
        ref = np.unique(rng.integers(0, 200, rng.integers(0, 80)))
        np.testing.assert_array_equal(is_in_sorted(ids, ref), np.isin(ids, ref))
