"""retrieval.search.rerank.sv: a warped copy of the query is verified (inliers, matches that follow
the known homography, in each image's own pixels, the query's box offset added back) and moves up;
unrelated images are not; the step permutes only the top K; a shortlist of one, a query by vector,
an unreadable hit; the score formula; the feature cache; a stack of the new steps gives the same
hits through the CLI, the Python API and the evaluation. ``region=object``: a hit that shares the query's *background* is verified by
``region=image`` and not by ``region=object``, and a hit that shares the object moves above it; the
object heat sampled at the inliers (a hand-worked grid); a ``coseg`` step hands its object to
``sv``; a query whose object falls back counts every inlier; co-segmentation puts a real-photo
object's heat on the object."""
from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
import torch
from conftest import run_tool, unit_rows
from PIL import Image, ImageDraw

from retrieval.core.errors import DataError
from retrieval.evaluation.datasets import EvalDataset
from retrieval.evaluation.run import rank_dataset
from retrieval.jobs import run_index
from retrieval.loading import search_model
from retrieval.model.network import ModelConfig, build_network
from retrieval.search.collection import search_images
from retrieval.search.extract import extract_descriptors
from retrieval.search.index import ImageIndex
from retrieval.search.local_features import sift_features
from retrieval.search.query import Query, QueryPath, query_steps
from retrieval.search.rerank import sv as sv_module
from retrieval.search.rerank.coseg import CosegRerankOptions, query_object
from retrieval.search.rerank.registry import parse_steps
from retrieval.search.rerank.step import RerankContext
from retrieval.search.rerank.sv import FeatureCache, SVParams, box_offset, drawn_matches, on_object, verified_scores

H = np.array([[0.9, 0.08, 20.0], [-0.05, 0.95, 12.0], [1e-4, -5e-5, 1.0]])


def textured(w: int = 320, h: int = 240, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (w, h), (128, 128, 128))
    d = ImageDraw.Draw(img)
    for _ in range(80):
        x, y, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(4, 18)
        c = tuple(int(v) for v in rng.integers(0, 256, 3))
        (d.ellipse if rng.random() < 0.5 else d.rectangle)([x - r, y - r, x + r, y + r * rng.uniform(0.5, 1.5)], fill=c)
    return img


def warped(img: Image.Image, M: np.ndarray, size=(360, 280)) -> Image.Image:
    return Image.fromarray(cv2.warpPerspective(np.asarray(img), M, size, borderValue=(128, 128, 128)))


def project(M, pts):
    p = np.c_[np.asarray(pts, np.float64), np.ones(len(pts))] @ M.T
    return p[:, :2] / p[:, 2:3]


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    """id 0: the query photo; id 1..5 unrelated photos; id 6: the query photo warped by H. The
    stored descriptors rank the warped copy last after the query itself."""
    root = tmp_path_factory.mktemp("sv")
    q = textured(seed=1)
    images = [q] + [textured(seed=10 + i) for i in range(5)] + [warped(q, H)]
    paths = []
    for i, im in enumerate(images):
        p = root / f"{i}.png"
        im.save(p)
        paths.append(str(p))
    base = unit_rows(1, 16, seed=3)[0]
    noise = unit_rows(7, 16, seed=4)
    X = np.stack([base + w * n for w, n in zip([0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 1.5], noise)]).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    idx = ImageIndex(16, "Flat", fingerprint="fp")
    idx.add(X, paths)
    return idx, q, paths


def context(idx, img, box=None):
    d = idx.rows(np.array([0]))
    return RerankContext(d, idx, None, None, np.array([-1]), [box], [lambda: img])


def test_the_warped_copy_is_verified_and_moves_up(collection):
    idx, q, paths = collection
    plain = QueryPath(idx).run(Query(id=0), top=7)
    assert plain.ids[0, 0] == 0 and plain.ids[0, -1] == 6
    got = QueryPath(idx, steps="sv:K=7").run(Query(id=0), top=7)
    assert sorted(got.ids[0]) == sorted(plain.ids[0])
    assert list(got.ids[0, :2]) == [0, 6]  # itself, then its warped copy
    hits = {h["id"]: h for h in got.hits(0)}
    assert hits[6]["verified"] and hits[6]["inliers"] >= 40
    assert all(not hits[i]["verified"] and hits[i]["inliers"] < 12 for i in range(1, 6))
    m = np.array(hits[6]["matches"])
    assert 12 <= len(m) <= 64 and m.shape[1] == 4
    np.testing.assert_allclose(project(H, m[:, :2]), m[:, 2:], atol=3.0)  # query pixels → hit pixels
    assert got.notes["sv"]["verified"] == 2 and got.notes["sv"]["unreadable"] == 0


