"""The generated toy data: files, ground truth, masks, parts, determinism, clutter, real photos."""
from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from retrieval.core.errors import DataError
from retrieval.toy.backgrounds import _background
from retrieval.toy.collection import (
    JUNK_VISIBLE,
    ToyCollection,
    _classify,
    _objects_for,
    _view_spec,
    export_class_folders,
    make_retrieval_collection,
)
from retrieval.toy.coseg_sets import make_coseg_sets
from retrieval.toy.photos import photo_object_names
from retrieval.toy.render import _render_view, _ViewSpec
from retrieval.toy.streams import _S_OBJECT

HAS_SKIMAGE = importlib.util.find_spec("skimage") is not None


def _read(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im).copy()


@pytest.fixture(scope="module")
def coll(tmp_path_factory) -> ToyCollection:
    return make_retrieval_collection(tmp_path_factory.mktemp("toy") / "c", n_objects=4, views=6,
                                     distractors=5, image_size=64, seed=3)


# ---- files and ground truth -----------------------------------------------------------------

def test_files_written_and_reloaded_identically(coll: ToyCollection) -> None:
    assert len(coll.query_paths) == 4 and len(coll.db_paths) == 4 * 5 + 5
    for p in coll.query_paths + coll.db_paths:
        img = _read(p)
        assert img.shape == (64, 64, 3) and img.dtype == np.uint8
        assert _read(coll.mask_path(p)).shape == (64, 64)
        assert _read(coll.part_path(p)).shape == (64, 64)
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
        m = _read(coll.mask_path(p)) > 0
        ys, xs = np.nonzero(m)
        assert coll.gnd[q]["bbx"] == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        np.testing.assert_array_equal(coll.query_bboxes[q], coll.gnd[q]["bbx"])


# ---- masks and parts ------------------------------------------------------------------------

def test_masks_and_parts(coll: ToyCollection) -> None:
    for p, lab, meta in zip(coll.query_paths + coll.db_paths,
                            list(coll.query_labels) + list(coll.db_labels),
                            [None] * len(coll.query_paths) + coll.db_meta):
        mask = _read(coll.mask_path(p))
        parts = _read(coll.part_path(p))
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


def test_mask_is_where_the_object_was_pasted() -> None:
    """Render a view together with its background: inside the mask the composite differs from the
    background, outside (away from the blurred border) it is the background itself."""
    rng = np.random.default_rng(0)
    obj = _objects_for(1, "synthetic", 64, seed=0, stream=_S_OBJECT)[0]
    for kind in ("easy", "hard", "junk"):
        spec, _ = _view_spec(rng, kind, clutter=0.5)
        bg = _background(rng, 64, busy=0.5, photos=False)
        r = _render_view(obj, spec, 64, bg, rng, photos=False, with_background=True)
        mask = r.labels > 0
        assert mask.any()
        diff = np.abs(r.image.astype(np.float32) - r.background.astype(np.float32)).max(axis=2)
        grown = mask.copy()
        for _ in range(7):  # blur sigma ≤ 1.5 px: stay clear of the blurred border
            grown = grown | np.roll(grown, 1, 0) | np.roll(grown, -1, 0) | np.roll(grown, 1, 1) | np.roll(grown, -1, 1)
        assert diff[~grown].max() <= 1.0
        assert diff[mask].mean() > 20.0


def test_visibility_measurements() -> None:
    """A fully visible view measures visible = in_frame = 1; a crop view keeps the requested share."""
    rng = np.random.default_rng(1)
    obj = _objects_for(1, "synthetic", 96, seed=1, stream=_S_OBJECT)[0]
    bg = np.zeros((96, 96, 3), np.float32)
    tilted = _render_view(obj, _ViewSpec(area=0.3, rotation=30.0, perspective=0.1), 96, bg, rng, False)
    assert tilted.visible > 0.97 and tilted.in_frame > 0.97 and tilted.occluded == 0.0
    full = _render_view(obj, _ViewSpec(area=0.3, rotation=0.0, perspective=0.0), 96, bg, rng, False)
    assert full.visible > 0.97
    for target in (0.2, 0.6):
        r = _render_view(obj, _ViewSpec(area=0.3, rotation=0.0, perspective=0.0, in_frame=target),
                         96, bg, rng, False)
        assert abs(r.in_frame - target) < 0.05 and r.scale == full.scale
        # same scale and no occlusion: visible pixels = in-frame share of the full view's pixels
        assert abs(np.count_nonzero(r.labels) / np.count_nonzero(full.labels) - target) < 0.08
    occ = _render_view(obj, _ViewSpec(area=0.3, rotation=0.0, perspective=0.0, occlusion=0.5),
                       96, bg, rng, False)
    assert abs(occ.occluded - 0.5) < 0.05 and abs(occ.visible - 0.5) < 0.06


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
        return float(np.mean([(_read(c.mask_path(p)) > 0).mean() for p in c.query_paths]))

    def db_area(c: ToyCollection) -> float:
        return float(np.mean([m["mask_area"] for m in c.db_meta]))

    def edges(c: ToyCollection) -> float:  # gradient energy of the background pixels
        e = []
        for p in c.query_paths + c.db_paths:
            g = _read(p).astype(np.float32).mean(2)
            m = _read(c.mask_path(p)) == 0
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


