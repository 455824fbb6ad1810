"""retrieval.search.onnx_extract: onnxruntime gives the torch network's descriptors (within 1e-4)
at one scale and at three, whitened, at several sizes, for batches and for image files; a file
that is not a gemseg ONNX model is one line."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from conftest import random_images

from retrieval.core.errors import WeightsError
from retrieval.model.network import ModelConfig, build_network
from retrieval.model.onnx_export import export_onnx
from retrieval.model.whitening import pca_whitening
from retrieval.search.extract import describe_batch, extract_descriptors
from retrieval.search.onnx_extract import OnnxDescriptorNet


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    net = build_network(ModelConfig(backbone="resnet18", weights="none", image_size=72))
    X = np.random.RandomState(1).randn(700, 512).astype(np.float32)
    w = pca_whitening(X)
    net.set_whitening(w.m, w.P[:40], kind="pca")
    path = tmp_path_factory.mktemp("onnx") / "m.onnx"
    export_onnx(net, path)
    return net, OnnxDescriptorNet(path, threads=1)


@pytest.mark.slow
@pytest.mark.parametrize("scales", [[1.0], [1.0, 0.7071, 0.5]])
def test_batches_match_torch(exported, scales):
    net, onet = exported
    assert onet.dim == net.dim == 40 and onet.fingerprint == net.fingerprint()
    for i, hw in enumerate([(72, 72), (55, 72), (72, 49)]):
        x = torch.randn(3, 3, *hw, generator=torch.Generator().manual_seed(i))
        want = describe_batch(net, x, scales).numpy()
        got = onet.describe(x, scales)
        assert got.dtype == np.float32 and got.shape == (3, 40)
        np.testing.assert_allclose(got, want, atol=1e-4)
        np.testing.assert_allclose(onet.describe(x.numpy(), scales), want, atol=1e-4)  # numpy in, too
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


@pytest.mark.slow
def test_files_match_torch_and_bad_files_are_reported(exported, tmp_path):
    net, onet = exported
    paths = random_images(tmp_path, 4, size=(60, 80), seed=3)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    ex = onet.extract(paths + [bad])
    want = extract_descriptors(net, paths, workers=0, progress=False)
    assert ex.paths == want.paths and [p for p, _ in ex.failures] == [str(bad)]
    np.testing.assert_allclose(ex.descriptors, want.descriptors, atol=1e-4)
    assert onet.scales == [1.0, 0.7071, 0.5] and onet.image_size == 72


def test_not_a_gemseg_onnx_model_is_one_line(tmp_path):
    g = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "g",
                               [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
                               [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
    onnx.save(onnx.helper.make_model(g), str(tmp_path / "other.onnx"))
    with pytest.raises(WeightsError, match="not a gemseg ONNX model"):
        OnnxDescriptorNet(tmp_path / "other.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"\x00garbage")
    with pytest.raises(WeightsError) as e:
        OnnxDescriptorNet(tmp_path / "junk.onnx")
    assert "\n" not in str(e.value)
    with pytest.raises(WeightsError, match="not found"):
        OnnxDescriptorNet(tmp_path / "missing.onnx")


@pytest.mark.slow
def test_a_cirtorch_model_runs_on_onnxruntime_with_its_rule(tmp_path):
    """cirtorch's multi-scale rule (plain bilinear scales, msp) and its ms / ss Lw survive the export."""
    from test_model_cirtorch import cirtorch_state, features_of, make_whiten, random_lw, save_like_cirtorch

    from retrieval.core.errors import ConfigError
    from retrieval.loading import load_model, with_input

    save_like_cirtorch(cirtorch_state("vgg16", features_of("vgg16", 3), None, 3.3, random_lw(512, 6)),
                       tmp_path / "v.pth")
    net = load_model(tmp_path / "v.pth")
    onet = OnnxDescriptorNet(export_onnx(net, tmp_path / "v.onnx").path)
    assert onet.resize == "plain" and onet.msp == pytest.approx(3.3) and onet.head_scales == "ms"
    save_like_cirtorch(cirtorch_state("vgg16", features_of("vgg16", 3), make_whiten(512, 8), 3.3, None),
                       tmp_path / "w.pth")  # a whiten layer inside the graph, msp 1
    wnet = load_model(tmp_path / "w.pth")
    wonet = OnnxDescriptorNet(export_onnx(wnet, tmp_path / "w.onnx").path)
    y = torch.randn(1, 3, 66, 81, generator=torch.Generator().manual_seed(3))
    assert wonet.msp == 1.0 and wonet.head_scales == "any"
    np.testing.assert_allclose(wonet.describe(y), describe_batch(wnet, y, wnet.config.scales).numpy(), atol=1e-4)
    x = torch.randn(2, 3, 75, 60, generator=torch.Generator().manual_seed(2))
    np.testing.assert_allclose(onet.describe(x), describe_batch(net, x, net.config.scales).numpy(), atol=1e-4)
    with pytest.raises(ConfigError, match="multi-scale Lw"):
        onet.describe(x, [1.0])
    one = OnnxDescriptorNet(export_onnx(with_input(net, scales=[1.0]), tmp_path / "v1.onnx").path)
    np.testing.assert_allclose(one.describe(x), describe_batch(net, x, [1.0]).numpy(), atol=1e-4)


@pytest.mark.slow
def test_a_dirtorch_model_runs_on_onnxruntime_with_its_rule(tmp_path):
    """dirtorch's sign-keeping mean over scales and its PCA whitening survive the export."""
    import torchvision

    from retrieval.model.dirtorch import dirtorch_network

    torch.manual_seed(4)
    sd = {f"module.{k}": v for k, v in torchvision.models.resnet18(weights=None).state_dict().items()
          if not k.startswith("fc.")}
    sd.update({"module.adpool.p": torch.ones(1) * 3.1, "module.fc.weight": torch.randn(96, 512) / 20,
               "module.fc.bias": torch.randn(96) / 50})
    r = np.random.RandomState(0)
    pca = {"means": r.randn(96) * 0.01, "W": r.randn(96, 32)}  # dirtorch's non-sklearn PCA form
    obj = {"model_options": {"arch": "resnet18_rmac", "pooling": "gem", "norm_features": True},
           "state_dict": sd, "pca": {"Landmarks_clean": pca}}
    net = dirtorch_network(obj, "d.pt")
    onet = OnnxDescriptorNet(export_onnx(net, tmp_path / "d.onnx").path)
    assert onet.msp_signed and onet.dim == 32
    x = torch.randn(2, 3, 70, 64, generator=torch.Generator().manual_seed(6))
    for scales in ([1.0], [1.0, 0.7071, 0.5]):
        np.testing.assert_allclose(onet.describe(x, scales), describe_batch(net, x, scales).numpy(), atol=1e-4)
