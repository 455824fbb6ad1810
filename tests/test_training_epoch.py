"""retrieval.training.epoch: one training epoch; running out of GPU memory is a one-line hint naming
the setting to lower (train.batch; train.mine_batch when describing images)."""
from __future__ import annotations

import pytest
import torch
from conftest import TINY_TRAIN_YAML, assert_one_line_error, class_folders, run_tool

from retrieval.core.errors import ConfigError, ResourceError
from retrieval.jobs import run_train
from retrieval.training import epoch as training_epoch
from retrieval.training import mining as training_mining

QUIET = dict(progress=False, log=lambda s: None)


@pytest.mark.slow
def test_oom_is_one_line_hint(tmp_path, monkeypatch):
    """GPU out-of-memory in a training forward is a ResourceError (not a ConfigError) whose one line
    names the setting to lower; the tool prints that line and exits 2."""
    def boom(*a, **k):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(training_epoch, "describe_training_batch", boom)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(TINY_TRAIN_YAML.format(data=class_folders(tmp_path / "d", [3, 3, 2])))
    with pytest.raises(ResourceError, match="out of GPU memory with train.batch 2") as e:
        run_train(cfg, out=tmp_path / "r0", **QUIET)
    assert not isinstance(e.value, ConfigError) and "\n" not in str(e.value)
    assert_one_line_error(run_tool("train_gem", "--config", cfg, "--out", tmp_path / "r", "--quiet"),
                          "out of GPU memory", "lower train.batch")
    # out of memory while describing images (mining, validation): the hint names train.mine_batch
    monkeypatch.setattr(training_mining, "extract_descriptors", boom)
    with pytest.raises(ResourceError, match="out of GPU memory describing .* lower train.mine_batch$"):
        run_train(cfg, out=tmp_path / "r1", **QUIET)