def test_matches_of_a_cropped_query_are_in_the_query_image(collection):
    idx, q, _ = collection
    box = (40, 30, 300, 220)
    step = parse_steps("sv:K=7")[0]
    ctx = context(idx, q.crop(box), box)
    ids = np.array([[6, 1, 2]])
    out_ids, _ = step.rerank(ctx, ids, np.array([[0.5, 0.9, 0.8]], np.float32))
    assert out_ids[0, 0] == 6
    m = np.array(ctx.hit_fields[(0, 6)]["matches"])
    assert len(m) >= 12 and m[:, 0].min() >= 40 - 1 and m[:, 1].min() >= 30 - 1
    np.testing.assert_allclose(project(H, m[:, :2]), m[:, 2:], atol=3.0)
    assert box_offset(box, q.crop(box)) == (40.0, 30.0)
    assert box_offset((500, 500, 600, 600), q) == (0.0, 0.0)  # an empty box kept the whole image
    assert box_offset(None, q) == (0.0, 0.0)


def test_only_the_top_K_and_a_shortlist_of_one(collection):
    idx, q, _ = collection
    step = parse_steps("sv:K=3")[0]
    assert step.depth() == 3
    ids = np.array([[1, 2, 6, 3, 4, -1]])
    sc = np.array([[0.9, 0.8, 0.7, 0.6, 0.5, -np.inf]], np.float32)
    out_ids, out_sc = step.rerank(context(idx, q), ids, sc)
    assert list(out_ids[0]) == [6, 1, 2, 3, 4, -1]
    np.testing.assert_array_equal(out_sc[0, 3:], sc[0, 3:])
    assert out_sc[0, 0] == pytest.approx(0.7 + 1.0)  # ≥ saturation inliers: the full bonus
    one_ids, one_sc = step.rerank(context(idx, q), ids[:, :1], sc[:, :1])
    np.testing.assert_array_equal(one_ids, ids[:, :1])
    np.testing.assert_array_equal(one_sc, sc[:, :1])


def test_a_query_by_vector_has_no_image(collection):
    idx, _, _ = collection
    with pytest.raises(DataError, match="vector") as e:
        QueryPath(idx, steps="sv").run(Query(vector=idx.rows(np.array([0]))[0]), top=3)
    assert "\n" not in str(e.value)


def test_an_unreadable_hit_keeps_its_score(collection, tmp_path):
    idx, q, paths = collection
    X = idx.rows(np.arange(3))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    small = ImageIndex(16, "Flat", fingerprint="fp")
    small.add(X, [paths[0], str(tmp_path / "gone.png"), str(broken)])
    step = parse_steps("sv:K=3")[0]
    ctx = context(small, q)
    ids, sc = step.rerank(ctx, np.array([[1, 2, 0]]), np.array([[0.9, 0.8, 0.7]], np.float32))
    assert list(ids[0]) == [0, 1, 2] and ctx.notes["sv"]["unreadable"] == 2
    assert ctx.hit_fields[(0, 1)] == {"inliers": 0, "verified": False, "matches": []}
    np.testing.assert_allclose(sc[0, 1:], [0.9, 0.8])


def test_score_formula_and_drawn_matches():
    p = SVParams(min_inliers=10, saturation=40, weight=0.5)
    got = verified_scores(np.array([0, 9, 10, 20, 40, 100]), np.full(6, 0.3, np.float32), p)
    np.testing.assert_allclose(got, [0.3, 0.3, 0.3 + 0.5 * 10 / 40, 0.3 + 0.5 * 20 / 40, 0.8, 0.8], rtol=1e-6)
    m = np.arange(400, dtype=np.float32).reshape(100, 4)
    d = drawn_matches(m, (10.0, 20.0))
    assert len(d) == 64 and d[0] == [10.0, 21.0, 2.0, 3.0] and d[-1] == [406.0, 417.0, 398.0, 399.0]
    assert drawn_matches(m[:3], (0, 0)) == m[:3].tolist() and drawn_matches(m[:0], (0, 0)) == []


