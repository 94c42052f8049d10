"""Text guard for semantic dedup: an image classifier's space cannot read.

Two pages of different quotes on one background, or two signs in one font, sit at cosine
0.95-0.99 in the default model's visual space, as close as a JPEG copy. ``text-detect`` finds
where text is (rapidocr's detector alone, no recognition: ~0.1 s an image on 2 cores) and
``dedup semantic --text-guard`` then refuses to call two text images duplicates on the
embedding alone:

- when ``parrot-spot`` has run, its words decide: two images whose spotted words differ are
  not duplicates (same words: the embedding decides); text-detect is then not run;
- otherwise two images that both have text over ``TEXT_GUARD_AREA`` of their surface are not
  semantic duplicates; their copies are left to the hash stages, which compare pixels.

The detector also fires on some textures (clouds read as text at area ~0.9): the guard then
keeps those pairs too, which costs recall on them, never precision.
"""

from __future__ import annotations

from collections.abc import Container
from typing import Any

import numpy as np
import pyarrow as pa

from ..engine.views import Collection, PartData
from ..io.images import decode_image
from ..params import Param
from ..stage import MapStage, PartOutput, Sample, register
from ..synth.text import tokens
from .parrot import SPOT, text_area

TEXT_GUARD_AREA = 0.15  # share of the image under detected text: a text image
DETECT = "text-detect"


@register
class TextDetect(MapStage):
    """Where text is in every image (detector only, no OCR): the text area, for the semantic
    dedup's text guard."""

    name = DETECT
    needs_image = True
    per_sample = True
    auto = True
    params = (
        Param("max_side", int, 320, "Longest side the detector sees (pixels).", low=32),
        Param("threads", int, None, "Worker threads.", low=1, runtime=True),
    )

    def setup(self, inputs: dict[str, Any]) -> None:
        from ..models.ocr import load_detector

        self.detector = load_detector(max_side=self["max_side"])

    def prepare(self, sample: Sample) -> float:
        image = decode_image(sample.data).image
        return text_area(self.detector.detect(image), image.width, image.height)

    def assemble(self, part: PartData, results: list[float | None] | None) -> PartOutput:
        return PartOutput(signals=pa.table({"text_area": pa.array(results or [],
                                                                  pa.float32())}))


def text_guard_input(present: Container[str]) -> str:
    """The stage the guard reads: parrot-spot when it has run (its words decide every pair,
    so the detector is not run), else text-detect."""
    return SPOT if SPOT in present else DETECT


def text_guard_veto(data: Collection, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """True where rows ``a[k]`` and ``b[k]`` must not be called semantic duplicates."""
    if SPOT in data.inputs:
        words = _spotted_words(data, np.union1d(a, b))
        return np.array([bool(words[i]) and bool(words[j]) and words[i] != words[j]
                         for i, j in zip(a.tolist(), b.tolist(), strict=True)], bool)
    area = np.nan_to_num(data.values(DETECT, "text_area", np.float32), nan=0.0)
    return (area[a] >= TEXT_GUARD_AREA) & (area[b] >= TEXT_GUARD_AREA)


def _spotted_words(data: Collection, rows: np.ndarray) -> dict[int, frozenset[str]]:
    """The spotted words (parrot-spot's OCR, tokenised as docs/algorithms.md §4.2) of
    ``rows`` only: the few candidate pairs, never the whole collection."""
    out: dict[int, frozenset[str]] = {}
    for part in data.parts:
        span = data.rows_of(part)
        local = rows[(rows >= span.start) & (rows < span.stop)]
        if not len(local):
            continue
        texts = data.part(part).signal(SPOT, ["ocr_text"]).column("ocr_text")
        for row in local.tolist():
            out[row] = frozenset(tokens(" ".join(texts[row - span.start].as_py() or [])))
    return out
