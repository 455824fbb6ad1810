"""Image input: any image a user has, decoded into a normalised ``(3, H, W)`` float32 tensor.

* :func:`load_image` opens JPEG, PNG, WebP, TIFF, BMP (and anything else Pillow reads), decodes it
  fully (a truncated file fails here, not later), applies the EXIF orientation and converts every
  mode to 8-bit RGB: alpha is composited on white, 16- and 32-bit integers are scaled by their bit
  depth (never clipped at 255), floats by their range. A file that cannot be used raises
  :class:`~retrieval.core.errors.ImageError` with a short reason.
* :func:`resize_long_side` and :func:`to_tensor` make the network input.
* :data:`IMAGE_EXTENSIONS` are the files taken for images (listing a source is
  :mod:`retrieval.core.image_listing`); :func:`unsupported_reason` says why another file is not
  read ("unsupported format .heic (install the heif extra: …)"). HEIC/HEIF photos are read when
  the optional extra ``heif`` (pillow-heif) is installed: its opener is registered on import.
* :class:`ImageDataset` never raises for a bad file: it yields ``None`` and the reason, so one bad
  file never aborts an indexing run (the caller skips it and reports it).
"""
from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError, features

from retrieval.core.errors import DataError, GemsegError, ImageError

PathLike = Union[str, Path]

_avif = bool(features.check("avif"))  # Pillow ≥ 11.2 decodes AVIF when built with libavif

try:  # HEIC/HEIF (iPhone photos): read through the optional extra `heif` (pillow-heif) when installed
    import pillow_heif

    pillow_heif.register_heif_opener()
    HEIF_SUPPORTED = True
except ImportError:  # pragma: no cover - depends on the installation
    HEIF_SUPPORTED = False

#: HEIC/HEIF extensions: images when the ``heif`` extra (pillow-heif) is installed.
HEIF_EXTENSIONS: Tuple[str, ...] = (".heic", ".heif", ".hif")

#: File extensions (lower case, with the dot) taken for images, e.g. by
#: :func:`retrieval.core.image_listing.list_images` in a folder.
IMAGE_EXTENSIONS: Tuple[str, ...] = ((".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif")
                                     + (".avif",) * _avif + HEIF_EXTENSIONS * HEIF_SUPPORTED)

#: Image formats that are not read, and what to do about them (the reason a skipped file is given).
UNSUPPORTED_HINTS: Dict[str, str] = {
    **{e: "install the heif extra: pip install 'gemseg[heif]'" for e in HEIF_EXTENSIONS},
    **{e: "a camera raw file: convert it to JPEG or TIFF first" for e in
       (".cr2", ".cr3", ".nef", ".nrw", ".arw", ".dng", ".raf", ".orf", ".rw2", ".pef", ".srw")},
    ".avif": "this Pillow has no AVIF decoder: pip install -U pillow",
    ".svg": "a vector drawing: render it to PNG first",
}

#: ImageNet normalisation (RGB, for pixel values in [0, 1]).
IMAGENET_MEAN: Tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: Tuple[float, float, float] = (0.229, 0.224, 0.225)

#: Largest image (width × height) that :func:`load_image` decodes; bigger ones are refused as
#: decompression bombs. Pillow's own hard limit (2 × ``Image.MAX_IMAGE_PIXELS``, about 179 MP), so a
#: legitimate 100-megapixel photo still loads. ``None`` disables the check.
MAX_IMAGE_PIXELS: Optional[int] = 2 * Image.MAX_IMAGE_PIXELS if Image.MAX_IMAGE_PIXELS else None

_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_WHITE = (255, 255, 255)


