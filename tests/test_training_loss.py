"""retrieval.training.loss: contrastive and triplet losses against hand-computed values."""
import math

import pytest
import torch

from retrieval.training.loss import (
    ContrastiveLoss,
    TripletLoss,
    build_loss,
    contrastive_loss,
    contrastive_pair_loss,
    default_margin,
    triplet_loss,
)

# One tuple in 2-D: q = (1, 0); p = (0.6, 0.8); n1 = (0, 1); n2 = (0.8, 0.6).
# |q-p|^2 = 0.16 + 0.64 = 0.8; |q-n1|^2 = 2; |q-n2|^2 = 0.04 + 0.36 = 0.4.
TUPLE = torch.tensor([[[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [0.8, 0.6]]])


def test_contrastive_hand_computed():
    m = 0.85
    pos = 0.5 * 0.8  # ½ d² for the positive
    neg1 = 0.0  # d = √2 > margin
    neg2 = 0.5 * (m - math.sqrt(0.4)) ** 2  # ½ (m − d)² with d = 0.63246
    want = pos + neg1 + neg2  # 0.4 + 0.023663 = 0.423663
    assert want == pytest.approx(0.4236628, abs=1e-6)
    got = contrastive_loss(TUPLE, margin=m)
    assert got.item() == pytest.approx(want, abs=1e-6)
    assert ContrastiveLoss(m)(TUPLE).item() == pytest.approx(want, abs=1e-6)


def test_contrastive_reductions_and_pairs():
    x = torch.cat([TUPLE, TUPLE.flip(-1)])  # a second, mirrored tuple with the same distances
    per = contrastive_loss(x, 0.85, reduction="none")
    assert per.shape == (2,)
    assert torch.allclose(per, per[:1].expand(2))
    assert contrastive_loss(x, 0.85, reduction="sum").item() == pytest.approx(2 * per[0].item(), abs=1e-6)
    assert contrastive_loss(x, 0.85, reduction="mean").item() == pytest.approx(per[0].item(), abs=1e-6)
    # pair form: matching pair at d = 0.5 → 0.125; non-matching at d = 0.5, margin 0.7 → ½·0.2² = 0.02
    a = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    b = torch.tensor([[0.3, 0.4], [0.3, 0.4]])
    got = contrastive_pair_loss(a, b, torch.tensor([1, 0]), margin=0.7)
    assert torch.allclose(got, torch.tensor([0.125, 0.02]), atol=1e-6)


def test_contrastive_gradient_finite_when_identical():
    x = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]], requires_grad=True)
    contrastive_loss(x).backward()
    assert torch.isfinite(x.grad).all()


def test_triplet_hand_computed():
    # max(0.8 − 2 + 0.1, 0) + max(0.8 − 0.4 + 0.1, 0) = 0 + 0.5
    assert triplet_loss(TUPLE, margin=0.1).item() == pytest.approx(0.5, abs=1e-6)
    # margin 1.5: (0.8 − 2 + 1.5) + (0.8 − 0.4 + 1.5) = 0.3 + 1.9
    assert TripletLoss(1.5)(TUPLE).item() == pytest.approx(2.2, abs=1e-6)
    with pytest.raises(ValueError):
        triplet_loss(TUPLE[:, :2])  # no negative


def test_margins_and_factory():
    assert default_margin("vgg16") == 0.75
    assert default_margin("resnet101") == 0.85
    assert isinstance(build_loss("triplet", 0.1), TripletLoss)
    with pytest.raises(ValueError):
        build_loss("hinge", 0.1)
