"""retrieval.search.sharded_extract: a rank's shards of a folder described into a descriptor folder;
complete shards are skipped on a re-run; the report says what was done."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import shards_of

from retrieval.core.errors import DataError
from retrieval.core.image_listing import list_images
from retrieval.core.ranks import Ranks
from retrieval.search.extract import extract_descriptors
from retrieval.search.sharded_extract import extract_shards


@pytest.mark.slow
def test_shards_hold_what_one_extraction_gives_and_a_rerun_skips_them(small_net, photos, tmp_path):
    rep = extract_shards(small_net, photos, tmp_path / "d", shard_size=3, workers=0, progress=False, ranks=Ranks())
    assert (rep.listed, rep.shards, rep.shards_written, rep.images, rep.skipped_files) == (8, 3, 3, 7, 1)
    assert rep.complete and rep.fingerprint == small_net.fingerprint()
    assert rep.as_dict()["images_per_second"] >= 0
    paths, X = shards_of(tmp_path / "d")
    ref = extract_descriptors(small_net, list_images(photos), workers=0, progress=False)
    assert paths == ref.paths
    np.testing.assert_allclose(X, ref.descriptors, atol=1e-5)
    again = extract_shards(small_net, photos, tmp_path / "d", shard_size=3, workers=0, progress=False, ranks=Ranks())
    assert (again.shards_written, again.shards_skipped) == (0, 3)
    # rank 1 of 2 describes shards 1, 3, ... only
    two = extract_shards(small_net, photos, tmp_path / "r1", shard_size=3, workers=0, progress=False,
                         ranks=Ranks(1, 2, 0, "torchrun"))
    assert two.shards_written == 1 and not two.complete
    assert sorted(p.name for p in (tmp_path / "r1" / "shards").iterdir() if not p.name.startswith(".")) == ["000001"]
    with pytest.raises(DataError, match="--shard-size must be ≥ 1"):
        extract_shards(small_net, photos, tmp_path / "x", shard_size=0, progress=False)
