"""retrieval.dedup.edits: each edit does what it says, reproducibly."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from retrieval.dedup.edits import EDIT_KINDS, apply_edit, edit_plan, write_edit
from retrieval.dedup.keeper import jpeg_quality


@pytest.fixture(scope="module")
def img() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (12, 16, 3)).astype(np.uint8)).resize((320, 240), Image.BICUBIC)


@pytest.mark.parametrize("lost", [0.05, 0.2, 0.3])
def test_a_crop_loses_the_share_of_area_asked(img, lost):
    out = apply_edit(img, "crop", np.random.default_rng(1), lost=lost)
    assert abs(1 - out.width * out.height / (320 * 240) - lost) < 0.02


def test_resize_rotate_tone_text(img):
    rng = np.random.default_rng(2)
    assert apply_edit(img, "resize", rng, scale=0.5).size == (160, 120)
    rot = apply_edit(img, "rotate", rng, degrees=5.0)
    a = np.asarray(rot)
    assert rot.width < 320 and rot.height < 240 and a[0, 0].sum() > 0 and a[-1, -1].sum() > 0  # no black corners
    bright = np.asarray(apply_edit(img, "tone", rng, brightness=1.3, contrast=1.0), np.float64)
    assert bright.mean() > np.asarray(img, np.float64).mean() * 1.15
    txt = np.asarray(apply_edit(img, "text", rng, caption="2019-07-14"))
    diff = np.abs(txt.astype(int) - np.asarray(img).astype(int)).sum(2) > 0
    assert 0.002 < diff.mean() < 0.2 and diff[:120].sum() == 0  # a caption in the lower part only


def test_edits_are_reproducible_and_written(tmp_path, img):
    src = tmp_path / "src.png"
    img.save(src)
    for kind, seed in [(k, s) for _, k, s in edit_plan(1, EDIT_KINDS, seed=4)]:
        a = write_edit(src, tmp_path / f"a_{kind}.jpg", kind, np.random.default_rng(seed))
        b = write_edit(src, tmp_path / f"b_{kind}.jpg", kind, np.random.default_rng(seed))
        assert a.read_bytes() == b.read_bytes()
    assert (tmp_path / "a_copy.jpg").read_bytes() == src.read_bytes()
    write_edit(src, tmp_path / "q40.jpg", "jpeg", np.random.default_rng(0), quality=40)
    with Image.open(tmp_path / "q40.jpg") as im:
        assert abs(jpeg_quality(im.quantization) - 40) <= 1.5
    plan = edit_plan(3, ("crop", "text"), seed=0)
    assert [(i, k) for i, k, _ in plan] == [(0, "crop"), (0, "text"), (1, "crop"), (1, "text"), (2, "crop"), (2, "text")]
    assert len({s for _, _, s in plan}) == 6


def test_an_unknown_edit_is_refused(img):
    with pytest.raises(ValueError, match="unknown edit"):
        apply_edit(img, "sepia", np.random.default_rng(0))
