"""cosegment.dff: factorising activations, heat maps normalised per factor over the set, the
object-factor rule, projection on fixed concepts."""

import numpy as np
import pytest
import torch

from cosegment import activations, dff
from cosegment.masks import object_masks
from cosegment.metrics import jaccard
from retrieval.core.errors import DataError, ModelMismatchError


def _result_from_maps(maps):
    """DFFResult whose W holds the given per-image (k, h, w) maps."""
    k = maps[0].shape[0]
    W = np.concatenate([m.reshape(k, -1).T for m in maps]).astype(np.float32)
    return dff.DFFResult(W, np.eye(k, 5, dtype=np.float32), [m.shape[1:] for m in maps])


def _ring_and_centre(h=6, w=6, n=3):
    maps = []
    for i in range(n):
        m = np.zeros((2, h, w), np.float32)
        m[0] = 1.0
        m[0, 2:4, 2:4] = 0.1          # factor 0: background, everywhere but the centre
        m[1, 2:4, 2:4] = 1.0 + i       # factor 1: the object in the centre
        maps.append(m)
    return maps


def test_maps_and_heatmaps_normalised_per_factor_over_the_set():
    maps = _ring_and_centre()
    r = _result_from_maps(maps)
    for a, b in zip(r.maps(), maps):
        np.testing.assert_array_equal(a, b)
    heat = dff.heatmaps(r, [(12, 12), (6, 9), (6, 6)])
    assert [h.shape for h in heat] == [(2, 12, 12), (2, 6, 9), (2, 6, 6)]
    # factor 1 peaks at 3.0 in image 2 → normalised to 1 there, 1/3 in image 0
    assert heat[2][1].max() == pytest.approx(1.0)
    assert heat[0][1].max() == pytest.approx(1 / 3, rel=1e-5)
    # same size: bilinear upsampling with align_corners=False is the identity
    np.testing.assert_allclose(heat[2][1], maps[2][1] / 3.0, rtol=1e-6)


def test_object_factor_rule_picks_the_centre_not_the_border():
    r = _result_from_maps(_ring_and_centre())
    st = dff.factor_stats(r)
    assert st.border_ratio[0] > 1.0 > st.border_ratio[1]
    assert st.presence.tolist() == [1.0, 1.0]
    assert dff.choose_object_factor(r) == 1
    assert dff.choose_object_factors(r) == [1]
    # swap the factors: the rule follows the content, not the index
    r2 = _result_from_maps([m[::-1].copy() for m in _ring_and_centre()])
    assert dff.choose_object_factors(r2) == [0]
    # factors given by the user (numbered from 0) win over either rule; out of range is a DataError
    assert dff.select_object_factors(r) == dff.select_object_factors(r, rule="single") == [1]
    assert dff.select_object_factors(r, [0]) == [0]
    with pytest.raises(DataError, match="numbered from 0"):
        dff.select_object_factors(r, [2])
    with pytest.raises(DataError, match="object_rule"):
        dff.select_object_factors(r, rule="largest")


def test_object_factors_keep_all_parts_but_never_everything():
    maps = []
    for _ in range(3):
        m = np.zeros((3, 8, 8), np.float32)
        m[0] = 1.0
        m[0, 2:6, 2:6] = 0
        m[1, 2:4, 2:6] = 1.0   # upper part of the object
        m[2, 4:6, 2:6] = 1.0   # lower part
        maps.append(m)
    r = _result_from_maps(maps)
    assert dff.choose_object_factors(r) == [1, 2]
    masks, _ = object_masks(dff.heatmaps(r, [(8, 8)] * 3), [1, 2], 0.5)
    truth = np.zeros((8, 8), bool)
    truth[2:6, 2:6] = True
    assert all(jaccard(m, truth) == 1.0 for m in masks)
    # two central factors and nothing on the border: the one most on the border is dropped
    only = _result_from_maps([m[1:] for m in maps])
    assert len(dff.choose_object_factors(only)) == 1


def test_projection_on_fixed_concepts_recovers_the_factorisation():
    rng = np.random.default_rng(1)
    acts = [torch.from_numpy(rng.random((6, 4, 5)).astype(np.float32)) for _ in range(3)]
    r = dff.factorize_activations(acts, 2, seed=0)
    p = dff.project_concepts(acts, r.H, max_iter=500)
    # W of the learned factorisation is (close to) the NNLS solution for its own H
    A, _ = activations.stack_activations(acts)
    e_fit = np.linalg.norm(A.numpy() - r.W @ r.H)
    e_proj = np.linalg.norm(A.numpy() - p.W @ r.H)
    assert e_proj <= e_fit + 1e-4
    with pytest.raises(ModelMismatchError):
        dff.project_concepts(acts, np.ones((2, 7), np.float32))
    with pytest.raises(DataError, match="larger than the data allows"):
        dff.factorize_activations(acts[:1], 7)
