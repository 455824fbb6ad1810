"""retrieval.loading: which model a tool uses: the default, a YAML config's ``model:`` section, a
checkpoint, or the model an index was built with (and its concept file)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TINY_CONFIG

from retrieval.core.errors import ModelMismatchError, WeightsError
from retrieval.loading import load_model, model_for_index, search_model
from retrieval.model.checkpoint import save_checkpoint
from retrieval.model.network import ModelConfig
from retrieval.search.index import ImageIndex


@pytest.mark.slow
def test_the_default_a_yaml_file_and_a_checkpoint(tmp_path):
    assert load_model().config == ModelConfig()  # the default model: efficientnet_lite0
    (tmp_path / "tiny.yaml").write_text(TINY_CONFIG)
    tiny = load_model(tmp_path / "tiny.yaml")
    assert (tiny.config.backbone, tiny.config.image_size, tiny.config.scales) == ("resnet18", 64, [1.0])
    save_checkpoint(tiny, tmp_path / "m.pt")
    back = load_model(tmp_path / "m.pt")
    assert back.fingerprint() == tiny.fingerprint()
    with pytest.raises(WeightsError):
        load_model(tmp_path / "missing.pt")


@pytest.mark.slow
def test_the_model_an_index_was_built_with(tiny_index, tmp_path):
    ix, _, cfg = tiny_index
    index = ImageIndex.load(ix)
    net = model_for_index(index)  # from the model config the index stores
    assert net.fingerprint() == index.fingerprint
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        np.testing.assert_allclose(net(x).numpy(), load_model(cfg)(x).numpy(), atol=1e-6)
    assert search_model(index).concepts is None  # the index records no concept file
    assert model_for_index(index, cfg).fingerprint() == index.fingerprint  # a spec given wins
    other = tmp_path / "other.yaml"
    other.write_text(TINY_CONFIG.replace("image_size: 64", "image_size: 48"))
    with pytest.raises(ModelMismatchError):
        index.check_model(model_for_index(index, other).fingerprint(), 512)
