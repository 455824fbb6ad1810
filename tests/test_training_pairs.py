"""retrieval.training.pairs: pair sources: class folders, CSV, SfM-120k pickle, labels; splits; bad
input as one-line DataErrors."""
import os
import pickle

import numpy as np
import pytest
from PIL import Image

from retrieval.core.errors import DataError
from retrieval.training.pairs import (
    PairSet,
    cid_to_path,
    drop_unreadable,
    load_pairs,
    pairs_from_csv,
    pairs_from_folders,
    pairs_from_sfm,
)


def _img(path, v=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (v, 10, 20)).save(path, format="PNG")
    return path


def _folders(root, sizes):
    for c, k in enumerate(sizes):
        for i in range(k):
            _img(root / f"class{c}" / f"{i}.png", 10 * i)
    return root


def test_folders_all_ordered_pairs(tmp_path):
    ps = pairs_from_folders(_folders(tmp_path / "d", [2, 3, 2]))
    assert ps.n_images == 7 and ps.n_classes == 3
    pairs = set(zip(ps.qidx.tolist(), ps.pidx.tolist()))
    want = {(i, j) for i in range(7) for j in range(7) if i != j and ps.labels[i] == ps.labels[j]}
    assert pairs == want and len(ps) == 2 + 6 + 2
    assert ps.class_names[int(ps.labels[0])] == "class0"


def test_from_labels_cap_and_singletons():
    labels = np.array([0] * 6 + [1] + [2, 2])
    ps = PairSet.from_labels([f"{i}.jpg" for i in range(9)], labels, max_pairs_per_class=10, seed=1)
    assert np.all(ps.labels[ps.qidx] == ps.labels[ps.pidx]) and np.all(ps.qidx != ps.pidx)
    assert np.sum(ps.labels[ps.qidx] == 0) == 10  # 30 ordered pairs sampled down to 10
    assert 6 not in ps.qidx and 6 not in ps.pidx  # the singleton is only a negative
    assert len(set(zip(ps.qidx.tolist(), ps.pidx.tolist()))) == len(ps)  # no duplicates


@pytest.mark.parametrize("sizes,match", [([2, 1, 3], "class 'class1'.*single image"),
                                         ([1, 1], "every class has a single image"),
                                         ([3], "only one class")])
def test_folders_bad(tmp_path, sizes, match):
    with pytest.raises(DataError, match=match) as e:
        pairs_from_folders(_folders(tmp_path / "d", sizes))
    assert "\n" not in str(e.value)


