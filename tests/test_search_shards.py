"""retrieval.search.shards: the folder of descriptor shards that sharded extraction writes and index
building reads: a manifest tied to one model, shards written atomically, missing ones named."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import fake_shards, unit_rows

from retrieval.core.errors import ConfigError, DataError, ModelMismatchError
from retrieval.search.shards import MANIFEST, ShardDir


def test_shards_round_trip_in_source_order(tmp_path):
    X = unit_rows(10, 8)
    sd = fake_shards(tmp_path / "desc", X, 4)
    assert sd.check_complete() == 3 and sd.missing() == [] and [sd.shard_rows(k) for k in range(3)] == [4, 4, 2]
    shards = list(sd.iter_shards())
    assert [s.number for s in shards] == [0, 1, 2]
    np.testing.assert_array_equal(np.concatenate([np.asarray(s.descriptors) for s in shards]), X)
    assert shards[2].paths == ["/img/8.jpg", "/img/9.jpg"] and shards[0].stats.shape == (4, 2)
    assert sorted(p.name for p in (tmp_path / "desc").iterdir()) == [MANIFEST, "shards"]
    assert sd.manifest()["images"] == 10 and sd.manifest()["dim"] == 8


def test_another_model_or_shard_size_is_refused_and_missing_shards_are_named(tmp_path):
    sd = fake_shards(tmp_path / "desc", unit_rows(10, 8), 4)
    sd.open_for({"backbone": "x"}, "fp", 8, 4, "generated")  # the same model resumes
    with pytest.raises(ModelMismatchError, match="another model"):
        ShardDir(tmp_path / "desc").open_for({}, "other", 8, 4, "generated")
    with pytest.raises(ConfigError, match="--shard-size 4"):
        ShardDir(tmp_path / "desc").open_for({}, "fp", 8, 5, "generated")
    (sd.shard_dir(1) / "skipped.json").unlink()  # an unfinished shard
    assert sd.missing() == [1] and not sd.is_complete(1)
    with pytest.raises(DataError, match="1 of 3 shards missing"):
        sd.check_complete()
    with pytest.raises(DataError, match="shard 1 .* is missing"):
        sd.read_shard(1)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(DataError, match="not a descriptor folder"):
        ShardDir(tmp_path / "mine").open_for({}, "fp", 8, 4, "x")
    with pytest.raises(DataError, match="holds no descriptors"):
        ShardDir(tmp_path / "mine").manifest()