def test_feature_cache_keeps_the_recent_ones():
    c = FeatureCache(2)
    f = sift_features(textured(seed=5), max_features=50)
    for k in "abc":
        c.put((k,), f)
    assert c.get(("a",)) is None and c.get(("b",)) is not None and len(c) == 2
    c.put(("d",), f)  # b was used last: c goes
    assert c.get(("c",)) is None and c.get(("b",)) is not None
    g = c.get(("d",))
    np.testing.assert_array_equal(g.xy, f.xy)
    np.testing.assert_allclose(g.desc, f.desc, atol=1e-3)
    FeatureCache(0).put(("x",), f)


@pytest.mark.parametrize("params, needle", [(dict(K=0), "K"), (dict(model="x"), "model"), (dict(ratio=1.5), "ratio"),
                                            (dict(method="lmeds"), "method"), (dict(weight=-1.0), "weight")])
def test_bad_parameters_are_one_line_errors(params, needle):
    with pytest.raises(DataError, match=needle) as e:
        SVParams(**params).validate()
    assert "\n" not in str(e.value)


STACK = "superglobal:M=10:K=3,diffusion:K=12:k=4:kq=3,coseg:K=6:weight=1,sv:K=6:region=object:object_K=6"


@pytest.mark.slow
def test_the_stack_gives_the_same_hits_through_cli_api_and_evaluation(tmp_path, tiny_config):
    folder = tmp_path / "images"
    folder.mkdir()
    base = [textured(seed=20 + i) for i in range(4)]
    for i, im in enumerate(base):
        im.save(folder / f"a{i}.png")
        warped(im, H).save(folder / f"b{i}.png")
    for i in range(4):
        textured(seed=40 + i).save(folder / f"c{i}.png")
    query = tmp_path / "q.png"
    warped(base[1], np.linalg.inv(H)).save(query)
    run_index(folder, tmp_path / "ix", config=tiny_config, progress=False)
    proc = run_tool("search", "--query", query, "--index", tmp_path / "ix", "--top", "6", "--rerank", STACK, "--json")
    assert proc.returncode == 0, proc.stderr
    cli = json.loads(proc.stdout)["results"][0]["hits"]
    assert len(cli) == 6 and any(h.get("verified") for h in cli) and all("inliers_all" in h for h in cli)
    idx = ImageIndex.load(tmp_path / "ix")
    net = search_model(idx)
    api = search_images(net, idx, [str(query)], top=6, steps=STACK)[0]["hits"]
    assert api == cli
    ds = EvalDataset(name="one", query_paths=[query], query_boxes=[None], db_paths=list(idx.paths),
                     gnd=[{"easy": np.array([0]), "hard": np.array([], np.int64), "junk": np.array([], np.int64)}])
    ev = rank_dataset(net, ds, idx, idx.descriptors(), query_steps(rerank=STACK)).records()[0]["hits"][:6]
    assert ev == cli


@pytest.mark.slow
def test_stored_local_features_are_used(collection, tmp_path):
    idx, q, paths = collection
    copies = []
    for p in paths:
        copies.append(str(tmp_path / ("c" + p.rsplit("/", 1)[1])))
        shutil.copy(p, copies[-1])
    saved = ImageIndex(16, "Flat", fingerprint="fp")
    saved.add(idx.rows(np.arange(7)), copies)
    saved.save(tmp_path / "ix")
    saved.store_local_features()
    loaded = ImageIndex.load(tmp_path / "ix")
    (tmp_path / copies[6].rsplit("/", 1)[1]).unlink()  # the warped copy's file is gone: only its stored features remain
    got = QueryPath(loaded, steps="sv:K=7").run(Query(id=0), top=7)
    hits = {h["id"]: h for h in got.hits(0)}
    assert list(got.ids[0, :2]) == [0, 6] and hits[6]["verified"] and hits[6]["missing"]
    off = QueryPath(loaded, steps="sv:K=7:stored=0").run(Query(id=0), top=7)
    assert got.notes["sv"]["unreadable"] == 0 and off.notes["sv"]["unreadable"] == 1


