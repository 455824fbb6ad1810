"""retrieval.search.extract: batched, multi-scale descriptors equal one image at a time; EXIF-rotated
images get the upright image's descriptor."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import random_images
from PIL import Image

from retrieval.core.images import load_image, resize_long_side, to_tensor
from retrieval.model.network import ModelConfig, build_network
from retrieval.search.extract import describe_image, extract_descriptors


@pytest.fixture(scope="module")
def tiny_net():
    return build_network(ModelConfig(backbone="resnet18", weights="none", image_size=64, scales=[1.0]))


@pytest.mark.slow
def test_batched_extraction_equals_one_at_a_time(tmp_path, tiny_net):
    paths = random_images(tmp_path / "a", 5, size=(48, 64), seed=1)
    paths += random_images(tmp_path / "b", 4, size=(64, 40), seed=2)  # another aspect ratio
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    all_paths = paths[:3] + [tmp_path / "bad.jpg"] + paths[3:]
    for workers in (0, 2):
        ex = extract_descriptors(tiny_net, all_paths, batch_size=4, workers=workers, progress=False)
        assert ex.paths == [str(p) for p in paths]  # input order kept, the bad file dropped
        assert len(ex.failures) == 1 and ex.failures[0][0] == str(tmp_path / "bad.jpg")
        assert ex.descriptors.dtype == np.float32 and ex.descriptors.shape == (9, 512)
        assert ex.descriptors.flags.c_contiguous
        ref = np.stack([describe_image(tiny_net, p) for p in paths])
        np.testing.assert_allclose(ex.descriptors, ref, atol=1e-5)


@pytest.mark.slow
def test_multiscale_is_generalised_mean_of_scales(tmp_path, tiny_net):
    p = random_images(tmp_path, 1, size=(64, 64))[0]
    scales = [1.0, 0.7071, 0.5]
    got = describe_image(tiny_net, p, scales=scales)
    img = resize_long_side(load_image(p), 64)
    x = to_tensor(img, tiny_net.backbone.mean, tiny_net.backbone.std)[None]
    pw = float(tiny_net.pool.p.detach())
    acc = 0
    with torch.no_grad():
        for s in scales:
            xs = x if s == 1 else torch.nn.functional.interpolate(
                x, size=(round(64 * s), round(64 * s)), mode="bilinear", align_corners=False, antialias=True)
            acc = acc + tiny_net.pooled(xs) ** pw
        ref = torch.nn.functional.normalize((acc / 3) ** (1 / pw), dim=-1)[0].numpy()
    np.testing.assert_allclose(got, ref, atol=1e-6)
    single = describe_image(tiny_net, p, scales=[1.0])
    assert np.abs(single - got).max() > 1e-4


@pytest.mark.slow
def test_exif_rotated_image_has_the_upright_descriptor(tmp_path, tiny_net):
    rng = np.random.default_rng(5)
    upright = Image.fromarray(rng.integers(0, 256, (6, 10, 3), dtype=np.uint8)).resize((80, 48))
    upright.save(tmp_path / "up.png")
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # what a camera writes for orientation 6
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(tmp_path / "rot.png", exif=exif)
    a = describe_image(tiny_net, tmp_path / "up.png")
    b = describe_image(tiny_net, tmp_path / "rot.png")
    np.testing.assert_allclose(a, b, atol=1e-5)
    ex = extract_descriptors(tiny_net, [tmp_path / "rot.png", tmp_path / "up.png"], progress=False)
    np.testing.assert_allclose(ex.descriptors[0], ex.descriptors[1], atol=1e-5)
