"""Defensive image decoding: bytes in, upright RGB out, or an error with one reason code.

docs/design.md §7: bad bytes never crash a run; decompression bombs are refused from the header,
EXIF orientation is applied, every mode becomes RGB explicitly, animations give their first
frame, and truncated files are errors, never silently padded.

Reason codes of ImageDecodeError: ``empty``, ``unidentified``, ``truncated``, ``corrupt``,
``decompression_bomb``, ``unsupported_mode``.

``max_pixels`` is enforced here from the header whatever Pillow's global limit; Pillow still
refuses on its own above 2 x ``Image.MAX_IMAGE_PIXELS`` (also reported as a bomb).

Thread safety: nothing here changes Pillow's globals (``Image.MAX_IMAGE_PIXELS``,
``ImageFile.LOAD_TRUNCATED_IMAGES``) or the warnings filters, so decoding can run in a
thread pool. Pillow's own warnings (e.g. "Corrupt EXIF data") are left to the caller's
filters; even when a filter turns them into exceptions, a sample is not failed by them.
"""

from __future__ import annotations

import io
import re
import struct
from dataclasses import dataclass

import numpy as np
from PIL import Image, JpegImagePlugin, UnidentifiedImageError

DEFAULT_MAX_PIXELS: int = 89_478_485  # Pillow's default MAX_IMAGE_PIXELS, but enforced here

# Only web raster formats (as in io.records.IMAGE_EXTENSIONS): formats without magic bytes
# (TGA...) would "identify" garbage, and EPS would run Ghostscript on untrusted input.
# MPO (multi-picture camera JPEG) has no opener of its own: the JPEG opener returns it.
_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "TIFF", "BMP", "PPM", "JPEG2000", "AVIF")

_EXTENSIONS = {"JPEG": "jpg", "MPO": "jpg", "JPEG2000": "jp2", "TIFF": "tiff"}

# EXIF orientation -> transpose that makes the image upright (same table as ImageOps).
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_ORIENTATION_TAG = 0x0112
_OBJECT_REPR = re.compile(r"\s*<[^<>]* at 0x[0-9a-fA-F]+>")  # "<_io.BytesIO object at 0x7f…>"
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
_WHITE = (255, 255, 255)

Image.init()  # register every plugin now, not lazily inside concurrent first calls


class ImageDecodeError(Exception):
    """An unreadable image: ``reason`` is a short code, ``message`` the underlying detail."""

    def __init__(self, reason: str, message: str):
        super().__init__(reason, message)  # both in args, so the error pickles across processes
        self.reason = reason
        self.message = message

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"


@dataclass(frozen=True)
class DecodedImage:
    """A decoded image: RGB, orientation applied, pixels loaded."""

    image: Image.Image
    width: int  # after orientation
    height: int
    format: str  # Pillow's format name, detected from the bytes


def decode_image(
    data: bytes,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    draft: tuple[int, int] | None = None,
) -> DecodedImage:
    """Decode bytes to an upright RGB image; raise ImageDecodeError with a reason otherwise.

    ``draft`` (width, height, upright) is a speed hint for JPEG: decode at a reduced DCT scale
    that still gives at least that size; width/height then describe the reduced image.
    """
    decoded, _ = _decode(data, max_pixels, draft)
    return decoded


