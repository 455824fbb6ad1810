"""cosegment.outputs: the files a run writes: one set of outputs per input image, also when stems
clash; masks at image size, capped previews and overlays with a legend; the HTML page."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import coseg_photos
from PIL import Image

from cosegment.config import CosegConfig
from cosegment.outputs import PREVIEW_MAX_SIDE, output_names
from cosegment.pipeline import cosegment
from cosegment.render import palette


@pytest.mark.slow
def test_images_sharing_a_stem_each_get_their_own_outputs(tmp_path, lite_backbone):
    coseg_photos(tmp_path / "photos", ["rocket.jpg", "rocket.JPG", "rocket.png", "r3.jpg"])
    rep = cosegment(tmp_path / "photos", backbone=lite_backbone, config=CosegConfig(k=2, image_size=96),
                    out=tmp_path / "out", device="cpu")
    boxes = json.loads((tmp_path / "out" / "boxes.json").read_text())["images"]
    assert rep.sets[0]["images"] == 4 and len(boxes) == 4
    assert sorted(Path(v["image"]).name for v in boxes.values()) == ["r3.jpg", "rocket.JPG", "rocket.jpg", "rocket.png"]
    names = {n.lower() for n in boxes}
    assert len(names) == 4  # distinct also on a case-insensitive file system
    for sub, ext in (("overlays", ".jpg"), ("masks", ".png"), ("previews", ".jpg")):
        assert sorted(p.stem for p in (tmp_path / "out" / sub).glob(f"*{ext}")) == sorted(boxes), sub


@pytest.mark.slow
def test_coseg_pictures_have_a_legend_and_a_capped_size(tmp_path, lite_backbone):
    coseg_photos(tmp_path / "big", ["a.jpg", "b.jpg", "c.jpg"], size=(1200, 1500))
    rep = cosegment(tmp_path / "big", backbone=lite_backbone, config=CosegConfig(k=3, image_size=96),
                    out=tmp_path / "out", device="cpu")
    out = tmp_path / "out"
    for stem in ("a", "b", "c"):
        assert Image.open(out / "masks" / f"{stem}.png").size == (1500, 1200)  # data: image size
        assert Image.open(out / "previews" / f"{stem}.jpg").size == (1024, 819)  # for looking: capped
        ov = np.asarray(Image.open(out / "overlays" / f"{stem}.jpg"))
        assert ov.shape[1] == 1024 and ov.shape[0] > 819  # the legend band below the picture
        band = ov[819:].reshape(-1, 3).astype(int)
        for colour in palette(3):  # one swatch per factor, in its colour
            assert (np.abs(band - colour).sum(1) < 40).sum() > 50, colour
    page = (out / "index.html").read_text()
    obj = rep.sets[0]["object_factors"]
    assert "factor 0" in page and "factor 2" in page and f"factor {obj[0]} (object)" in page
    t = rep.timings.as_dict()
    assert t["writing"] > 0 and t["total"] >= t["loading"] + t["backbone"] + t["factorisation"] + t["writing"]
    assert "writing" in rep.text_lines()[-2] and "in all" in rep.text_lines()[-2]


def test_output_names_are_the_stems_made_distinct_without_case():
    one = SimpleNamespace(name="trip", paths=[Path("a/rocket.jpg"), Path("b/rocket.JPG"), Path("c/cat.png"),
                                              Path("d/rocket.png"), Path("e/Cat.png")])
    names = output_names([one])
    # a clash: the extension after the stem; still a clash without case: a number after that
    assert names == {("trip", 0): "rocket_jpg", ("trip", 1): "rocket_JPG-2", ("trip", 2): "cat_png",
                     ("trip", 3): "rocket_png", ("trip", 4): "Cat_png-2"}
    assert len({n.lower() for n in names.values()}) == 5  # distinct on a case-insensitive file system
    two = [SimpleNamespace(name="s1", paths=[Path("x/a.jpg"), Path("x/b.jpg")]),
           SimpleNamespace(name="s2", paths=[Path("y/a.jpg")])]
    assert output_names(two) == {("s1", 0): "s1_a", ("s1", 1): "b", ("s2", 0): "s2_a"}  # the set name first
    assert output_names([SimpleNamespace(name="s", paths=[Path("q.jpg")])]) == {("s", 0): "q"}
    assert PREVIEW_MAX_SIDE == 1024