# ----------------------------------------------------------------------------------------------
# Decoding
# ----------------------------------------------------------------------------------------------
def load_image(path: PathLike, max_side: Optional[int] = None, *, data: Optional[bytes] = None) -> Image.Image:
    """Open an image file as an upright 8-bit RGB :class:`PIL.Image.Image`.

    Args:
        path: the image file.
        max_side: optional hint for faster decoding: a JPEG may be decoded at a reduced scale
            (1/2, 1/4, 1/8, done inside the JPEG decoder) as long as its long side stays
            ``>= max_side``. The result is then *not* resized to ``max_side``; use
            :func:`resize_long_side`. ``None`` (the default) decodes at full size.
        data: the file's bytes, already in memory (e.g. an HTTP upload): decoded instead of reading
            ``path``, which then only names the image in errors.

    Returns:
        An image in mode ``"RGB"``, EXIF orientation applied, fully loaded.

    Raises:
        ImageError: the file is missing, empty, a folder, not an image, truncated or corrupt, or
            larger than :data:`MAX_IMAGE_PIXELS`. ``str(error)`` is ``"<path>: <reason>"``.
    """
    p = Path(path)
    if data is None:
        try:
            st = p.stat()
        except FileNotFoundError:
            raise ImageError(p, "file not found") from None
        except OSError as e:
            raise ImageError(p, f"cannot read file ({e.strerror or e})") from None
        if p.is_dir():
            raise ImageError(p, "is a folder, not an image file")
    if (st.st_size if data is None else len(data)) == 0:
        raise ImageError(p, "empty file")

    try:
        im = Image.open(p if data is None else io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageError(p, unsupported_reason(p) if p.suffix.lower() not in IMAGE_EXTENSIONS
                         and p.suffix.lower() in UNSUPPORTED_HINTS
                         else "not an image (cannot identify format)") from None
    except Image.DecompressionBombError as e:
        raise ImageError(p, f"image too large (decompression bomb guard): {e}") from None
    except PermissionError:
        raise ImageError(p, "permission denied") from None
    except Exception as e:  # noqa: BLE001 - any decoder failure is a bad file, not a crash
        raise ImageError(p, f"truncated or corrupt image: {_short(e)}") from None

    with im:
        w, h = im.size
        if MAX_IMAGE_PIXELS is not None and w * h > MAX_IMAGE_PIXELS:
            raise ImageError(
                p,
                f"image too large: {w}x{h} = {w * h} pixels exceeds the limit of {MAX_IMAGE_PIXELS}"
                " (decompression bomb guard; raise retrieval.core.images.MAX_IMAGE_PIXELS to allow it)",
            )
        if w <= 0 or h <= 0:
            raise ImageError(p, f"truncated or corrupt image: size {w}x{h}")
        try:
            if max_side and im.format == "JPEG":
                _jpeg_draft(im, int(max_side))
            im.load()
            bits = _declared_bits(im)
            im = _exif_upright(im)
        except Exception as e:  # noqa: BLE001
            raise ImageError(p, f"truncated or corrupt image: {_short(e)}") from None
        try:
            rgb = to_rgb(im, bits=bits)
        except Exception as e:  # noqa: BLE001
            raise ImageError(p, f"unsupported image mode {im.mode} ({_short(e)})") from None
    return rgb


def upright_size(path: PathLike) -> Tuple[int, int]:
    """``(W, H)`` of an image file as it is shown upright (EXIF orientation applied), read from its
    header without decoding the pixels. Raises :class:`ImageError` when the file cannot be opened."""
    try:
        with Image.open(path) as im:
            w, h = im.size
            try:
                orient = im.getexif().get(0x0112, 1)
            except Exception:  # a damaged EXIF block: the pixels may still be fine
                orient = 1
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise ImageError(path, _short(e)) from None
    return (h, w) if orient in (5, 6, 7, 8) else (w, h)


def _short(e: BaseException) -> str:
    msg = " ".join(str(e).split()) or type(e).__name__
    return msg if len(msg) <= 120 else msg[:117] + "..."


def _jpeg_draft(im: Image.Image, max_side: int) -> None:
    """Let the JPEG decoder scale down by 2/4/8 while the long side stays >= ``max_side``."""
    w, h = im.size
    long_side = max(w, h)
    if max_side <= 0 or long_side < 2 * max_side:
        return
    f = max_side / long_side
    im.draft(im.mode if im.mode in ("RGB", "L") else None, (math.ceil(w * f), math.ceil(h * f)))


def _declared_bits(im: Image.Image) -> Optional[int]:
    """Bits per sample the file declares (TIFF tag 258), or None when it says nothing."""
    tags = getattr(im, "tag_v2", None)
    if tags is None:
        return None
    try:
        v = tags.get(258)
        if isinstance(v, (tuple, list)):
            v = v[0]
        return int(v) if v else None
    except Exception:  # noqa: BLE001
        return None


def _exif_upright(im: Image.Image) -> Image.Image:
    """Apply the EXIF orientation tag; an unreadable EXIF block leaves the pixels as stored."""
    try:
        out = ImageOps.exif_transpose(im)
    except Exception:  # noqa: BLE001 - bad metadata must not lose a good image
        return im
    return out if out is not None else im


def to_rgb(im: Image.Image, bits: Optional[int] = None) -> Image.Image:
    """Convert a loaded image of any Pillow mode to 8-bit ``"RGB"``.

    * ``RGBA``/``LA``/``PA``/``P`` with transparency: alpha composited on white.
    * ``I;16*``: ``v / 65535 * 255``; ``I`` (32-bit int): scaled by ``bits`` when given (a TIFF's
      BitsPerSample), else as 16-bit when all values fit in ``[0, 65535]``, else as 32-bit signed;
      negative values become 0. Never clipped at 255.
    * ``F`` (float): taken as ``[0, 1]`` when its max is ``<= 1``, else divided by its max; NaN → 0.
    * ``1``, ``L``, ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``: Pillow's conversion.
    """
    mode = im.mode
    if mode == "RGB":
        return im
    if mode == "P":
        if "transparency" in im.info:
            return _on_white(im.convert("RGBA"))
        return im.convert("RGB")
    if mode in _ALPHA_MODES:
        return _on_white(im.convert("RGBA"))
    if mode.startswith("I;16") or mode == "I" or mode.startswith("I;32"):
        a = _int_array(im).astype(np.float64)
        if mode.startswith("I;16"):
            depth = 16
        elif bits:
            depth = min(bits, 31)  # Pillow's "I" is signed 32-bit
        elif a.size and a.min() >= 0 and a.max() <= 65535:
            depth = 16
        else:
            depth = 31  # signed 32-bit: the positive range
        g = np.clip(a, 0, None) * (255.0 / (2.0 ** depth - 1.0))
        return _gray_to_rgb(g)
    if mode == "F":
        a = np.asarray(im, dtype=np.float64)
        a = np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)
        m = float(a.max()) if a.size else 0.0
        g = np.clip(a, 0.0, None) * (255.0 if m <= 1.0 else 255.0 / m)
        return _gray_to_rgb(g)
    return im.convert("RGB")


