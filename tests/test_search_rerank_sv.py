"""retrieval.search.rerank.sv: a warped copy of the query is verified (inliers, matches that follow
the known homography, in each image's own pixels, the query's box offset added back) and moves up;
unrelated images are not; the step permutes only the top K; a shortlist of one, a query by vector,
an unreadable hit; the score formula; the feature cache; a stack of the new steps gives the same
hits through the CLI, the Python API and the evaluation."""
from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
from conftest import run_tool, unit_rows
from PIL import Image, ImageDraw

from retrieval.core.errors import DataError
from retrieval.evaluation.datasets import EvalDataset
from retrieval.evaluation.run import rank_dataset
from retrieval.jobs import run_index
from retrieval.loading import search_model
from retrieval.search.collection import search_images
from retrieval.search.index import ImageIndex
from retrieval.search.local_features import sift_features
from retrieval.search.query import Query, QueryPath, query_steps
from retrieval.search.rerank.registry import parse_steps
from retrieval.search.rerank.step import RerankContext
from retrieval.search.rerank.sv import FeatureCache, SVParams, box_offset, drawn_matches, verified_scores

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