@pytest.mark.slow
def test_backbone_features_need_the_network_and_verify(collection, small_net):
    idx, q, _ = collection
    with pytest.raises(DataError, match="network"):
        QueryPath(idx, steps="sv:features=backbone")
    (step,) = parse_steps("sv:K=3:features=backbone:backbone_size=128:threshold_px=20:min_inliers=4")
    assert step.needs_network and not parse_steps("sv")[0].needs_network
    ctx = RerankContext(idx.rows(np.array([0])), idx, small_net, None, np.array([-1]), [None], [lambda: q])
    ids, _ = step.rerank(ctx, np.array([[0, 1, 2]]), np.array([[0.9, 0.8, 0.7]], np.float32))
    assert sorted(ids[0]) == [0, 1, 2]
    assert ctx.hit_fields[(0, 0)]["inliers"] >= 4  # the query against itself


# --- sv:region=object: only inliers on the query's co-segmented object ---

OBJ_BOX = (110, 70, 210, 170)  # where the object sits in the query (x1, y1, x2, y2), a 320 × 240 image


def pasted(background: Image.Image, obj: Image.Image, xy) -> Image.Image:
    out = background.copy()
    out.paste(obj, xy)
    return out


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """0: the query (background A, object O); 1: background A warped by H with another object P
    (the same background, not the same object); 2: object O, scaled, on background B (the same
    object); 3, 4: unrelated."""
    root = tmp_path_factory.mktemp("svobj")
    A, B = textured(seed=1), textured(seed=4)
    O = textured(100, 100, seed=2)
    P = textured(100, 100, seed=3)
    query = pasted(A, O, OBJ_BOX[:2])
    same_bg = warped(pasted(A, P, (20, 20)), H)
    same_obj = pasted(B, O.resize((120, 120)), (170, 90))
    images = [query, same_bg, same_obj, textured(seed=7), textured(seed=8)]
    paths = []
    for i, im in enumerate(images):
        paths.append(str(root / f"{i}.png"))
        im.save(paths[-1])
    X = np.eye(5, 8, dtype=np.float32)
    idx = ImageIndex(8, "Flat", fingerprint="fp")
    idx.add(X, paths)
    return idx, query


def object_mask() -> torch.Tensor:
    """The query's object as a (8, 10) mask over the 320 × 240 query (cells of 32 × 30 px): 1 on
    the cells the object covers, 0 elsewhere."""
    m = torch.zeros(8, 10)
    m[3:5, 4:6] = 1.0  # cells whose centres lie inside OBJ_BOX
    m[2:6, 3:7] = torch.maximum(m[2:6, 3:7], torch.tensor(0.5))
    return m


def run(idx, query, steps, objects=None):
    (step,) = parse_steps(steps)
    ctx = RerankContext(idx.rows(np.array([0])), idx, None, None, np.array([0]), [None], [lambda: query])
    ctx.objects.update(objects or {})
    ids = np.array([[1, 2, 3, 4]])
    sc = np.array([[0.9, 0.5, 0.4, 0.3]], np.float32)
    out, _ = step.rerank(ctx, ids, sc)
    return out[0], ctx


def test_on_object_samples_the_heat_bilinearly():
    m = torch.tensor([[1.0, 0.0], [0.0, 0.0]])  # over a 100 × 100 image: cell centres at 25 and 75 px
    pts = np.array([[25, 25], [75, 75], [50, 25], [25, 50], [37.5, 25], [0, 0]], np.float32)
    heat = np.array([1.0, 0.0, 0.5, 0.5, 0.75, 1.0])  # by hand: bilinear between centres, clamped at the border
    for t in (0.25, 0.5, 0.6, 0.8, 1.0):
        np.testing.assert_array_equal(on_object(m, pts, (100, 100), t), heat >= t - 1e-6)
    assert on_object(None, pts, (100, 100), 0.9).all()  # no object found: every point counts
    assert on_object(m, pts[:0], (100, 100), 0.5).shape == (0,)


def test_the_shared_background_is_verified_only_by_region_image(scene):
    idx, q = scene
    ids, ctx = run(idx, q, "sv:K=4")
    f = ctx.hit_fields
    assert f[(0, 1)]["verified"] and f[(0, 1)]["inliers"] > f[(0, 2)]["inliers"]  # the background wins
    assert ids[0] == 1
    ids, ctx = run(idx, q, "sv:K=4:region=object", {(0, 20, 3): object_mask()})
    f = ctx.hit_fields
    assert not f[(0, 1)]["verified"] and f[(0, 1)]["inliers_all"] > 2 * max(f[(0, 1)]["inliers"], 1)
    assert f[(0, 2)]["verified"] and f[(0, 2)]["inliers"] >= 12
    assert list(ids[:2]) == [2, 1]  # the same object moves above the same background
    xs = np.array(f[(0, 2)]["matches"])[:, :2]  # the drawn matches are those on the object
    assert (xs[:, 0] >= OBJ_BOX[0] - 32).all() and (xs[:, 0] <= OBJ_BOX[2] + 32).all()
    assert ctx.notes["sv"]["object_fallback"] == 0


