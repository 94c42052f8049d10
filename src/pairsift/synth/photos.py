"""Real photographs that ship inside scikit-image, with honest captions.

The files are read from the installed package (``skimage/data``) with Pillow: scikit-image's
``data`` fetchers are never called, because some of them download. Images that are not a
scene one would caption (test patterns, the colour wheel, the logo, photographed text pages,
``motorcycle_right.png``, which is the other half of a stereo pair with ``motorcycle_left.png``
and so a near duplicate of it) are left out.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import skimage
from PIL import Image

PHOTO_DIR = Path(os.path.dirname(skimage.__file__)) / "data"


@dataclass(frozen=True)
class Photo:
    """A packaged image: ``caption`` describes the whole frame, ``short`` any crop of it
    that keeps the centre (what crops of it are captioned with). ``crops`` is False where a
    crop would not show what the short caption says."""

    file: str
    caption: str
    short: str
    crops: bool = True

    @property
    def stem(self) -> str:
        return Path(self.file).stem


PHOTOS: tuple[Photo, ...] = (
    Photo("astronaut.png",
          "a smiling astronaut in an orange spacesuit next to an american flag "
          "and a model space shuttle",
          "an astronaut in an orange spacesuit"),
    Photo("chelsea.png", "a close-up photo of a tabby cat", "a tabby cat"),
    Photo("coffee.png", "a cup of espresso on a red saucer with a spoon",
          "a cup of coffee on a saucer"),
    Photo("rocket.jpg", "a rocket on a launch pad at dusk", "a rocket on a launch pad"),
    Photo("motorcycle_left.png", "a red motorcycle parked in a garage", "a red motorcycle"),
    Photo("hubble_deep_field.jpg", "galaxies in deep space seen by the hubble telescope",
          "galaxies in deep space"),
    Photo("retina.jpg", "a fundus photograph of a human retina", "a human retina"),
    Photo("ihc.png", "a microscope image of tissue stained brown and blue",
          "stained tissue under a microscope"),
    Photo("camera.png", "a black and white photo of a man with a camera on a tripod",
          "a man with a camera on a tripod"),
    Photo("coins.png", "a black and white photo of ancient coins arranged in rows",
          "ancient coins"),
    Photo("moon.png", "a black and white photo of craters on the surface of the moon",
          "the surface of the moon"),
    Photo("brick.png", "a black and white photo of a brick wall", "a brick wall"),
    Photo("grass.png", "a black and white close-up of grass", "a patch of grass"),
    Photo("gravel.png", "a black and white close-up of gravel", "a heap of gravel"),
    # Not a photograph: a drawn silhouette (RGBA, transparent background); crops are blobs.
    Photo("horse.png", "a black silhouette of a horse", "a silhouette of a horse", crops=False),
)

PHOTOS_BY_STEM: dict[str, Photo] = {p.stem: p for p in PHOTOS}


@cache
def photo_bytes(photo: Photo) -> bytes:
    """The packaged file, byte for byte (originals are copied verbatim)."""
    return (PHOTO_DIR / photo.file).read_bytes()


@cache
def photo_pixels(photo: Photo) -> Image.Image:
    """Decoded pixels in ``L`` or ``RGB``; transparency (the horse) is put on white."""
    with Image.open(PHOTO_DIR / photo.file) as im:
        im.load()
        if im.mode in ("L", "RGB"):
            return im.copy()
        rgba = im.convert("RGBA")
    out = Image.new("RGB", rgba.size, (255, 255, 255))
    out.paste(rgba, mask=rgba)
    return out
