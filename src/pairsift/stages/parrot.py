"""Parrot captions (docs/algorithms.md §4): co-embedded text, CoTR, text area, random
equal-area boxes, relative scores, per-group rates and the filters' keep/drop rules.

Algorithms only. Words are compared as docs/algorithms.md §4.2 tokenises them
(:func:`pairsift.synth.text.tokens`: lowercase, NFKC, split on non-alphanumerics), the same
function the synthetic corpus's truth uses.

>>> cotr("Summer sale: a tabby cat", ["SUMMER SALE", "50%"])
(0.4, ['summer', 'sale'])
>>> cotr("A wine bottle on a table", ["Fig. 22.- Another experiment on the same subject."])
(0.0, [])
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image

from ..models.inpaint import box_mask
from ..models.ocr import Box, Spotted, TextDetector, TextSpotter
from ..synth.text import tokens

COTR_MODES = ("caption", "iou")

# English function words: articles, pronouns, auxiliaries, conjunctions and the prepositions
# that only relate other words. A caption and a page of printed text share "on" or "the" by
# chance; counting that as parroting would flag nearly every image with a sentence in it.
# Words that mean something on a sign stay out even where grammar calls them function words:
# "just" (JUST DO IT), "up" (LOOK UP), "out" (WAY OUT), "off", "no", "now", "before", "after".
_FUNCTION_WORDS = """
a an the
i me my mine you your yours he him his she her hers it its we us our ours they them their
theirs this that these those who whom whose which what
am is are was were be been being do does did has have had having can could will would shall
should may might must
and or but nor so yet if than as because while whether
of on in at to for from by with into onto about between through during against among via per
"""
STOPWORDS = frozenset(_FUNCTION_WORDS.split())


def co_embedded(caption: str | None, ocr_words: Sequence[str], *, fuzzy: float = 0.0,
                stopwords: frozenset[str] = STOPWORDS) -> dict[str, str]:
    """Co-Emb text: each caption token the image also shows, mapped to the OCR token it matched.

    A caption token matches an OCR token that is equal, within normalised edit distance
    ``fuzzy`` (0: exact, the default), or a piece of an OCR token made wholly of caption
    tokens (OCR often drops the space between words: "FREELIMITED"). Caption order is kept.
    Stop-words never match, and while a stop list is in force neither do one-character tokens
    (a stray glyph, a bullet or the "s" of "it's" matches by chance); with an empty list
    (``--no-stopwords``) every caption token can match, docs/algorithms.md §4.2's literal rule.
    """
    candidates = [t for t in dict.fromkeys(tokens(caption or ""))
                  if t not in stopwords and (len(t) > 1 or not stopwords)]
    ocr = list(dict.fromkeys(tokens(" ".join(ocr_words))))
    matched = {t: t for t in candidates if t in ocr}
    vocabulary = set(candidates)
    for token in ocr:
        for piece in _split_into(token, vocabulary) or ():
            matched.setdefault(piece, token)
    if fuzzy > 0:
        for t in candidates:
            close = next((o for o in ocr if edit_ratio(t, o) <= fuzzy), None)
            if close is not None:
                matched.setdefault(t, close)
    return {t: matched[t] for t in candidates if t in matched}


def _split_into(token: str, words: set[str]) -> list[str] | None:
    """``token`` as a concatenation of two or more of ``words`` (word break), or None."""
    longest = max(map(len, words), default=0)
    best: list[list[str] | None] = [[]] + [None] * len(token)
    for end in range(1, len(token) + 1):
        for start in range(max(0, end - longest), end):
            if best[start] is not None and token[start:end] in words:
                best[end] = [*best[start], token[start:end]]
                break
    pieces = best[-1]
    return pieces if pieces is not None and len(pieces) > 1 else None


def edit_ratio(a: str, b: str) -> float:
    """Levenshtein distance divided by the longer length (0: equal, 1: nothing shared)."""
    if not a or not b:
        return float(a != b)
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1,
                               previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1] / max(len(a), len(b))


def cotr(caption: str | None, ocr_words: Sequence[str], *, mode: str = "caption",
         fuzzy: float = 0.0, stopwords: frozenset[str] = STOPWORDS) -> tuple[float, list[str]]:
    """Co-emb text rate and the co-embedded words (docs/algorithms.md §4.2); see :func:`rate`."""
    matched = co_embedded(caption, ocr_words, fuzzy=fuzzy, stopwords=stopwords)
    return rate(caption, ocr_words, matched, mode), list(matched)


def rate(caption: str | None, ocr_words: Sequence[str], matched: dict[str, str],
         mode: str = "caption") -> float:
    """CoTR from the co-embedded words ``matched`` (:func:`co_embedded`).

    ``mode="caption"``: |C ∩ E| / |C|, the share of caption words the image shows; ``"iou"``:
    |C ∩ E| / |C ∪ E|. NaN for a caption without tokens, 0 for an image without text.
    """
    if mode not in COTR_MODES:
        raise ValueError(f"unknown CoTR mode {mode!r}; choose one of {COTR_MODES}")
    caption_set = set(tokens(caption or ""))
    if not caption_set:
        return math.nan
    if mode == "caption":
        return len(matched) / len(caption_set)
    return len(matched) / len(caption_set | set(tokens(" ".join(ocr_words))))


def co_embedded_mask(ocr_words: Sequence[str], matched_ocr_tokens: set[str]) -> list[bool]:
    """Per spotted word: does it hold an OCR token that matched a caption word?"""
    return [bool(set(tokens(w)) & matched_ocr_tokens) for w in ocr_words]


def text_area(boxes: Sequence[Box], width: int, height: int) -> float:
    """Share of the image covered by the union of the boxes (overlaps counted once)."""
    if not boxes or width <= 0 or height <= 0:
        return 0.0
    return float(box_mask(boxes, width, height).mean())


# Text area says that text covers the image, so it counts only words the recogniser is sure of.
# On text-free photos OCR reads shapes, unsure: coins as "0" or "D000O" (0.4-0.88), an espresso
# cup as "8", an eye as "C", a horse as "T" or "1" (0.6-0.96), and those boxes can cover the whole
# image. A word box covering a quarter of the image is large, clean text, the easiest text to
# read, so it must be read near-certainly. On 215 synthetic images (scikit-image photos and
# drawn words) this keeps every drawn word, and the largest text area of a text-free photo
# falls from 0.99 to 0.02.
AREA_MIN_CONFIDENCE = 0.9
LARGE_WORD_SHARE = 0.25
LARGE_WORD_MIN_CONFIDENCE = 0.98


def area_boxes(spotted: Sequence[Spotted], width: int, height: int) -> list[Box]:
    """The boxes of the spotted words that count toward :func:`text_area`."""
    large = LARGE_WORD_SHARE * width * height
    return [w.box for w in spotted
            if w.confidence >= (LARGE_WORD_MIN_CONFIDENCE if _area(w.box) >= large
                                else AREA_MIN_CONFIDENCE)]


def _area(box: Box) -> int:
    return (box[2] - box[0]) * (box[3] - box[1])


def spot_image(image: Image.Image, spotter: TextSpotter,
               detector: TextDetector | None) -> tuple[list[Spotted], bool | None]:
    """Spotted words and whether the has-text pass found text (None: no pass was run)."""
    if detector is None:
        return spotter.spot(image), None
    if not detector.detect(image):
        return [], False
    return spotter.spot(image), True


def random_boxes(boxes: Sequence[Box], width: int, height: int, rng: np.random.Generator,
                 tries: int = 20) -> list[Box]:
    """Boxes of the same sizes (so the same total area) at random places away from ``boxes``.

    The random-inpainting baseline (docs/algorithms.md §4.3): removing as many non-text pixels
    tells how much of a score drop is inpainting damage rather than lost text. Each box tries
    ``tries`` positions that overlap neither text nor earlier random boxes, then takes the last.
    """
    placed: list[Box] = []
    for x0, y0, x1, y1 in boxes:
        w, h = min(x1 - x0, width), min(y1 - y0, height)
        box = (0, 0, w, h)
        for _ in range(tries):
            left = int(rng.integers(0, width - w + 1))
            top = int(rng.integers(0, height - h + 1))
            box = (left, top, left + w, top + h)
            if not any(_overlaps(box, other) for other in [*boxes, *placed]):
                break
        placed.append(box)
    return placed


def _overlaps(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def relative_scores(s0: np.ndarray, s_all: np.ndarray, s_co: np.ndarray,
                    s_rand: np.ndarray) -> dict[str, np.ndarray]:
    """RSA = S_all/S0, RSC = S_co/S0, the random baseline S_rand/S0, and S0 − S_x.

    docs/algorithms.md §4.3.

    Ratios are NaN where S0 ≤ 0: a ratio to a non-positive score has no meaning.
    """
    s0 = np.asarray(s0, np.float32)
    out = {}
    for name, s in (("rsa", s_all), ("rsc", s_co), ("rs_rand", s_rand)):
        s = np.asarray(s, np.float32)
        with np.errstate(divide="ignore", invalid="ignore"):
            out[name] = np.where(s0 > 0, s / s0, np.nan).astype(np.float32)
        out[f"{name}_diff"] = (s0 - s).astype(np.float32)
    return out


def group_rates(groups: Sequence[str | None], n_words: np.ndarray, cotr_values: np.ndarray,
                threshold: float = 0.0) -> list[dict]:
    """Per group: samples, share with spotted text, share of parrot captions, mean CoTR.

    ``parrot_of_text`` is the paper's "of the captions of images with text, how many parrot";
    mean CoTR is over captioned samples, ``cotr_text`` over captioned samples with text.
    """
    keys = np.array(["" if g is None else str(g) for g in groups], dtype=object)
    has_text = np.asarray(n_words) > 0
    values = np.asarray(cotr_values, np.float64)
    parrot = np.nan_to_num(values, nan=-1.0) > threshold
    rows = []
    for key in sorted(set(keys), key=lambda k: (k == "", k)):  # no group last
        sel = keys == key
        n, text, par = int(sel.sum()), int(has_text[sel].sum()), int(parrot[sel].sum())
        rows.append({"group": key or None, "samples": n, "with_text": text, "parrot": par,
                     "text_rate": text / n, "parrot_rate": par / n,
                     "parrot_of_text": par / text if text else math.nan,
                     "mean_cotr": nanmean(values[sel]),
                     "cotr_text": nanmean(values[sel & has_text])})
    return rows


def nanmean(x: np.ndarray) -> float:
    """Mean of the non-NaN values; NaN when there are none (no warning)."""
    x = x[~np.isnan(x)]
    return float(x.mean()) if x.size else math.nan


def parrot_drop(cotr_values: np.ndarray, threshold: float = 0.0) -> np.ndarray:
    """Parrot: CoTR > threshold (default 0, docs/algorithms.md §4.2). No caption: never a parrot."""
    return np.nan_to_num(np.asarray(cotr_values, np.float64), nan=-1.0) > threshold


def text_dominated_drop(areas: np.ndarray, max_area: float) -> np.ndarray:
    """Text-dominated image: spotted boxes cover more than ``max_area`` of it."""
    return np.asarray(areas, np.float64) > max_area


def simple_fix_keep(n_words: np.ndarray, clip: np.ndarray, threshold: float) -> np.ndarray:
    """The paper's recipe: keep only images with no spotted text AND CLIP score > threshold.

    Strict ``>`` as the project page states; a sample without a score is not kept.
    """
    clip = np.nan_to_num(np.asarray(clip, np.float64), nan=-np.inf)
    return (np.asarray(n_words) == 0) & (clip > threshold)