def test_a_query_with_no_object_counts_every_inlier(scene):
    idx, q = scene
    plain_ids, plain = run(idx, q, "sv:K=4")
    ids, ctx = run(idx, q, "sv:K=4:region=object", {(0, 20, 3): None})
    np.testing.assert_array_equal(ids, plain_ids)
    assert ctx.hit_fields[(0, 1)]["inliers"] == plain.hit_fields[(0, 1)]["inliers"]
    assert ctx.notes["sv"]["object_fallback"] == 1


def test_region_object_needs_the_network_and_checks_its_parameters(scene):
    idx, q = scene
    assert parse_steps("sv:region=object")[0].needs_network and not parse_steps("sv")[0].needs_network
    assert parse_steps("sv:K=5:region=object:object_K=30")[0].depth() == 30  # the hits it co-segments with
    assert parse_steps("sv:K=5:object_K=30")[0].depth() == 5
    with pytest.raises(DataError, match="network"):
        QueryPath(idx, steps="sv:region=object").run(Query(id=0), top=3)
    for bad, needle in [(dict(region="box"), "region"), (dict(object_K=0), "object_K"),
                        (dict(object_k=0), "object_k"), (dict(object_heat=1.5), "object_heat")]:
        with pytest.raises(DataError, match=needle) as e:
            SVParams(**bad).validate()
        assert "\n" not in str(e.value)


@pytest.fixture(scope="module")
def photo_scene(tmp_path_factory):
    """A real-photo object (the astronaut's face) on four different real-photo backgrounds; the
    first image is the query. Returns (paths, the query's object box in its 256 × 256 pixels)."""
    from skimage import data

    root = tmp_path_factory.mktemp("svphoto")
    obj = Image.fromarray(data.astronaut()[40:200, 150:310]).resize((96, 96))
    backs = [data.brick(), data.grass(), data.gravel(), data.camera()]
    paths = []
    for i, b in enumerate(backs):
        bg = Image.fromarray(np.asarray(b)).convert("RGB").resize((256, 256))
        xy = [(80, 80), (30, 120), (140, 40), (100, 20)][i]
        paths.append(str(root / f"{i}.png"))
        pasted(bg, obj, xy).save(paths[-1])
    return paths, (80, 80, 176, 176)


@pytest.mark.slow
def test_coseg_finds_the_query_object_and_the_stack_shares_it(photo_scene, monkeypatch):
    paths, box = photo_scene
    net = build_network(ModelConfig(image_size=128, scales=[1.0]))  # the default model: ImageNet weights
    query = Image.open(paths[0]).convert("RGB")
    mask = query_object(net, query, [1, 2, 3], paths, CosegRerankOptions(k=3))
    assert mask is not None and mask.dim() == 2 and float(mask.max()) == pytest.approx(1.0)
    assert float(mask.min()) >= 0.0
    inside = on_object(mask, np.array([[x, y] for x in range(88, 176, 16) for y in range(88, 176, 16)], np.float32),
                       query.size, 0.3)
    outside = on_object(mask, np.array([[x, y] for x in (8, 40, 216, 248) for y in (8, 40, 216, 248)], np.float32),
                        query.size, 0.3)
    assert inside.mean() >= 0.6 and outside.mean() <= 0.2, (inside.mean(), outside.mean())
    # a coseg step with the same K and k leaves the object in the context: sv does not co-segment again
    idx = ImageIndex(net.dim, "Flat", fingerprint=net.fingerprint())
    idx.add(extract_descriptors(net, paths, progress=False).descriptors, paths)
    calls = []
    real = sv_module.query_object
    monkeypatch.setattr(sv_module, "query_object", lambda *a, **k: calls.append(1) or real(*a, **k))
    got = QueryPath(idx, net, "coseg:K=3,sv:K=3:region=object:object_K=3").run(Query(image=paths[0]), top=4)
    assert calls == [] and "object_fallback" in got.notes["sv"]
    QueryPath(idx, net, "sv:K=3:region=object:object_K=3").run(Query(image=paths[0]), top=4)
    assert calls == [1]
