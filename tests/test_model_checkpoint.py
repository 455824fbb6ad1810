"""retrieval.model.checkpoint: a model file (config, weights, whitening, fingerprint, extra) written
atomically, read with weights_only, and refused in one line when it is not a gemseg checkpoint."""
from __future__ import annotations

import pytest
import torch

from retrieval.core.errors import WeightsError
from retrieval.model.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    load_checkpoint,
    network_from_checkpoint,
    read_checkpoint,
    save_checkpoint,
)


@pytest.mark.slow
def test_the_file_holds_config_weights_fingerprint_and_extra(small_net, tmp_path):
    save_checkpoint(small_net, tmp_path / "m.pt", extra={"epoch": 2})
    obj = read_checkpoint(tmp_path / "m.pt")
    assert (obj["format"], obj["version"]) == (CHECKPOINT_FORMAT, CHECKPOINT_VERSION) == ("gemseg-model", 1)
    assert obj["config"]["backbone"] == "resnet18" and obj["config"]["image_size"] == 64
    assert obj["fingerprint"] == small_net.fingerprint() and obj["extra"] == {"epoch": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]  # no temporary left behind
    back = network_from_checkpoint(obj)
    assert not back.training and back.fingerprint() == small_net.fingerprint()
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(back(x), small_net.eval()(x))


def test_foreign_and_mismatched_files_are_one_line_weights_errors(small_net, tmp_path):
    torch.save({"format": "something-else"}, tmp_path / "other.pt")
    torch.save({"state_dict": {}}, tmp_path / "plain.pt")
    for name in ("other.pt", "plain.pt", "missing.pt"):
        with pytest.raises(WeightsError) as e:
            load_checkpoint(tmp_path / name)
        assert "\n" not in str(e.value) and name in str(e.value)
    save_checkpoint(small_net, tmp_path / "m.pt")
    obj = read_checkpoint(tmp_path / "m.pt")
    obj["state_dict"]["pool.p"] = torch.ones(3)  # weights that do not fit the config
    with pytest.raises(WeightsError, match="do not fit its config"):
        network_from_checkpoint(obj, source="m.pt")
