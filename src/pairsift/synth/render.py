"""Bytes of one planned sample: a pure function of its :class:`~.plan.Spec`."""

from __future__ import annotations

import hashlib
import io
import struct
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageEnhance, ImageOps, UnidentifiedImageError

from .photos import photo_bytes, photo_pixels
from .plan import Spec
from .text import Drawn, draw_words

_PIL_FORMAT = {"jpg": "JPEG", "png": "PNG", "webp": "WEBP"}
TRUNCATE_AT = 0.6  # fraction of a JPEG kept for the "truncated" corruption


@dataclass(frozen=True)
class Rendered:
    data: bytes | None  # None: the sample has no image (missing or failed download)
    width: int | None  # None when there is no decodable image
    height: int | None
    drawn: Drawn | None = None
    sha256: str | None = None


def _rendered(data: bytes | None, width: int | None = None, height: int | None = None,
              drawn: Drawn | None = None) -> Rendered:
    digest = None if data is None else hashlib.sha256(data).hexdigest()
    return Rendered(data, width, height, drawn, digest)


def render(spec: Spec) -> Rendered:
    if spec.kind == "missing_image":
        return _rendered(None)
    if spec.base is not None and spec.transform is None:
        return render(spec.base)  # exact duplicate: same spec, so the same bytes
    if spec.full:
        image = photo_pixels(spec.photo)
        return _rendered(photo_bytes(spec.photo), image.width, image.height)
    image = _view(spec.base or spec)
    if spec.error:
        return _rendered(_corrupt(image, spec.error, spec.seed))
    drawn = None
    if spec.transform:
        image = _transform(image, spec.transform, spec.params)
    if spec.text:
        image, drawn = draw_words(image, spec.text)
    quality = spec.params.get("quality", 90)
    return _rendered(encode(image, spec.fmt, quality), image.width, image.height, drawn)


def encode(image: Image.Image, fmt: str, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    image.save(buf, _PIL_FORMAT[fmt], **({} if fmt == "png" else {"quality": quality}))
    return buf.getvalue()


def _view(spec: Spec) -> Image.Image:
    """The pixels a spec shows before any transform: the photo, or a resized crop of it."""
    image = photo_pixels(spec.photo)
    if spec.full:
        return image
    return image.resize(spec.size, Image.Resampling.LANCZOS, box=spec.box)


def _transform(image: Image.Image, name: str, params: dict) -> Image.Image:
    w, h = image.size
    if name == "resize_60":
        return image.resize((round(w * params["scale"]), round(h * params["scale"])),
                            Image.Resampling.LANCZOS)
    if name == "center_crop_90":
        f = params["fraction"]
        dx, dy = round(w * (1 - f) / 2), round(h * (1 - f) / 2)
        return image.crop((dx, dy, w - dx, h - dy))
    if name == "random_crop":
        return image.crop(tuple(params["box"]))
    if name == "hflip":
        return ImageOps.mirror(image)
    if name == "brighten_30":
        return ImageEnhance.Brightness(image).enhance(params["factor"])
    if name == "border":
        return ImageOps.expand(image, border=params["pixels"], fill=params["fill"])
    return image  # jpeg_q30 and webp change only the encoding


def _corrupt(image: Image.Image, reason: str, seed: int) -> bytes:
    """Broken bytes that Pillow rejects for ``reason`` (the tests open every one)."""
    if reason == "empty":
        return b""
    if reason == "truncated":
        data = encode(image, "jpg")
        return data[: int(len(data) * TRUNCATE_AT)]
    if reason == "corrupt":
        return damage_png(encode(image, "png"))
    return _noise(seed)


def damage_png(data: bytes) -> bytes:
    """A PNG whose zlib stream is broken but whose chunk CRCs are valid, so only the pixel
    decoder notices: the first deflate block gets the reserved block type (11)."""
    out = bytearray(data)
    at = out.index(b"IDAT")
    (length,) = struct.unpack(">I", out[at - 4 : at])
    out[at + 6] = 0xFF  # IDAT payload: 2-byte zlib header, then the first block header
    crc = zlib.crc32(bytes(out[at : at + 4 + length]))
    out[at + 4 + length : at + 8 + length] = struct.pack(">I", crc)
    return bytes(out)


def _noise(seed: int) -> bytes:
    """Random bytes that no Pillow plugin claims (a chance match of magic bytes is redrawn)."""
    rng = np.random.default_rng(seed)
    while True:
        data = rng.bytes(int(rng.integers(2048, 8192)))
        try:
            Image.open(io.BytesIO(data)).close()
        except UnidentifiedImageError:
            return data