def probe_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Fast validity check: the same errors as decode_image, full upright size reported.

    Every byte is still decoded (truncation only shows at the end of the stream), but JPEG is
    decoded at 1/8 DCT scale, so ``image`` may be smaller than ``width`` x ``height``.
    """
    decoded, full_size = _decode(data, max_pixels, (1, 1))
    return DecodedImage(decoded.image, full_size[0], full_size[1], decoded.format)


def image_extension(format: str) -> str:
    """File extension (no dot) for a Pillow format name: "JPEG" -> "jpg", "PNG" -> "png"."""
    return _EXTENSIONS.get(format.upper(), format.lower())


def _decode(
    data: bytes, max_pixels: int, draft: tuple[int, int] | None
) -> tuple[DecodedImage, tuple[int, int]]:
    """Decoded image and the full upright size (before any draft reduction)."""
    if draft is not None and min(draft) < 1:  # a caller bug, not bad data: fail loudly
        raise ValueError(f"draft size must be positive, got {draft}")
    if not data:
        raise ImageDecodeError("empty", "0 bytes")
    try:
        im = Image.open(io.BytesIO(data), formats=_FORMATS)
        fmt, stored = im.format or "unknown", im.size
        _check_size(stored, max_pixels)
        if draft and isinstance(im, JpegImagePlugin.JpegImageFile):  # also MPO
            im.draft("RGB", _upright(draft, _orientation(im)))  # request is upright
        im.load()
    except ImageDecodeError:
        raise
    except Exception as exc:  # any failure inside a decoder is a property of the data
        raise ImageDecodeError(_reason(exc, data), _describe(exc)) from exc
    orientation = _orientation(im)  # after load: PNG may keep its eXIf after the pixels
    rgb = _to_rgb(im, orientation)
    return DecodedImage(rgb, rgb.width, rgb.height, fmt), _upright(stored, orientation)


def _check_size(size: tuple[int, int], max_pixels: int) -> None:
    """Refuse empty or oversized images from the header, before any pixel is allocated."""
    width, height = size
    if width <= 0 or height <= 0:
        raise ImageDecodeError("unidentified", f"image size {width}x{height}")
    if width * height > max_pixels:
        raise ImageDecodeError(
            "decompression_bomb", f"image size {width}x{height} exceeds {max_pixels} pixels"
        )


def _reason(exc: Exception, data: bytes) -> str:
    """Reason code of a Pillow failure: by exception type first, then by its message."""
    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return "decompression_bomb"  # the warning arrives as an error under strict filters
    if isinstance(exc, UnidentifiedImageError):
        return "unidentified"
    if isinstance(exc, EOFError) or _webp_cut_short(data):
        return "truncated"
    text = str(exc).lower()
    if "truncat" in text:  # "image file is truncated ...", "Truncated File Read"
        return "truncated"
    if isinstance(exc, ValueError) and ("too large" in text or "too much memory" in text):
        return "decompression_bomb"  # PNG text chunks that inflate past Pillow's limits
    return "corrupt"  # decoder errors: broken zlib stream, bad checksum, bad codes...


def _webp_cut_short(data: bytes) -> bool:
    """True if a WebP file is shorter than its RIFF header says (libwebp only says "could
    not create decoder object")."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        return False
    (declared,) = struct.unpack("<I", data[4:8])
    return len(data) < declared + 8


def _describe(exc: Exception) -> str:
    """Pillow's reason, without the reprs of in-memory buffers it names: those say nothing
    about the file and differ between identical runs."""
    return _OBJECT_REPR.sub("", f"{type(exc).__name__}: {exc}")


def _orientation(im: Image.Image) -> int:
    """EXIF (or XMP) orientation, 1 when absent or malformed: bad metadata never fails."""
    try:
        value = im.getexif().get(_ORIENTATION_TAG, 1)
        return value if isinstance(value, int) and value in _TRANSPOSE else 1
    except Exception:  # malformed EXIF, or Pillow's warning raised under "error" filters
        return 1


def _upright(size: tuple[int, int], orientation: int) -> tuple[int, int]:
    """Size after orientation: orientations 5-8 swap the axes."""
    return (size[1], size[0]) if orientation >= 5 else size


def _to_rgb(im: Image.Image, orientation: int) -> Image.Image:
    """Upright RGB; a mode Pillow cannot convert is ``unsupported_mode``."""
    try:
        method = _TRANSPOSE.get(orientation)
        return _rgb(im if method is None else im.transpose(method))
    except (ValueError, TypeError, KeyError, NotImplementedError) as exc:
        raise ImageDecodeError("unsupported_mode", f"mode {im.mode}: {_describe(exc)}") from exc
    except Exception as exc:  # still a property of the data: never escape as a crash
        raise ImageDecodeError("corrupt", _describe(exc)) from exc


def _rgb(im: Image.Image) -> Image.Image:
    """Explicit conversion of every mode to RGB; alpha is composited over white."""
    mode = im.mode
    if mode.startswith("I") or mode == "F":  # I, I;16, I;16B...: scaled, not clipped at 255
        return Image.fromarray(_to_uint8(np.asarray(im), mode)).convert("RGB")
    if mode in _ALPHA_MODES or "transparency" in im.info:  # P/L/RGB + tRNS, LA, PA, RGBA
        return _on_white(im.convert("RGBA"))
    return im if mode == "RGB" else im.convert("RGB")  # 1, L, P, CMYK, YCbCr, LAB


def _on_white(rgba: Image.Image) -> Image.Image:
    out = Image.new("RGB", rgba.size, _WHITE)
    out.paste(rgba, mask=rgba)  # alpha blend: out = rgb * a + white * (1 - a)
    return out


def _to_uint8(a: np.ndarray, mode: str) -> np.ndarray:
    """Integer modes hold 16-bit samples (PNG, TIFF, 16-bit PGM): keep the high byte,
    v >> 8. Float images: [0, 1] scaled by 255, any other range stretched min..max."""
    if mode != "F":
        return (np.clip(a.astype(np.int64), 0, 65535) >> 8).astype(np.uint8)
    a = np.nan_to_num(a.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = float(a.min()), float(a.max())
    if low >= 0.0 and high <= 1.0:
        return np.round(a * 255.0).astype(np.uint8)
    return np.round((a - low) * (255.0 / max(high - low, 1e-12))).astype(np.uint8)
