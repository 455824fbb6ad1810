"""cosegment.activations: images → one backbone layer's activations, batched by size, stacked into
the matrix DFF factorises."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import random_images, toy_backbone
from PIL import Image

from cosegment import activations
from retrieval.core.backbone import build_backbone
from retrieval.core.errors import ConfigError, DataError


def test_an_unknown_layer_is_one_line_with_did_you_mean():
    torch.manual_seed(0)
    a = build_backbone("resnet18", "none")
    with pytest.raises(ConfigError, match="unknown layer 'layer9' for resnet18 \\(did you mean 'layer4'\\?\\)"):
        activations.extract_activations(a, [torch.zeros(3, 32, 32)], "layer9")


def test_images_load_resized_and_unreadable_files_are_listed(tmp_path):
    paths = random_images(tmp_path, 2, size=(40, 80))
    Image.new("L", (30, 60), 128).save(tmp_path / "grey.png")
    (tmp_path / "bad.jpg").write_bytes(b"nope")
    got = activations.load_images(paths + [tmp_path / "grey.png", tmp_path / "bad.jpg"], 32,
                                  mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    assert got.paths == paths + [tmp_path / "grey.png"] and got.sizes == [(40, 80), (40, 80), (60, 30)]
    assert [tuple(t.shape) for t in got.tensors] == [(3, 16, 32), (3, 16, 32), (3, 32, 16)]
    torch.testing.assert_close(got.tensors[2], torch.full((3, 32, 16), 128 / 255 * 2 - 1))  # grey → RGB, normalised
    assert [p for p, _ in got.failures] == [str(tmp_path / "bad.jpg")]


def test_batched_activations_equal_one_image_at_a_time_and_stack_row_major():
    torch.manual_seed(0)
    bb = toy_backbone("toy_acts").eval()
    g = torch.Generator().manual_seed(1)
    tensors = [torch.rand(3, 16, 24, generator=g), torch.rand(3, 24, 16, generator=g),
               torch.rand(3, 16, 24, generator=g)]
    acts = activations.extract_activations(bb, tensors, "conv1", batch_size=2)
    with torch.no_grad():
        one = [bb.stages["conv1"](t[None])[0] for t in tensors]
    assert [tuple(a.shape) for a in acts] == [(8, 8, 12), (8, 12, 8), (8, 8, 12)]  # input order kept
    for a, b in zip(acts, one):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    both = activations.extract_layers(bb, tensors[:1], ["conv1", "conv2"])[0]
    assert set(both) == {"conv1", "conv2"} and both["conv2"].shape == (16, 4, 6)
    A, shapes = activations.stack_activations(acts)
    assert A.shape == (3 * 96, 8) and shapes == [(8, 12), (12, 8), (8, 12)]
    np.testing.assert_array_equal(A[96 + 5].numpy(), acts[1][:, 0, 5].numpy())  # image 1, row 0, column 5
    with pytest.raises(DataError, match="no activations"):
        activations.stack_activations([])
    with pytest.raises(DataError, match="different layers"):
        activations.stack_activations([acts[0], both["conv2"]])
