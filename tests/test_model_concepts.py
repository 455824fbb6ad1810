"""retrieval.model.concepts: concept-masked pooling: the concept mask from DFF concepts (and its fall
back to plain GeM), the network hook, concept files read back and attached by a checkpoint."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cosegment.concept_file import save_concepts
from retrieval.core.errors import ModelMismatchError
from retrieval.model.checkpoint import load_checkpoint, save_checkpoint
from retrieval.model.concepts import ConceptMask, ConceptOptions, mask_from_heat, object_heat
from retrieval.model.network import ModelConfig, build_network
from retrieval.model.pooling import gem, masked_gem

# ------------------------------------------------------------------------------ concept mask

def _scene(C: int = 8, obj_region=(slice(1, 3), slice(2, 5))):
    """Activations (2, C, 5, 6): object concept inside a region, background concept elsewhere."""
    rng = np.random.default_rng(0)
    H = np.abs(rng.normal(size=(2, C))).astype(np.float32)
    H[0, : C // 2] *= 5  # object and background load different channels
    H[1, C // 2:] *= 5
    acts = np.tile(H[1][None, :, None, None], (2, 1, 5, 6)).astype(np.float32)
    acts[:, :, obj_region[0], obj_region[1]] = H[0][None, :, None, None] * 2.0
    return torch.from_numpy(acts), torch.from_numpy(H)


def test_concept_mask_picks_the_object_region_and_pools_it():
    acts, H = _scene()
    heat, share = object_heat(acts, H, [0], max_iter=200)
    inside = torch.zeros(5, 6, dtype=torch.bool)
    inside[1:3, 2:5] = True
    assert (heat[:, inside] > 1.9).all() and (heat[:, ~inside] < 1e-3).all()
    cm = ConceptMask(H, 0, "layer4", options=ConceptOptions(floor=0.0, max_iter=200))
    m = cm.mask(acts)
    assert not cm.last_fallback.any()
    torch.testing.assert_close(masked_gem(acts, m, 3.0), gem(acts[..., 1:3, 2:5], 3.0), rtol=1e-3, atol=1e-4)
    # floor keeps some context: weights floor outside, 1 inside
    m2 = ConceptMask(H, 0, "layer4", options=ConceptOptions(floor=0.25, max_iter=200)).mask(acts)
    assert m2[:, ~inside].min() >= 0.25 - 1e-6 and m2[:, ~inside].max() < 0.26


def test_concept_mask_falls_back_to_plain_gem_when_empty_or_uniform():
    acts, H = _scene()
    background_only = acts.clone()
    background_only[:] = H[1][None, :, None, None]
    object_only = (H[0][None, :, None, None] * torch.ones(2, 1, 5, 6)).contiguous()
    cm = ConceptMask(H, 0, "layer4", options=ConceptOptions(max_iter=200))
    for a in (background_only, object_only):
        m = cm.mask(a)
        assert cm.last_fallback.all()
        torch.testing.assert_close(masked_gem(a, m, 3.0), gem(a, 3.0))
    # the rule itself: a zero heat map, a uniform one, a peaked one
    heat = torch.zeros(3, 2, 2)
    heat[1] = 1.0
    heat[2, 0, 0] = 1.0
    _, fb = mask_from_heat(heat, torch.tensor([0.5, 0.5, 0.5]), ConceptOptions())
    assert fb.tolist() == [True, True, False]
    _, fb = mask_from_heat(heat, torch.tensor([0.5, 0.5, 0.001]), ConceptOptions())  # share < 2 %
    assert fb.tolist() == [True, True, True]


# ------------------------------------------------------------------------------ network hook & files

@pytest.mark.slow
def test_network_with_concepts_pools_masked_and_changes_fingerprint(small_net, tmp_path):
    net = small_net
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    fp0 = net.fingerprint()
    with torch.no_grad():
        fmap = net.features(x)
        A = fmap.permute(0, 2, 3, 1).reshape(-1, fmap.shape[1]).numpy()
    H = np.abs(np.random.default_rng(0).normal(size=(3, net.backbone.out_channels))).astype(np.float32)
    H[0] = A[:4].mean(0)  # a concept that some positions express strongly
    cm = ConceptMask(H, 0, "layer4", net.backbone.fingerprint(), ConceptOptions(min_share=0.0, uniform_above=1.0))
    net.set_concepts(cm)
    try:
        assert net.fingerprint() != fp0
        with torch.no_grad():
            got = net.pooled(x)
            m = cm.mask(fmap)
            ref = torch.nn.functional.normalize(masked_gem(fmap, m, net.pool.p), dim=-1)
        torch.testing.assert_close(got, ref)
        assert not torch.allclose(got, torch.nn.functional.normalize(gem(fmap, net.pool.p), dim=-1))
    finally:
        net.set_concepts(None)
    assert net.fingerprint() == fp0


@pytest.mark.slow
def test_concept_file_round_trip_and_mismatch_is_one_line(small_net, tmp_path):
    net = small_net
    H = np.abs(np.random.default_rng(1).normal(size=(2, net.backbone.out_channels))).astype(np.float32)
    good = save_concepts(tmp_path / "good.pt", H, net.backbone.fingerprint(), "layer4",
                         backbone="resnet18", object_factors=[1])
    cm = ConceptMask.from_file(good, net.backbone)
    assert cm.factors == [1] and cm.layer == "layer4"
    # a checkpoint whose config names the concept file re-attaches it on load
    cfg = ModelConfig(backbone="resnet18", weights="none", image_size=64, scales=[1.0], concepts=str(good))
    net2 = build_network(cfg)
    assert net2.concepts is not None
    save_checkpoint(net2, tmp_path / "m.pt")
    net3 = load_checkpoint(tmp_path / "m.pt")
    assert net3.concepts is not None and net3.fingerprint() == net2.fingerprint()
    # another backbone's concepts: a one-line ModelMismatchError, from the file or the config
    bad = save_concepts(tmp_path / "bad.pt", H, "0123456789abcdef", "layer4", object_factors=[0])
    with pytest.raises(ModelMismatchError) as e:
        ConceptMask.from_file(bad, net.backbone)
    assert "\n" not in str(e.value) and "another backbone" in str(e.value)
    with pytest.raises(ModelMismatchError):
        build_network(ModelConfig(backbone="resnet18", weights="none", image_size=64, concepts=str(bad)))


@pytest.mark.slow
def test_a_concept_file_written_before_still_loads(small_net, tmp_path):
    """The on-disk format of a concept file (version 1), written as a plain dict: it still loads,
    with its object factors, and a network pools with it."""
    bb = small_net.backbone
    H = torch.rand(3, 512, generator=torch.Generator().manual_seed(0))
    torch.save({"format": "gemseg-concepts", "version": 1, "H": H, "fingerprint": bb.fingerprint(),
                "layer": "layer4", "backbone": "resnet18", "image_size": 64, "object_factors": [2],
                "method": "nmf", "extra": {"images": 5, "k": 3}}, tmp_path / "old.pt")
    cm = ConceptMask.from_file(tmp_path / "old.pt", bb)
    assert cm.factors == [2] and cm.layer == "layer4" and torch.equal(cm.H, H)
    cfg = ModelConfig(backbone="resnet18", weights="none", image_size=64, scales=[1.0], concepts=str(tmp_path / "old.pt"))
    net = build_network(cfg)
    assert net.concepts is not None and net.concepts.factors == [2]
    assert net(torch.rand(2, 3, 64, 64)).shape == (2, 512)