def _int_array(im: Image.Image) -> np.ndarray:
    try:
        a = np.asarray(im)
        if a.ndim == 2 and a.shape == (im.size[1], im.size[0]) and a.dtype.kind in "iu":
            return a
    except Exception:  # noqa: BLE001
        pass
    return np.asarray(im.convert("I"), dtype=np.int32)


def _gray_to_rgb(g: np.ndarray) -> Image.Image:
    """(H, W) float in [0, 255] (anything above is clipped) → RGB image."""
    u8 = np.clip(np.rint(g), 0, 255).astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(np.stack([u8, u8, u8], axis=-1)), "RGB")


def _on_white(rgba: Image.Image) -> Image.Image:
    bg = Image.new("RGB", rgba.size, _WHITE)
    bg.paste(rgba, mask=rgba.getchannel("A"))
    return bg


# ----------------------------------------------------------------------------------------------
# Network input
# ----------------------------------------------------------------------------------------------
def resize_long_side(img: Image.Image, size: Optional[int]) -> Image.Image:
    """Resize so that the long side is ``size`` pixels, aspect ratio kept (bilinear, antialiased).

    ``size`` of ``None`` or ``<= 0`` returns ``img`` unchanged. The short side is rounded and at
    least 1 pixel.
    """
    if size is None or size <= 0:
        return img
    size = int(size)
    w, h = img.size
    if w >= h:
        new = (size, max(1, int(round(h * size / w))))
    else:
        new = (max(1, int(round(w * size / h))), size)
    if new == (w, h):
        return img
    return img.resize(new, Image.Resampling.BILINEAR)


def to_tensor(
    img: Image.Image,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> torch.Tensor:
    """RGB image → ``(3, H, W) float32`` tensor, ``(pixel / 255 - mean) / std`` per channel."""
    if img.mode != "RGB":
        img = to_rgb(img)
    a = np.asarray(img, dtype=np.uint8)  # (H, W, 3)
    t = torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1))).to(torch.float32)
    m = torch.tensor([float(v) * 255.0 for v in mean], dtype=torch.float32).view(3, 1, 1)
    s = torch.tensor([float(v) * 255.0 for v in std], dtype=torch.float32).view(3, 1, 1)
    return ((t - m) / s).contiguous()


# ----------------------------------------------------------------------------------------------
# Formats that are not read
# ----------------------------------------------------------------------------------------------
def unsupported_reason(path: PathLike) -> str:
    """Why a file is not read as an image: ``"unsupported format .heic (install the heif extra: …)"``."""
    ext = Path(path).suffix.lower()
    if not ext:
        return "no file extension (not taken for an image)"
    hint = UNSUPPORTED_HINTS.get(ext)
    return f"unsupported format {ext}" + (f" ({hint})" if hint else "")


