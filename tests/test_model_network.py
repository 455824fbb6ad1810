"""retrieval.model.network: the descriptor network (backbone → pooling → L2 → whitening → L2): unit
descriptors, the whitening slot, seeded random init, fingerprints; checkpoints round trip."""

import numpy as np
import pytest
import torch

from retrieval.loading import load_model
from retrieval.model.checkpoint import load_checkpoint, save_checkpoint
from retrieval.model.network import ModelConfig, build_network


@pytest.mark.slow
def test_descriptor_is_unit_norm_and_checkpoint_round_trips(tmp_path):
    cfg = ModelConfig(backbone="resnet18", weights="none", image_size=64, scales=[1.0])
    net = build_network(cfg)
    x = torch.randn(3, 3, 64, 48)
    with torch.no_grad():
        v = net(x)
    assert v.shape == (3, 512)
    torch.testing.assert_close(v.norm(dim=1), torch.ones(3))
    fp = net.fingerprint()
    save_checkpoint(net, tmp_path / "m.pt", extra={"epoch": 3})
    obj = torch.load(tmp_path / "m.pt", weights_only=True)
    assert obj["extra"]["epoch"] == 3
    net2 = load_checkpoint(tmp_path / "m.pt")
    assert net2.fingerprint() == fp
    with torch.no_grad():
        torch.testing.assert_close(net2(x), v)
    assert load_model(tmp_path / "m.pt").fingerprint() == fp


@pytest.mark.slow
def test_whitening_slot_changes_output_and_fingerprint(tmp_path):
    net = build_network(ModelConfig(backbone="resnet18", weights="none", image_size=64, scales=[1.0]))
    fp0 = net.fingerprint()
    rng = np.random.default_rng(0)
    m = rng.normal(size=512).astype(np.float32) * 0.01
    P = rng.normal(size=(64, 512)).astype(np.float32)
    net.set_whitening(m, P)
    assert net.dim == 64 and net.fingerprint() != fp0
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        f = net.pooled(x)
        ref = torch.nn.functional.normalize((f - torch.from_numpy(m)) @ torch.from_numpy(P).t(), dim=-1)
        torch.testing.assert_close(net(x), ref)
    save_checkpoint(net, tmp_path / "w.pt")
    net2 = load_checkpoint(tmp_path / "w.pt")
    assert net2.dim == 64 and net2.fingerprint() == net.fingerprint()


@pytest.mark.slow
def test_random_init_is_seeded_and_different_weights_differ():
    cfg = ModelConfig(backbone="resnet18", weights="none", image_size=64, scales=[1.0])
    assert build_network(cfg, seed=0).fingerprint() == build_network(cfg, seed=0).fingerprint()
    assert build_network(cfg, seed=0).fingerprint() != build_network(cfg, seed=1).fingerprint()
