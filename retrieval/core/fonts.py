"""The font of every PNG the project writes (hit sheets, co-segmentation legends and figures).

Pillow's default font cannot write most file names: the bitmap font of old Pillows is ASCII only,
and the scalable one of Pillow ≥ 10.1 (Aileron) has no accented letters, so "Plage d'été.jpg"
came out as "Plage d'□t□.jpg". :func:`face` returns a :class:`Face`: a TrueType font found on this
machine, in this order,

1. DejaVu Sans, as matplotlib ships it (located with ``importlib``, matplotlib is not imported);
2. DejaVu Sans / Noto Sans / Liberation Sans / Arial / Segoe UI at their usual system paths
   (Debian/Ubuntu, Fedora, Arch, macOS, Windows);
3. Pillow's own ``ImageFont.load_default(size=…)`` (TrueType from Pillow 10.1 on), and last the
   bitmap default,

plus *fallback* fonts for the characters the first one lacks — CJK first (Noto Sans CJK, Droid
Sans Fallback, WenQuanYi, Hiragino, MS Gothic / Yu Gothic / Microsoft YaHei, Malgun Gothic), then
DejaVu and Pillow's default. A text is drawn run by run, each run in the first font that has its
characters ("森の道.jpg": the CJK font for 森の道, the main one for ".jpg"). A font is said to lack
a character when it draws it as its "missing glyph" box (the glyph it draws for U+10FFFD, a
private-use code point no font defines). A character no font on the machine has is drawn as that
box: install a font of the script (``fonts-noto-cjk`` on Debian/Ubuntu) to see it.
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

from PIL import ImageDraw, ImageFont

AnyFont = Union[ImageFont.FreeTypeFont, ImageFont.ImageFont]

#: main fonts: (regular, bold) file names, tried in order in each of SYSTEM_DIRS
MAIN_FONTS: Sequence[Tuple[str, str]] = (
    ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf"),
    ("NotoSans-Regular.ttf", "NotoSans-Bold.ttf"),
    ("LiberationSans-Regular.ttf", "LiberationSans-Bold.ttf"),
    ("Arial Unicode.ttf", "Arial Unicode.ttf"),
    ("Arial.ttf", "Arial Bold.ttf"),
    ("arial.ttf", "arialbd.ttf"),
    ("segoeui.ttf", "segoeuib.ttf"),
)
#: fonts for the scripts the main ones lack (CJK), tried in order in each of SYSTEM_DIRS
FALLBACK_FONTS: Sequence[str] = (
    "NotoSansCJK-Regular.ttc", "NotoSansCJKjp-Regular.otf", "NotoSansCJK-Regular.otf",
    "DroidSansFallbackFull.ttf", "DroidSansFallback.ttf", "wqy-microhei.ttc", "wqy-zenhei.ttc",
    "Hiragino Sans GB.ttc", "ヒラギノ角ゴシック W3.ttc", "Arial Unicode.ttf",
    "YuGothR.ttc", "msgothic.ttc", "msyh.ttc", "malgun.ttf",
)
SYSTEM_DIRS: Sequence[str] = (
    "/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/dejavu", "/usr/share/fonts/TTF",
    "/usr/share/fonts/truetype/noto", "/usr/share/fonts/noto", "/usr/share/fonts/google-noto",
    "/usr/share/fonts/truetype/liberation", "/usr/share/fonts/liberation-sans",
    "/usr/share/fonts/opentype/noto", "/usr/share/fonts/noto-cjk", "/usr/share/fonts/google-noto-cjk",
    "/usr/share/fonts/truetype/droid", "/usr/share/fonts/google-droid", "/usr/share/fonts/truetype/wqy",
    "/usr/share/fonts/wenquanyi/wqy-microhei", "/usr/local/share/fonts", str(Path.home() / ".fonts"),
    str(Path.home() / ".local/share/fonts"), "/Library/Fonts", "/System/Library/Fonts",
    "/System/Library/Fonts/Supplemental", os.path.join(os.environ.get("WINDIR", r"C:\Windows"), "Fonts"),
)
#: a private-use code point no font defines: what a font draws for it is its "missing glyph" box
NO_GLYPH = "\U0010FFFD"


def matplotlib_fonts() -> Optional[Path]:
    """matplotlib's bundled TrueType folder (``mpl-data/fonts/ttf``), found without importing it."""
    try:
        spec = importlib.util.find_spec("matplotlib")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin:
        return None
    folder = Path(spec.origin).parent / "mpl-data" / "fonts" / "ttf"
    return folder if folder.is_dir() else None