# ----------------------------------------------------------------------------------------------
# Dataset
# ----------------------------------------------------------------------------------------------
class ImageDataset(torch.utils.data.Dataset):
    """Images as network input, for a :class:`torch.utils.data.DataLoader`.

    ``dataset[i]`` is ``(i, x, None)`` with ``x`` a ``(3, H, W) float32`` normalised tensor whose long
    side is ``round(image_size * scale)`` (the image's own size when ``image_size`` is ``None`` or
    ``<= 0``), or ``(i, None, reason)`` when file ``i`` cannot be used: it never raises for a bad
    file, so a DataLoader worker never dies on one; the caller skips it and reports
    ``(dataset.paths[i], reason)``.

    ``fast_decode=True`` lets a large JPEG be decoded at 1/2, 1/4 or 1/8 scale inside the JPEG
    decoder (long side still ``>=`` the target before the final resize): several times faster on
    big photos, with pixels that differ slightly from a full decode + resize. Off by default, so
    that a file gives the same tensor here as through :func:`load_image` + :func:`resize_long_side`.

    Use a collate function that keeps the Nones, e.g. ``collate_fn=list``.
    """

    def __init__(
        self,
        paths: Iterable[PathLike],
        image_size: Optional[int],
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        scale: float = 1.0,
        fast_decode: bool = False,
    ) -> None:
        self.paths: List[Path] = [Path(p) for p in paths]
        self.image_size = image_size
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        self.scale = float(scale)
        self.fast_decode = bool(fast_decode)
        if image_size is None or image_size <= 0:
            self.long_side: Optional[int] = None
        else:
            self.long_side = max(1, int(round(image_size * self.scale)))

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Tuple[int, Optional[torch.Tensor], Optional[str]]:
        path = self.paths[i]
        try:
            img = load_image(path, max_side=self.long_side if self.fast_decode else None)
            img = resize_long_side(img, self.long_side)
            return i, to_tensor(img, self.mean, self.std), None
        except ImageError as e:
            return i, None, e.reason
        except GemsegError as e:
            return i, None, str(e)
        except MemoryError:
            return i, None, "out of memory while decoding"
        except Exception as e:  # noqa: BLE001 - a bad file must never kill a worker
            return i, None, f"unexpected error: {type(e).__name__}: {_short(e)}"


#: What a query can be: an image file, a PIL image, or a numpy array (H, W, 3) / (H, W).
ImageLike = Union[str, Path, Image.Image, np.ndarray]


def as_image(obj: ImageLike) -> Image.Image:
    """An upright RGB image from a file path (:func:`load_image`), a PIL image (any mode, converted
    with :func:`to_rgb`) or a numpy array: (H, W, 3) RGB or (H, W) grey, uint8 in [0, 255] or float
    in [0, 1]. Anything else is a :class:`DataError`; a bad file an :class:`ImageError`."""
    if isinstance(obj, (str, Path)):
        return load_image(obj)
    if isinstance(obj, Image.Image):
        obj.load()
        return to_rgb(obj)
    if isinstance(obj, np.ndarray):
        a = obj
        if a.ndim == 3 and a.shape[2] == 1:
            a = a[..., 0]
        if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (3, 4))) or min(a.shape[:2]) < 1:
            raise DataError(f"an image array must be (H, W, 3), (H, W, 4) or (H, W); got shape {obj.shape}")
        if a.dtype == np.uint8:
            u8 = a
        elif a.dtype.kind == "f":
            if np.nanmax(a) > 1.0 or np.nanmin(a) < 0.0:
                raise DataError("a float image array must hold values in [0, 1] (or pass uint8 in [0, 255])")
            u8 = np.rint(np.nan_to_num(a) * 255.0).astype(np.uint8)
        else:
            raise DataError(f"an image array must be uint8 or float in [0, 1]; got {a.dtype}")
        return to_rgb(Image.fromarray(np.ascontiguousarray(u8)))
    raise DataError(f"not an image: {type(obj).__name__} (give a file path, a PIL image or a numpy array)")


def image_label(obj: ImageLike, i: int) -> str:
    """How a query is named in results: its path, a PIL image's file name, else ``<image i>``."""
    if isinstance(obj, (str, Path)):
        return str(obj)
    name = getattr(obj, "filename", "") if isinstance(obj, Image.Image) else ""
    return str(name) if name else f"<{'array' if isinstance(obj, np.ndarray) else 'image'} {i}>"


def crop_box(img: Image.Image, box: Optional[Sequence[float]]) -> Image.Image:
    """``img`` cropped to ``box`` = (x1, y1, x2, y2) pixels (rounded, clipped to the image; an empty
    box after clipping keeps the whole image). ``None`` returns ``img``."""
    if box is None:
        return img
    w, h = img.size
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    x1, x2 = max(0, min(x1, w)), max(0, min(x2, w))
    y1, y2 = max(0, min(y1, h)), max(0, min(y2, h))
    if x2 <= x1 or y2 <= y1:
        return img
    return img.crop((x1, y1, x2, y2))
