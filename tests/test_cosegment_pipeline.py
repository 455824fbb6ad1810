"""cosegment.pipeline: co-segmentation end to end through the Python API (a folder split into sets,
notes, joint concepts) and learn_concepts, the one way concepts are learned."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import coseg_photos, random_images

import cosegment
import retrieval.model.concepts as concepts_mod
from cosegment import pipeline
from cosegment.concept_file import load_concepts
from cosegment.config import CosegConfig
from retrieval.core.errors import DataError
from retrieval.model.concepts import ConceptMask


@pytest.mark.slow
def test_concept_pooling_learns_with_the_one_learn_concepts(small_net, tmp_path):
    """Concept-masked pooling learns its concepts with cosegment.learn_concepts (the retrieval head
    has no other): the head's choice (a single object factor, at most 200 images) gives concepts
    whose file ConceptMask.from_file reads back with those factors (numbered from 0)."""
    assert not hasattr(concepts_mod, "learn_concepts")
    paths = random_images(tmp_path / "imgs", 5, size=(64, 64), seed=3)
    bb = small_net.backbone
    learned = cosegment.learn_concepts(bb, paths, k=3, image_size=64, object_rule="single", max_images=200,
                                       save_to=tmp_path / "c.pt")
    assert isinstance(learned, cosegment.LearnedConcepts)
    H, objs, layer = learned.H, learned.object_factors, learned.layer
    ref = cosegment.learn_concepts(bb, paths, k=3, image_size=64, object_rule="single", max_images=200)
    np.testing.assert_array_equal(H, ref.H)
    assert H.shape == (3, 512) and H.dtype == np.float32 and layer == "layer4" and learned.image_size == 64
    assert objs == ref.object_factors and len(objs) == 1 and 0 <= objs[0] < 3
    assert load_concepts(tmp_path / "c.pt").object_factors == objs
    assert ConceptMask.from_file(tmp_path / "c.pt", bb).factors == objs
    sub = cosegment.learn_concepts(bb, paths, k=3, image_size=64, max_images=3)  # an evenly spaced subset
    assert sub.paths == [paths[0], paths[2], paths[4]]
    union = cosegment.learn_concepts(bb, paths, k=3, image_size=64, object_rule="union").object_factors
    assert set(objs) <= set(union)  # the single least-border factor is one of the union's
    given = cosegment.learn_concepts(bb, paths[:2], k=2, image_size=64, object_factors=[1])
    assert given.object_factors == [1] and given.H.shape[0] == 2 and len(given.paths) == 2
    with pytest.raises(DataError, match="numbered from 0"):
        cosegment.learn_concepts(bb, paths[:2], k=2, image_size=64, object_factors=[2])
    with pytest.raises(DataError, match="object_rule"):
        cosegment.learn_concepts(bb, paths, object_rule="largest")
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(DataError, match="could be loaded"):
        cosegment.learn_concepts(bb, [tmp_path / "bad.jpg"], k=2, image_size=64)


@pytest.mark.slow
def test_loose_images_beside_subfolders_are_a_set_and_a_note_says_so(tmp_path, lite_backbone):
    coseg_photos(tmp_path / "photos", ["a.jpg", "b.jpg"])
    coseg_photos(tmp_path / "photos" / "trip", ["c.jpg", "d.jpg"])
    rep = pipeline.cosegment(tmp_path / "photos", backbone=lite_backbone, config=CosegConfig(k=2, image_size=96))
    assert [s["set"] for s in rep.sets] == ["photos", "trip"]
    assert len(rep.notes) == 1 and "2 loose image(s) form set 'photos'" in rep.notes[0] and "--joint" in rep.notes[0]
    with pytest.raises(DataError, match="add --joint"):
        pipeline.cosegment(tmp_path / "photos", backbone=lite_backbone, config=CosegConfig(k=2, image_size=96),
                  save_concepts=tmp_path / "c.pt")
    joint = pipeline.cosegment(tmp_path / "photos", backbone=lite_backbone, config=CosegConfig(k=2, image_size=96),
                      joint=True, save_concepts=tmp_path / "c.pt")
    assert joint.sets[0]["images"] == 4 and not joint.notes and (tmp_path / "c.pt").is_file()