def test_folders_missing_and_flat(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_pairs(tmp_path / "nope")
    _img(tmp_path / "flat" / "a.png")
    with pytest.raises(DataError, match="own sub-folder"):
        pairs_from_folders(tmp_path / "flat")


def test_csv_components_and_clusters(tmp_path):
    for n in "abcde":
        _img(tmp_path / f"{n}.png")
    (tmp_path / "p.csv").write_text("query,positive\na.png,b.png\nb.png,c.png\nd.png,e.png\n")
    ps = pairs_from_csv(tmp_path / "p.csv")
    lab = {p.name: l for p, l in zip(ps.paths, ps.labels)}
    assert lab["a.png"] == lab["b.png"] == lab["c.png"] != lab["d.png"] == lab["e.png"]
    assert len(ps) == 3 and ps.paths[ps.qidx[1]].name == "b.png"
    (tmp_path / "c.csv").write_text("a.png,b.png,x\nc.png,d.png,y\ne.png,a.png,x\n")
    ps = load_pairs(tmp_path / "c.csv")
    lab = {p.name: l for p, l in zip(ps.paths, ps.labels)}
    assert lab["a.png"] == lab["b.png"] == lab["e.png"] != lab["c.png"] == lab["d.png"]


@pytest.mark.parametrize("text,match", [("a.png,missing.png\n", r"p.csv:1: image file not found"),
                                        ("a.png,b.png,x\na.png,c.png,y\n", "cluster 'x' and 'y'"),
                                        ("a.png\n", "expected 'query,positive"),
                                        ("a.png,a.png\n", "paired with itself"),
                                        ("a.png,b.png\n", "one cluster")])
def test_csv_bad(tmp_path, text, match):
    for n in "abc":
        _img(tmp_path / f"{n}.png")
    (tmp_path / "p.csv").write_text(text)
    with pytest.raises(DataError, match=match):
        pairs_from_csv(tmp_path / "p.csv")


def test_sfm_pickle(tmp_path):
    cids = ["0a1b2c3d4e5f", "ffeeddccbbaa", "0123456789ab", "a1a2a3a4a5a6"]
    for c in cids:
        _img(cid_to_path(c, tmp_path / "ims"))
    db = {"train": {"cids": cids, "cluster": [0, 0, 1, 1], "qidxs": [0, 2], "pidxs": [1, 3]},
          "val": {"cids": cids[:2], "cluster": [5, 5], "qidxs": [1], "pidxs": [0]}}
    with open(tmp_path / "sfm.pkl", "wb") as f:
        pickle.dump(db, f)
    ps = load_pairs(tmp_path / "sfm.pkl")
    assert ps.paths[1] == tmp_path / "ims" / "aa" / "bb" / "cc" / "ffeeddccbbaa"
    assert ps.qidx.tolist() == [0, 2] and ps.pidx.tolist() == [1, 3] and ps.labels.tolist() == [0, 0, 1, 1]
    assert len(pairs_from_sfm(tmp_path / "sfm.pkl", split="val")) == 1
    os.remove(cid_to_path(cids[3], tmp_path / "ims"))
    with pytest.raises(DataError, match="1 of 4 SfM-120k images missing"):
        pairs_from_sfm(tmp_path / "sfm.pkl")


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_sfm_pickle_refuses_code(tmp_path):
    with open(tmp_path / "evil.pkl", "wb") as f:
        pickle.dump({"train": _Evil()}, f)
    with pytest.raises(DataError, match="not a readable SfM-120k pickle"):
        pairs_from_sfm(tmp_path / "evil.pkl")


def test_split_holds_out_whole_classes_and_ground_truth():
    labels = np.repeat(np.arange(10), 3)
    ps = PairSet.from_labels([f"{i}.jpg" for i in range(30)], labels)
    tr, va = ps.split(0.3, seed=0)
    assert va.n_classes == 3 and tr.n_classes == 7 and tr.n_images + va.n_images == 30
    assert not set(tr.labels) & set(va.labels)
    assert np.all(tr.labels[tr.qidx] == tr.labels[tr.pidx]) and len(tr) == 7 * 6
    q, gnd = va.ground_truth()
    assert len(q) == 9 and all(len(g["ok"]) == 2 and q[i] in g["junk"] for i, g in enumerate(gnd))
    assert all(va.labels[g["ok"]].tolist() == [va.labels[q[i]]] * 2 for i, g in enumerate(gnd))


def test_drop_unreadable_reports_corrupt(tmp_path):
    root = _folders(tmp_path / "d", [3, 2])
    (root / "class0" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    ps, failures = drop_unreadable(pairs_from_folders(root), workers=2)
    assert [p.name for p, _ in failures] == ["1.png"] and ps.n_images == 4
    assert len(ps) == 2 + 2 and all(p.name != "1.png" or p.parent.name != "class0" for p in ps.paths)


def test_split_by_images_keeps_classes_in_both_parts():
    labels = np.repeat(np.arange(5), [6, 6, 6, 3, 4])
    ps = PairSet.from_labels([f"{i}.jpg" for i in range(25)], labels)
    tr, va = ps.split(0.3, seed=0, by="images")
    assert tr.n_images + va.n_images == 25 and not set(map(str, tr.paths)) & set(map(str, va.paths))
    assert sorted(np.unique(va.labels).tolist()) == [0, 1, 2, 4]  # the 3-image class stays in train
    assert all(np.sum(va.labels == c) == 2 and np.sum(tr.labels == c) >= 2 for c in (0, 1, 2, 4))
    assert np.all(tr.labels[tr.qidx] == tr.labels[tr.pidx]) and len(tr) == 3 * 12 + 6 + 2
