"""cosegment.concept_file: the concept file (H, layer, fingerprint, object factors), written atomically,
refusing another backbone's concepts."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from cosegment import concept_file
from retrieval.core.errors import DataError, ModelMismatchError


def test_concept_file_roundtrip_mismatch_and_atomic(tmp_path):
    H = np.arange(12, dtype=np.float32).reshape(3, 4)
    p = concept_file.save_concepts(tmp_path / "c.pt", H, "abc123", "block14", backbone="efficientnet_lite0",
                          image_size=448, object_factors=[0, 2])
    c = concept_file.load_concepts(p, expected_fingerprint="abc123")
    np.testing.assert_array_equal(c.H, H)
    assert (c.layer, c.image_size, c.object_factors, c.backbone) == ("block14", 448, [0, 2], "efficientnet_lite0")
    assert torch.load(p, weights_only=True)["format"] == concept_file.CONCEPTS_FORMAT
    with pytest.raises(ModelMismatchError, match="another backbone"):
        concept_file.load_concepts(p, expected_fingerprint="other")
    assert sorted(os.listdir(tmp_path)) == ["c.pt"]  # no temporary file left behind
    # a failed write leaves the old file intact
    with pytest.raises(DataError):
        concept_file.save_concepts(p, np.zeros(3, np.float32), "x", "y")
    np.testing.assert_array_equal(concept_file.load_concepts(p).H, H)
    (tmp_path / "junk.pt").write_bytes(b"not a file")
    with pytest.raises(DataError):
        concept_file.load_concepts(tmp_path / "junk.pt")
