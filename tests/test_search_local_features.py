"""retrieval.search.local_features: RootSIFT against its definition, SIFT positions mapped back to
the original image's pixels, grayscale input, the cap on features, compact storage; packed features
stored in the index folder and kept through add / remove / compact."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import unit_rows
from PIL import Image, ImageDraw

from retrieval.search.compaction import compact_index
from retrieval.search.index import ImageIndex
from retrieval.search.local_features import backbone_features, root_sift, sift_features
from retrieval.search.packed_features import LocalFeatures, PackedFeatures


def textured(w: int = 320, h: int = 240, seed: int = 0) -> Image.Image:
    """An RGB image of random filled shapes (corners and blobs SIFT detects)."""
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (w, h), (128, 128, 128))
    d = ImageDraw.Draw(img)
    for _ in range(60):
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        r = rng.uniform(4, 20)
        c = tuple(int(v) for v in rng.integers(0, 256, 3))
        (d.ellipse if rng.random() < 0.5 else d.rectangle)([x - r, y - r, x + r, y + r * rng.uniform(0.5, 1.5)], fill=c)
    return img


def test_root_sift_is_l1_normalise_then_square_root():
    rng = np.random.default_rng(1)
    X = rng.integers(0, 200, size=(7, 128)).astype(np.float32)
    X[3] = 0.0  # a zero histogram stays zero
    got = root_sift(X)
    for i in range(X.shape[0]):
        s = sum(float(v) for v in X[i])
        want = [0.0] * 128 if s == 0 else [(float(v) / s) ** 0.5 for v in X[i]]
        np.testing.assert_allclose(got[i], want, rtol=1e-6, atol=1e-7)
    norms = np.linalg.norm(got, axis=1)
    np.testing.assert_allclose(norms[[0, 1, 2, 4, 5, 6]], 1.0, rtol=1e-5)  # unit L2: Σ x/|x|₁ = 1
    # Euclidean distance of RootSIFT = Hellinger distance of the histograms
    p, q = X[0] / X[0].sum(), X[1] / X[1].sum()
    hell2 = sum((float(a) ** 0.5 - float(b) ** 0.5) ** 2 for a, b in zip(p, q))
    assert float(((got[0] - got[1]) ** 2).sum()) == pytest.approx(hell2, rel=1e-5)


def test_sift_features_are_root_sift_in_the_image():
    img = textured()
    f = sift_features(img, max_features=200)
    assert isinstance(f, LocalFeatures) and f.size == (320, 240)
    assert 20 < len(f) <= 200 and f.xy.dtype == np.float32 and f.desc.dtype == np.float32 and f.dim == 128
    assert np.all(f.desc >= 0)
    np.testing.assert_allclose(np.linalg.norm(f.desc, axis=1), 1.0, rtol=1e-4)
    assert np.all(f.xy >= -0.5) and np.all(f.xy[:, 0] <= 320) and np.all(f.xy[:, 1] <= 240)
    few = sift_features(img, max_features=10)
    assert len(few) == 10
    np.testing.assert_array_equal(few.xy, f.xy[:10])  # the strongest first, whatever the cap


def test_positions_map_back_to_the_original_pixels():
    small = textured(320, 240, seed=3)
    big = small.resize((640, 480), Image.NEAREST)  # area-downscaled by 2, it is `small` again
    fs = sift_features(small, max_features=300, max_side=320)
    fb = sift_features(big, max_features=300, max_side=320)
    assert fb.size == (640, 480) and len(fb) == len(fs) > 20
    np.testing.assert_allclose(fb.xy, (fs.xy + 0.5) * 2.0 - 0.5, atol=1e-3)
    np.testing.assert_allclose(fb.desc, fs.desc, atol=1e-5)
    native = sift_features(big, max_features=300, max_side=0)  # 0: detected at the full size
    assert native.size == (640, 480) and not np.allclose(native.xy[:5], fb.xy[:5])


def test_grayscale_and_blank_images():
    img = textured(seed=5)
    a, b = sift_features(img), sift_features(img.convert("L"))
    np.testing.assert_array_equal(a.xy, b.xy)
    np.testing.assert_array_equal(a.desc, b.desc)
    blank = sift_features(Image.new("RGB", (100, 80), (9, 9, 9)))
    assert len(blank) == 0 and blank.xy.shape == (0, 2) and blank.desc.shape == (0, 128) and blank.size == (100, 80)
    assert len(sift_features(img, max_features=0)) == 0


def test_compact_keeps_the_strongest_as_float16():
    f = sift_features(textured(seed=7), max_features=100)
    xy, desc = f.compact(30)
    assert xy.shape == (30, 2) and xy.dtype == np.float32 and desc.shape == (30, 128) and desc.dtype == np.float16
    np.testing.assert_array_equal(xy, f.xy[:30])
    np.testing.assert_allclose(desc.astype(np.float32), f.desc[:30], atol=1e-3)
    assert f.compact(10 ** 6)[0].shape[0] == len(f)
    with pytest.raises(ValueError):
        LocalFeatures(np.zeros((3, 2)), np.zeros((2, 128)), (10, 10))


def test_packed_features_round_trip(tmp_path):
    fs = [sift_features(textured(seed=s), max_features=80) for s in (1, 2)]
    pack = PackedFeatures.pack([fs[0], None, fs[1]], max_features=50, max_side=640)
    assert len(pack) == 3 and pack.get(1) is None and list(pack.offsets) == [0, 50, 50, 100]
    pack.save(tmp_path / "p")
    back = PackedFeatures.load(tmp_path / "p", 50, 640)
    for j, f in ((0, fs[0]), (2, fs[1])):
        g = back.get(j)
        assert g.size == f.size and len(g) == 50
        np.testing.assert_array_equal(g.xy, f.xy[:50])
        np.testing.assert_allclose(g.desc, f.desc[:50], atol=1e-3)
        assert len(back.get(j, max_features=10)) == 10
    sel = back.select(np.array([2, 1]))
    np.testing.assert_array_equal(sel.get(0).xy, back.get(2).xy)
    assert sel.get(1) is None
    assert pack.nbytes() == 100 * (128 * 2 + 8) + 4 * 8 + 3 * 8


def test_the_index_folder_stores_them_through_add_remove_compact(tmp_path):
    paths = []
    for s in range(5):
        p = tmp_path / f"{s}.png"
        textured(seed=30 + s).save(p)
        paths.append(str(p))
    X = unit_rows(5, 8, seed=1)
    idx = ImageIndex(8, "Flat", fingerprint="fp")
    idx.add(X[:3], paths[:3])
    idx.save(tmp_path / "ix")
    assert idx.store_local_features(max_features=60) == 3
    idx = ImageIndex.load(tmp_path / "ix")
    assert idx.has_local_features and idx.local_features_end() == 3
    want = [sift_features(Image.open(p).convert("RGB"), 60) for p in paths]
    np.testing.assert_array_equal(idx.stored_local_features(1, 60, 640).xy, want[1].xy)
    assert idx.stored_local_features(1, 100, 640) is None  # fewer stored than asked: computed instead
    assert idx.stored_local_features(1, 60, 320) is None  # detected at another size
    idx.add(X[3:], paths[3:])
    idx.remove([0])
    idx.save(tmp_path / "ix")
    assert idx.store_local_features(max_features=60) == 2  # only the new ids
    idx = ImageIndex.load(tmp_path / "ix")
    assert idx.local_features_end() == 5 and len(list((tmp_path / "ix" / "local").iterdir())) == 2
    np.testing.assert_array_equal(idx.stored_local_features(4, 60, 640).xy, want[4].xy)
    compact_index(tmp_path / "ix", progress=False)
    c = ImageIndex.load(tmp_path / "ix")
    assert c.ntotal == 4 and c.local_features_end() == 4 and len(list((tmp_path / "ix" / "local").iterdir())) == 1
    for new, old in enumerate([1, 2, 3, 4]):
        np.testing.assert_array_equal(c.stored_local_features(new, 60, 640).xy, want[old].xy)


def test_backbone_features_are_the_strongest_cells(small_net):
    img = textured(200, 120, seed=9)
    f = backbone_features(small_net.backbone, img, layer="layer3", max_features=40, image_size=128)
    assert f.size == (200, 120) and len(f) == 40 and f.dim == 256
    np.testing.assert_allclose(np.linalg.norm(f.desc, axis=1), 1.0, rtol=1e-5)
    # cell centres: layer3 of ResNet-18 has stride 16 → an 8 × 5 map of the 128 × 77 resized image
    xs, ys = np.unique(f.xy[:, 0]), np.unique(f.xy[:, 1])
    assert np.allclose((xs + 0.5) / (200 / 8) % 1, 0.5, atol=1e-4) and np.allclose((ys + 0.5) / (120 / 5) % 1, 0.5, atol=1e-4)
