"""Text removal by inpainting: the ``Inpainter`` protocol and OpenCV's two classical methods.

docs/algorithms.md §4.3: the paper removed text with a learned inpainter we do not have; OpenCV's
Telea (radius 3) is pairsift's default because it is cheap, deterministic and needs no
weights. It smears rather than reconstructs, which is why relative scores are always read
against the random-box baseline inpainted the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
from PIL import Image

from .ocr import Box

INPAINTERS = ("telea", "ns")


@runtime_checkable
class Inpainter(Protocol):
    """``inpaint(image, boxes)`` returns a copy of ``image`` with the boxes filled in."""

    name: str

    def inpaint(self, image: Image.Image, boxes: Sequence[Box]) -> Image.Image: ...


class OpenCVInpainter:
    """``cv2.inpaint`` with Telea's fast marching method or Navier-Stokes (``ns``).

    Boxes grow by ``pad`` pixels first: OCR boxes hug the glyphs, and an outline or
    anti-aliased edge left behind would still be read as text.
    """

    def __init__(self, method: str = "telea", *, radius: float = 3.0, pad: int = 2) -> None:
        if method not in INPAINTERS:
            raise ValueError(f"unknown inpainting method {method!r}; choose one of {INPAINTERS}")
        self.name = method
        self.radius = radius
        self.pad = pad

    def inpaint(self, image: Image.Image, boxes: Sequence[Box]) -> Image.Image:
        import cv2

        rgb = np.asarray(image.convert("RGB"))
        mask = box_mask(boxes, rgb.shape[1], rgb.shape[0], pad=self.pad)
        if not mask.any():
            return image.convert("RGB")
        flag = cv2.INPAINT_TELEA if self.name == "telea" else cv2.INPAINT_NS
        return Image.fromarray(cv2.inpaint(rgb, mask.astype(np.uint8) * 255, self.radius, flag))


def box_mask(boxes: Sequence[Box], width: int, height: int, *, pad: int = 0) -> np.ndarray:
    """A boolean ``height × width`` mask that is True inside any box (grown by ``pad``)."""
    mask = np.zeros((height, width), bool)
    for x0, y0, x1, y1 in boxes:
        mask[max(0, y0 - pad):max(0, y1 + pad), max(0, x0 - pad):max(0, x1 + pad)] = True
    return mask


def load_inpainter(name: str = "telea", *, radius: float = 3.0) -> Inpainter:
    """The inpainter named ``name`` (``telea`` or ``ns``)."""
    return OpenCVInpainter(name, radius=radius)
