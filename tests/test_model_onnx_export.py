"""retrieval.model.onnx_export: the exported graph gives torch's descriptors (within 1e-4) at
several input sizes, odd ones included (EfficientNet's "same" padding), with dynamic batch, height
and width; a re-export is byte-identical; what cannot be exported is refused in one line."""
from __future__ import annotations

import hashlib

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from retrieval.core.errors import ConfigError
from retrieval.model.network import ModelConfig, build_network
from retrieval.model.onnx_export import HEAD_M, HEAD_PT, INPUT, OUTPUTS, export_onnx, onnx_metadata
from retrieval.model.whitening import pca_whitening

SIZES = [(64, 64), (81, 96), (97, 70)]  # square, odd height, odd both


def whitened_resnet18() -> torch.nn.Module:
    net = build_network(ModelConfig(backbone="resnet18", weights="none", image_size=64, scales=[1.0]))
    X = np.random.RandomState(0).randn(600, 512).astype(np.float32)
    w = pca_whitening(X)
    net.set_whitening(w.m, w.P[:48], kind="pca")
    return net


def session(path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def check_sizes(net, path) -> None:
    s = session(path)
    for i, hw in enumerate(SIZES):
        x = torch.randn(2, 3, *hw, generator=torch.Generator().manual_seed(i))
        with torch.no_grad():
            want_pooled, want = net.pooled(x).numpy(), net(x).numpy()
        got_pooled, got = s.run(list(OUTPUTS), {INPUT: x.numpy()})
        assert got.shape == want.shape and got_pooled.shape == want_pooled.shape
        np.testing.assert_allclose(got, want, atol=1e-4)
        np.testing.assert_allclose(got_pooled, want_pooled, atol=1e-4)
        assert np.abs(want[0] - want[1]).max() > 1e-3  # the images differ: not a constant graph


@pytest.mark.slow
def test_whitened_resnet_matches_torch_at_three_sizes(tmp_path):
    net = whitened_resnet18()
    rep = export_onnx(net, tmp_path / "m.onnx")
    assert rep.dim == 48 and rep.bytes == (tmp_path / "m.onnx").stat().st_size
    check_sizes(net, rep.path)
    model = onnx.load(rep.path)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param for d in dims] == ["batch", "", "height", "width"]
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    np.testing.assert_allclose(inits[HEAD_PT], net.whiten_P[:48].numpy().T)
    np.testing.assert_allclose(inits[HEAD_M], net.whiten_m.numpy())
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta == onnx_metadata(net) and meta["gemseg.fingerprint"] == net.fingerprint()


@pytest.mark.slow
def test_default_model_with_same_padding_matches_torch_at_three_sizes(tmp_path):
    net = build_network(ModelConfig())  # EfficientNet-Lite0: TensorFlow "same" convolutions
    check_sizes(net, export_onnx(net, tmp_path / "lite0.onnx").path)


@pytest.mark.slow
def test_reexport_is_byte_identical(tmp_path):
    net = whitened_resnet18()
    a = export_onnx(net, tmp_path / "a.onnx")
    b = export_onnx(net, tmp_path / "b.onnx")
    assert a.sha256 == b.sha256 == hashlib.sha256((tmp_path / "b.onnx").read_bytes()).hexdigest()
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.slow
def test_export_leaves_the_network_as_it_was(tmp_path):
    net = whitened_resnet18().train()
    before = net.fingerprint()
    x = torch.randn(1, 3, 64, 64)
    export_onnx(net, tmp_path / "m.onnx")
    assert net.training and net.fingerprint() == before
    net.eval()
    with torch.no_grad():
        assert net(x).shape == (1, 48)


def test_concept_masked_network_is_refused(tmp_path, small_net):
    small_net.set_concepts(object())
    try:
        with pytest.raises(ConfigError, match="concept-masked"):
            export_onnx(small_net, tmp_path / "m.onnx")
    finally:
        small_net.set_concepts(None)
    assert not (tmp_path / "m.onnx").exists()
