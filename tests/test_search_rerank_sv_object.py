"""sv:region=object (retrieval/search/rerank/sv.py): only inliers on the query's co-segmented object
count. A hit that shares the query's *background* (many rigid inliers, a different object) is
verified by ``region=image`` and not by ``region=object``; a hit that shares the object moves above
it. The object heat is sampled at the inliers (bilinear, against a hand-worked grid); a ``coseg``
step earlier in the stack leaves the object for ``sv`` (not computed twice); a query whose object
falls back counts every inlier; co-segmentation of a real-photo object on different backgrounds
puts the query's object heat on the object."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from retrieval.core.errors import DataError
from retrieval.model.network import ModelConfig, build_network
from retrieval.search.extract import extract_descriptors
from retrieval.search.index import ImageIndex
from retrieval.search.query import Query, QueryPath
from retrieval.search.rerank import sv as sv_module
from retrieval.search.rerank.coseg import CosegRerankOptions, query_object
from retrieval.search.rerank.registry import parse_steps
from retrieval.search.rerank.step import RerankContext
from retrieval.search.rerank.sv import SVParams, on_object
from test_search_rerank_sv import H, textured, warped

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
