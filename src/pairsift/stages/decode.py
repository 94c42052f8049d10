"""The decode map stage: is a sample's image usable, and what are its basic facts."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from ..io.images import DEFAULT_MAX_PIXELS, probe_image


@dataclass(frozen=True)
class ImageFacts:
    width: int
    height: int
    format: str
    sha256: str


def image_facts(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageFacts:
    """Decode ``data`` fully (truncation only shows at the end) and describe it.

    Raises :class:`pairsift.io.images.ImageDecodeError` with a reason code when unusable.
    """
    decoded = probe_image(data, max_pixels=max_pixels)
    return ImageFacts(decoded.width, decoded.height, decoded.format,
                      hashlib.sha256(data).hexdigest())