def _candidates(names: Sequence[str], dirs: Sequence[str]) -> List[Path]:
    return [Path(d) / n for n in names for d in dirs if (Path(d) / n).is_file()]


def main_font_files(bold: bool = False, dirs: Optional[Sequence[str]] = None) -> List[Path]:
    """The main font files found, in the module's order (matplotlib's DejaVu first)."""
    mpl = matplotlib_fonts()
    first = [mpl / ("DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf")] if mpl is not None else []
    first = [p for p in first if p.is_file()]
    return first + _candidates([b if bold else r for r, b in MAIN_FONTS], SYSTEM_DIRS if dirs is None else dirs)


def fallback_font_files(dirs: Optional[Sequence[str]] = None) -> List[Path]:
    """The fallback (CJK) font files found on this machine, in the module's order."""
    return _candidates(FALLBACK_FONTS, SYSTEM_DIRS if dirs is None else dirs)


def pillow_default(size: int) -> AnyFont:
    """Pillow's default font: scalable (TrueType) at ``size`` px from Pillow 10.1, else its bitmap."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow < 10.1, or no FreeType: one small bitmap font
        return ImageFont.load_default()


def _mask_key(font: AnyFont, ch: str) -> Tuple[Tuple[int, int], bytes]:
    m = font.getmask(ch)
    return tuple(m.size), bytes(bytearray(m))  # type: ignore[arg-type]


@dataclass
class Face:
    """A font at one size with fallbacks (module docstring): ``fonts[0]`` is the main one."""

    fonts: List[AnyFont]
    size: int

    def __post_init__(self) -> None:
        self._missing = [_mask_key(f, NO_GLYPH) for f in self.fonts]
        self._choice: dict = {}

    @property
    def main(self) -> AnyFont:
        return self.fonts[0]

    def has(self, j: int, ch: str) -> bool:
        """Whether font ``j`` draws ``ch`` as a glyph of its own (not its missing-glyph box)."""
        return ch.isspace() or _mask_key(self.fonts[j], ch) != self._missing[j]

    def font_for(self, ch: str) -> AnyFont:
        """The first font that has ``ch`` (the main one when none has it)."""
        if ch not in self._choice:
            self._choice[ch] = next((f for j, f in enumerate(self.fonts) if self.has(j, ch)), self.fonts[0])
        return self._choice[ch]

    def runs(self, text: str) -> List[Tuple[str, AnyFont]]:
        """``text`` cut into runs of characters drawn with the same font."""
        out: List[Tuple[str, AnyFont]] = []
        for ch in text:
            f = self.font_for(ch)
            if out and out[-1][1] is f:
                out[-1] = (out[-1][0] + ch, f)
            else:
                out.append((ch, f))
        return out

    def length(self, text: str) -> float:
        """Width of ``text`` in pixels, as :meth:`draw` draws it."""
        return float(sum(f.getlength(t) for t, f in self.runs(text)))

    def draw(self, draw: ImageDraw.ImageDraw, xy: Tuple[float, float], text: str, fill=(0, 0, 0)) -> None:
        """Draw ``text`` with its top-left at ``xy``, run by run."""
        x, y = xy
        for t, f in self.runs(text):
            draw.text((x, y), t, fill=fill, font=f)
            x += f.getlength(t)

    def fit(self, text: str, width: float) -> str:
        """``text``, shortened in the middle with ``…`` until it is at most ``width`` pixels wide."""
        if self.length(text) <= width:
            return text
        keep = len(text)
        while keep > 3:
            keep -= 1
            t = text[: (keep + 1) // 2] + "…" + text[len(text) - keep // 2:]
            if self.length(t) <= width:
                return t
        return text[:3] + "…"


def _truetype(path: Path, size: int) -> Optional[AnyFont]:
    try:
        return ImageFont.truetype(str(path), size)
    except OSError:  # not a font FreeType can read (or Pillow without FreeType)
        return None


@lru_cache(maxsize=32)
def face(size: int, bold: bool = False) -> Face:
    """The :class:`Face` at ``size`` px (module docstring: main font, then fallbacks)."""
    size = max(1, int(size))
    main = next((f for f in (_truetype(p, size) for p in main_font_files(bold)) if f is not None), None)
    fonts: List[AnyFont] = [main] if main is not None else []
    for p in fallback_font_files():
        f = _truetype(p, size)
        if f is not None:
            fonts.append(f)
            break  # one CJK font is enough
    fonts.append(pillow_default(size))
    return Face(fonts, size)