TOY_DIR = Path(__file__).resolve().parents[1] / "retrieval" / "toy"
TOY_MODULES = sorted(f"retrieval.toy.{f.stem}" for f in TOY_DIR.glob("*.py") if f.stem != "__init__")


def test_import_does_not_pull_in_torch() -> None:
    assert "retrieval.toy.collection" in TOY_MODULES and len(TOY_MODULES) > 1
    code = f"import sys, {', '.join(TOY_MODULES)}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1], check=True)
    assert out.stdout.strip() == "False"


def test_toy_package_stands_on_the_core_only() -> None:
    """Of the project, the toy modules import only ``retrieval.core`` and each other."""
    bad = []
    for f in sorted(TOY_DIR.glob("*.py")):
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            bad += [f"{f.name} imports {n}" for n in names if n.split(".")[0] in ("retrieval", "cosegment")
                    and not n.startswith(("retrieval.core.", "retrieval.toy."))]
    assert not bad, bad


# ---- co-segmentation sets -------------------------------------------------------------------

def test_coseg_sets(tmp_path: Path) -> None:
    root = tmp_path / "cs"
    sets = make_coseg_sets(root, n_sets=2, images_per_set=5, image_size=64, n_parts=4, seed=1)
    assert sets == ["set00", "set01"]
    doc = json.loads((root / "coseg.json").read_text())
    for s in sets:
        imgs = sorted((root / "images" / s).glob("*.jpg"))
        assert len(imgs) == 5 and doc["sets"][s]["part_names"] == ["body", "head", "legs", "tail"]
        centres, present = [], np.zeros(5, int)
        for p in imgs:
            img = _read(p)
            mask = _read(root / "masks" / s / f"{p.stem}.png")
            parts = _read(root / "parts" / s / f"{p.stem}.png")
            assert img.shape == (64, 64, 3) and mask.shape == parts.shape == (64, 64)
            np.testing.assert_array_equal(parts > 0, mask > 0)
            assert 0.05 < (mask > 0).mean() < 0.6
            assert parts.max() <= 4
            present[np.unique(parts)] += 1
            ys, xs = np.nonzero(mask)
            centres.append((xs.mean(), ys.mean()))
        assert (present[1:] >= 4).all()  # every part in (almost) every image
        assert np.std(np.array(centres), axis=0).max() > 2.0  # varied positions
    # deterministic
    again = tmp_path / "again"
    make_coseg_sets(again, n_sets=2, images_per_set=5, image_size=64, n_parts=4, seed=1)
    assert (root / "images/set01/set01_03.jpg").read_bytes() == (again / "images/set01/set01_03.jpg").read_bytes()


# ---- real photos ----------------------------------------------------------------------------

def test_photos_need_scikit_image(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "skimage", None)
    monkeypatch.setitem(sys.modules, "skimage.data", None)
    with pytest.raises(DataError, match="pip install"):
        make_retrieval_collection(tmp_path / "p", source="photos")
    with pytest.raises(DataError, match="pip install"):
        make_coseg_sets(tmp_path / "p", source="photos")


@pytest.mark.skipif(not HAS_SKIMAGE, reason="scikit-image not installed")
def test_photo_sources(tmp_path: Path) -> None:
    c = make_retrieval_collection(tmp_path / "ph", n_objects=3, views=3, distractors=2, image_size=64, source="photos")
    assert c.object_names == photo_object_names()[:3] == ["cat_face", "coffee_cup", "rocket"]
    assert all(g["easy"] or g["hard"] for g in c.gnd)
    # the query's object pixels are the photo's: the cat is brownish-orange, the cup saucer red
    for name, check in (("cat_face", lambda m: m[0] > m[2]), ("coffee_cup", lambda m: m[0] > 1.5 * m[2])):
        q = c.query_paths[c.object_names.index(name)]
        img = _read(q).astype(np.float32)
        mask = _read(c.mask_path(q)) > 0
        assert mask.mean() > 0.15
        assert check(img[mask].mean(0))
    sets = make_coseg_sets(tmp_path / "pc", n_sets=2, images_per_set=2, image_size=64, source="photos")
    assert sets == ["cat_face", "coffee_cup"]
    for s in sets:
        for p in (tmp_path / "pc" / "images" / s).glob("*.jpg"):
            parts = _read(tmp_path / "pc" / "parts" / s / f"{p.stem}.png")
            assert set(np.unique(parts).tolist()) == {0, 1, 2, 3}
    with pytest.raises(DataError, match="objects"):
        make_retrieval_collection(tmp_path / "big", n_objects=50, source="photos")
