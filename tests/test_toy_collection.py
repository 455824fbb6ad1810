"""retrieval.toy.collection: the generated retrieval collection: files, ground truth, masks, parts,
determinism, clutter, class folders, foreign folders refused."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import read_array

from retrieval.core.errors import DataError
from retrieval.toy.collection import (
    JUNK_VISIBLE,
    ToyCollection,
    _classify,
    export_class_folders,
    make_retrieval_collection,
)
from retrieval.toy.coseg_sets import make_coseg_sets


@pytest.fixture(scope="module")
def coll(tmp_path_factory) -> ToyCollection:
    return make_retrieval_collection(tmp_path_factory.mktemp("toy") / "c", n_objects=4, views=6,
                                     distractors=5, image_size=64, seed=3)


# ---- files and ground truth -----------------------------------------------------------------

def test_files_written_and_reloaded_identically(coll: ToyCollection) -> None:
    assert len(coll.query_paths) == 4 and len(coll.db_paths) == 4 * 5 + 5
    for p in coll.query_paths + coll.db_paths:
        img = read_array(p)
        assert img.shape == (64, 64, 3) and img.dtype == np.uint8
        assert read_array(coll.mask_path(p)).shape == (64, 64)
        assert read_array(coll.part_path(p)).shape == (64, 64)
    # the database folder holds exactly the database, and sorted names follow the database order
    listed = sorted(str(p) for p in coll.images_dir.glob("*.jpg"))
    assert listed == coll.db_paths
    back = ToyCollection.load(coll.root)
    assert back.root == coll.root
    assert back.query_paths == coll.query_paths and back.db_paths == coll.db_paths
    assert back.gnd == coll.gnd and back.db_meta == coll.db_meta and back.params == coll.params
    assert back.object_names == coll.object_names and back.part_names == coll.part_names
    np.testing.assert_array_equal(back.db_labels, coll.db_labels)
    np.testing.assert_array_equal(back.query_labels, coll.query_labels)
    np.testing.assert_array_equal(back.query_bboxes, coll.query_bboxes)
    assert back.db_labels.dtype == np.int64


def test_load_missing_or_malformed_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="ground_truth.json"):
        ToyCollection.load(tmp_path)
    (tmp_path / "ground_truth.json").write_text(json.dumps({"queries": []}))
    with pytest.raises(DataError):
        ToyCollection.load(tmp_path)


def test_ground_truth_is_consistent(coll: ToyCollection) -> None:
    labels = coll.db_labels
    distractors = set(np.nonzero(labels < 0)[0].tolist())
    assert len(distractors) == 5
    for q, g in enumerate(coll.gnd):
        obj = coll.query_labels[q]
        easy, hard, junk = set(g["easy"]), set(g["hard"]), set(g["junk"])
        assert easy | hard, f"query {q} has no positive"
        assert not (easy & hard) and not (easy & junk) and not (hard & junk)
        # only views of the query's own object, and every one of them in exactly one list
        assert easy | hard | junk == set(np.nonzero(labels == obj)[0].tolist())
        assert not (easy | hard | junk) & distractors
        for i in easy | hard | junk:
            m = coll.db_meta[i]
            assert m["label"] == obj and obj == coll.object_names.index(Path(coll.db_paths[i]).stem.split("_", 1)[1].rsplit("_v", 1)[0])
            expect = _classify(m["visible"], m["scale_ratio"], m["rotation"], m["perspective"])
            assert m["type"] == expect
            assert (i in junk) == (m["visible"] < JUNK_VISIBLE)
    # the view cycle (easy, hard, easy, hard, junk) gives each object views of every kind
    assert all(len(g["easy"]) >= 1 and len(g["hard"]) >= 1 and len(g["junk"]) >= 1 for g in coll.gnd)


def test_query_boxes_are_the_mask_boxes(coll: ToyCollection) -> None:
    for q, p in enumerate(coll.query_paths):
        m = read_array(coll.mask_path(p)) > 0
        ys, xs = np.nonzero(m)
        assert coll.gnd[q]["bbx"] == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        np.testing.assert_array_equal(coll.query_bboxes[q], coll.gnd[q]["bbx"])


# ---- masks and parts ------------------------------------------------------------------------

def test_masks_and_parts(coll: ToyCollection) -> None:
    for p, lab, meta in zip(coll.query_paths + coll.db_paths,
                            list(coll.query_labels) + list(coll.db_labels),
                            [None] * len(coll.query_paths) + coll.db_meta):
        mask = read_array(coll.mask_path(p))
        parts = read_array(coll.part_path(p))
        assert set(np.unique(mask).tolist()) <= {0, 255}
        # parts ⊆ mask (and the mask is exactly the union of the visible parts)
        np.testing.assert_array_equal(parts > 0, mask > 0)
        if lab < 0:
            assert not mask.any()
            continue
        assert mask.any(), f"{p}: empty mask"
        n_parts = len(coll.part_names[coll.object_names[lab]])
        assert parts.max() <= n_parts
        if meta is not None:
            assert abs(np.count_nonzero(mask) / mask.size - meta["mask_area"]) < 1e-3
        else:  # a query shows all of its object's parts and the whole object
            assert set(np.unique(parts).tolist()) == set(range(n_parts + 1))


# ---- determinism, clutter, folders ----------------------------------------------------------

def test_determinism(tmp_path: Path) -> None:
    kw = dict(n_objects=2, views=3, distractors=1, image_size=48)
    a = make_retrieval_collection(tmp_path / "a", seed=5, **kw)
    b = make_retrieval_collection(tmp_path / "b", seed=5, **kw)
    c = make_retrieval_collection(tmp_path / "c", seed=6, **kw)
    for i in range(len(a.db_paths)):
        assert Path(a.db_paths[i]).read_bytes() == Path(b.db_paths[i]).read_bytes()
    assert Path(a.query_paths[0]).read_bytes() == Path(b.query_paths[0]).read_bytes()
    assert Path(a.query_paths[0]).read_bytes() != Path(c.query_paths[0]).read_bytes()
    assert a.gnd == b.gnd
    # regenerating into the same folder replaces the old collection (no stale images)
    d = make_retrieval_collection(tmp_path / "a", seed=5, n_objects=1, views=2, distractors=0, image_size=48)
    assert len(list(d.images_dir.glob("*.jpg"))) == 1


def test_clutter_makes_objects_smaller_and_backgrounds_busier(tmp_path: Path) -> None:
    kw = dict(n_objects=3, views=4, distractors=0, image_size=64, seed=2)
    c0 = make_retrieval_collection(tmp_path / "c0", clutter=0.0, **kw)
    c1 = make_retrieval_collection(tmp_path / "c1", clutter=1.0, **kw)

    def q_area(c: ToyCollection) -> float:
        return float(np.mean([(read_array(c.mask_path(p)) > 0).mean() for p in c.query_paths]))

    def db_area(c: ToyCollection) -> float:
        return float(np.mean([m["mask_area"] for m in c.db_meta]))

    def edges(c: ToyCollection) -> float:  # gradient energy of the background pixels
        e = []
        for p in c.query_paths + c.db_paths:
            g = read_array(p).astype(np.float32).mean(2)
            m = read_array(c.mask_path(p)) == 0
            gx = np.abs(np.diff(g, axis=1))[:-1, :]
            gy = np.abs(np.diff(g, axis=0))[:, :-1]
            e.append(((gx + gy) * m[:-1, :-1]).sum() / max(m.sum(), 1))
        return float(np.mean(e))

    assert q_area(c1) < 0.6 * q_area(c0)
    assert 0.07 < q_area(c1) < 0.18
    assert db_area(c1) < db_area(c0)
    assert edges(c1) > edges(c0)


def test_export_class_folders(coll: ToyCollection, tmp_path: Path) -> None:
    out = export_class_folders(coll, tmp_path / "classes")
    assert sorted(out) == sorted(coll.object_names)
    for name, files in out.items():
        d = tmp_path / "classes" / name
        assert sorted(str(p) for p in d.iterdir()) == sorted(files)
        assert len(files) == 6  # the query and its 5 database views; distractors are left out
        for f in files:
            assert not Path(f).is_symlink()
    src = coll.query_paths[0]
    dst = tmp_path / "classes" / coll.object_names[0] / Path(src).name
    assert dst.read_bytes() == Path(src).read_bytes()
    no_junk = export_class_folders(coll, tmp_path / "nj", include_junk=False)
    assert sum(map(len, no_junk.values())) == sum(map(len, out.values())) - sum(len(g["junk"]) for g in coll.gnd)


def test_bad_arguments_and_foreign_folders(tmp_path: Path) -> None:
    with pytest.raises(DataError):
        make_retrieval_collection(tmp_path / "x", clutter=1.5)
    with pytest.raises(DataError):
        make_retrieval_collection(tmp_path / "x", source="drawings")
    with pytest.raises(DataError):
        make_retrieval_collection(tmp_path / "x", views=1)
    with pytest.raises(DataError):
        make_coseg_sets(tmp_path / "x", image_size=8)
    user = tmp_path / "user"
    (user / "images").mkdir(parents=True)
    (user / "images" / "holiday.jpg").write_bytes(b"precious")
    with pytest.raises(DataError, match="not from a toy generator"):
        make_retrieval_collection(user, n_objects=1, views=2, distractors=0, image_size=48)
    assert (user / "images" / "holiday.jpg").read_bytes() == b"precious"
