"""retrieval.core.fonts: a TrueType font that writes accented and Japanese file names (Pillow's
default draws them as boxes), found in the documented order, with a clean fallback."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

import retrieval.core.fonts as fonts
from retrieval.core.fonts import NO_GLYPH, Face, face, fallback_font_files, main_font_files, pillow_default


def _render(draw_text, text: str) -> np.ndarray:
    im = Image.new("L", (300, 30), 255)
    draw_text(ImageDraw.Draw(im), text)
    return np.asarray(im)


def _with_face(f: Face):
    return lambda d, t: f.draw(d, (2, 4), t, fill=0)


def _with_font(font):
    return lambda d, t: d.text((2, 4), t, fill=0, font=font)


def test_accented_names_are_written_and_pillows_default_cannot():
    """The captions of the tree before issue 27 (Pillow's default) drew é and û as the same box."""
    a, b = "Plage d'été.jpg", "Plage d'ûtû.jpg"
    f = face(14)
    assert not np.array_equal(_render(_with_face(f), a), _render(_with_face(f), b))
    assert all(f.has(0, ch) for ch in a)  # the main font has every character
    old = pillow_default(14)
    assert np.array_equal(_render(_with_font(old), a), _render(_with_font(old), b))  # the bug: □ for both


def test_japanese_names_use_a_fallback_font_when_the_machine_has_one():
    if not fallback_font_files():
        pytest.skip("no CJK font on this machine (e.g. apt install fonts-droid-fallback): names would be boxes")
    a, b = "森の道.jpg", "道の森.jpg"
    f = face(14)
    runs = f.runs(a)
    assert [t for t, _ in runs] == ["森の道", ".jpg"] and runs[0][1] is not f.main
    assert not np.array_equal(_render(_with_face(f), a), _render(_with_face(f), b))
    old = pillow_default(14)
    assert np.array_equal(_render(_with_font(old), a), _render(_with_font(old), b))  # three boxes each
    ink = _render(_with_face(f), "森") < 128
    assert ink.sum() > _render(_with_face(f), NO_GLYPH).__lt__(128).sum()  # more strokes than the box


def test_fonts_are_looked_for_in_order_and_pillow_is_the_last_resort(tmp_path, monkeypatch):
    mpl = fonts.matplotlib_fonts()
    found = main_font_files()
    if mpl is not None:
        assert found[0] == mpl / "DejaVuSans.ttf" and main_font_files(bold=True)[0] == mpl / "DejaVuSans-Bold.ttf"
    real = next(p for p in found)
    for name in ("arial.ttf", "DejaVuSans.ttf"):
        (tmp_path / name).write_bytes(real.read_bytes())
    monkeypatch.setattr(fonts, "matplotlib_fonts", lambda: None)
    assert [p.name for p in main_font_files(dirs=[str(tmp_path)])] == ["DejaVuSans.ttf", "arial.ttf"]
    (tmp_path / "notes.ttf").write_text("not a font")
    assert fonts._truetype(tmp_path / "notes.ttf", 12) is None  # an unreadable font is passed over

    monkeypatch.setattr(fonts, "main_font_files", lambda bold=False, dirs=None: [])
    monkeypatch.setattr(fonts, "fallback_font_files", lambda dirs=None: [])
    fonts.face.cache_clear()
    try:
        f = face(13)
        assert len(f.fonts) == 1 and isinstance(f.main, ImageFont.FreeTypeFont)  # Pillow's scalable default
        assert f.length("abc") > 0 and f.fit("a" * 200, 60) != "a" * 200 and f.length(f.fit("a" * 200, 60)) <= 60
    finally:
        fonts.face.cache_clear()
