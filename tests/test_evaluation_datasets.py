"""retrieval.evaluation.datasets: Oxford/Paris pickles in the public layout (and one-line errors naming
what to download and where), folders of classes, the generated toy collection."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from retrieval.core.errors import DataError
from retrieval.evaluation.datasets import load_class_folders, load_revisited


def _write_public_layout(root, name="roxford5k"):
    d = root / name / "jpg"
    d.mkdir(parents=True)
    imlist = [f"im{i}" for i in range(5)]
    for i, n in enumerate(imlist):
        Image.new("RGB", (40, 30), (i * 40, 0, 0)).save(d / f"{n}.jpg")
    Image.new("RGB", (40, 30)).save(d / "q0.jpg")
    cfg = {
        "imlist": imlist,
        "qimlist": ["q0", "im3"],
        "gnd": [
            {"bbx": [1.0, 2.0, 30.5, 20.0], "easy": [0, 1], "hard": [2], "junk": [4]},
            {"bbx": [0, 0, 10, 10], "easy": [], "hard": [3], "junk": []},
        ],
    }
    with open(root / name / f"gnd_{name}.pkl", "wb") as f:
        pickle.dump(cfg, f)
    return imlist


def test_pickle_in_public_layout_round_trips(tmp_path):
    imlist = _write_public_layout(tmp_path)
    ds = load_revisited("roxford5k", tmp_path)
    assert [p.name for p in ds.db_paths] == [f"{n}.jpg" for n in imlist]
    assert ds.query_paths[0] == tmp_path / "roxford5k" / "jpg" / "q0.jpg"
    assert ds.query_boxes == [(1.0, 2.0, 30.5, 20.0), (0.0, 0.0, 10.0, 10.0)]
    np.testing.assert_array_equal(ds.gnd[0]["easy"], [0, 1])
    np.testing.assert_array_equal(ds.gnd[0]["hard"], [2])
    np.testing.assert_array_equal(ds.gnd[1]["junk"], np.empty(0))
    assert ds.gnd[0]["junk"].dtype == np.int64


def test_missing_pickle_names_url_and_place(tmp_path):
    with pytest.raises(DataError) as e:
        load_revisited("rparis6k", tmp_path)
    msg = str(e.value)
    assert "\n" not in msg
    assert "https://cmp.felk.cvut.cz/revisitop/data/datasets/rparis6k/gnd_rparis6k.pkl" in msg
    assert str(tmp_path / "rparis6k" / "gnd_rparis6k.pkl") in msg


def test_missing_images_names_archive(tmp_path):
    _write_public_layout(tmp_path)
    (tmp_path / "roxford5k" / "jpg" / "im2.jpg").unlink()
    with pytest.raises(DataError, match="oxbuild_images-v1.tgz"):
        load_revisited("roxford5k", tmp_path)


def test_class_folders(tmp_path):
    for c, n in (("a", 3), ("b", 2), ("c", 1)):
        (tmp_path / c).mkdir()
        for i in range(n):
            Image.new("RGB", (8, 8)).save(tmp_path / c / f"{i}.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "distractor.jpg")
    ds = load_class_folders(tmp_path)
    assert ds.n_queries == 5 and ds.n_db == 7  # single-image class: no positive, so not a query
    np.testing.assert_array_equal(ds.gnd[0]["easy"], [1, 2])
    np.testing.assert_array_equal(ds.gnd[0]["junk"], [0])
    np.testing.assert_array_equal(ds.gnd[3]["easy"], [4])
    assert ds.db_paths[5] == tmp_path / "c" / "0.png"  # ... but a distractor in the database
    assert [Path(d["path"]).name for d in ds.info["left_out"]] == ["0.png", "distractor.jpg"]
    np.testing.assert_array_equal(ds.query_db_ids, np.arange(5))
    with pytest.raises(DataError):
        load_class_folders(tmp_path / "nope")


def test_load_toy_remakes_a_collection_made_with_other_settings(tmp_path):
    from retrieval.evaluation.datasets import load_toy

    small = dict(n_objects=2, views=3, distractors=1, image_size=32)
    a = load_toy(tmp_path / "t", **small)
    stamp = (tmp_path / "t" / "ground_truth.json").stat().st_mtime_ns
    assert len(a.db_paths) + len(a.query_paths) == 2 * 3 + 1
    # same settings, or none given: the collection on disk is used as it is
    assert load_toy(tmp_path / "t", **small).db_paths == a.db_paths
    assert load_toy(tmp_path / "t").db_paths == a.db_paths
    assert (tmp_path / "t" / "ground_truth.json").stat().st_mtime_ns == stamp
    # other settings: made again with them
    b = load_toy(tmp_path / "t", **{**small, "distractors": 3})
    assert len(b.db_paths) + len(b.query_paths) == 2 * 3 + 3 and b.info["params"]["distractors"] == 3
