"""Parrot captions (docs/algorithms.md §4): co-embedded text, CoTR, text area, random
equal-area boxes, relative scores, per-group rates and the filters' keep/drop rules; then the
stages that run them: ``parrot-spot``, ``parrot-relative`` and the filters ``filter-parrot``,
``filter-text-dominated`` and ``filter-simple-fix``.

Words are compared as docs/algorithms.md §4.2 tokenises them
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
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from PIL import Image

from ..engine.views import Collection, PartData
from ..io.images import decode_image
from ..lazy import lazy
from ..models.inpaint import box_mask
from ..models.ocr import Box, Spotted, TextDetector, TextSpotter
from ..params import Param
from ..stage import SKIP, DecideStage, Decisions, MapStage, PartOutput, Sample, register
from ..synth.text import tokens

torch = lazy("torch")

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


def group_rates(groups: pa.Array | pa.ChunkedArray | Sequence, n_words: np.ndarray,
                cotr_values: np.ndarray, threshold: float = 0.0) -> list[dict]:
    """Per group (source, cluster...): samples, share with text, share of parrot captions,
    parrot share among images with text, mean CoTR (all, and over images with text).

    Grouped with Arrow, so a whole collection's columns go in, a row per group comes out;
    samples with no group come last.
    """
    values = np.asarray(cotr_values, np.float64)
    has_text = np.asarray(n_words) > 0
    known = ~np.isnan(values)
    table = pa.table({
        "group": pa.array(groups).cast(pa.string()) if not isinstance(
            groups, pa.Array | pa.ChunkedArray) else groups.cast(pa.string()),
        "samples": np.ones(len(values), np.int64),
        "with_text": has_text.astype(np.int64),
        "parrot": parrot_drop(values, threshold).astype(np.int64),
        "cotr_sum": np.where(known, values, 0.0), "cotr_n": known.astype(np.int64),
        "text_sum": np.where(known & has_text, values, 0.0),
        "text_n": (known & has_text).astype(np.int64)})
    sums = table.group_by("group").aggregate([(c, "sum") for c in table.column_names[1:]])
    rows = sorted(sums.to_pylist(), key=lambda r: (r["group"] is None, str(r["group"])))
    out = []
    for r in rows:
        n, text, par = r["samples_sum"], r["with_text_sum"], r["parrot_sum"]
        out.append({"group": r["group"], "samples": n, "with_text": text, "parrot": par,
                    "text_rate": text / n, "parrot_rate": par / n,
                    "parrot_of_text": par / text if text else math.nan,
                    "mean_cotr": _ratio(r["cotr_sum_sum"], r["cotr_n_sum"]),
                    "cotr_text": _ratio(r["text_sum_sum"], r["text_n_sum"])})
    return out


def _ratio(total: float, count: int) -> float:
    return total / count if count else math.nan


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


# -- stages -------------------------------------------------------------------------------------
MAX_TEXT_AREA = 0.5  # pairsift's default: more than half of the image is text
SIMPLE_FIX_CLIP = 0.3  # the paper's threshold, on OpenAI ViT-B/32's cosine scale
SPOT = "parrot-spot"

_BOX = pa.list_(pa.int32(), 4)
SPOT_SCHEMA = pa.schema([
    ("ocr_text", pa.list_(pa.string())),  # spotted words, reading order
    ("ocr_boxes", pa.list_(_BOX)),  # [x0, y0, x1, y1] per word
    ("ocr_conf", pa.list_(pa.float32())),
    ("ocr_co_emb", pa.list_(pa.bool_())),  # per word: part of the co-embedded text
    ("co_emb_words", pa.list_(pa.string())),  # caption tokens the image shows
    ("cotr", pa.float32()),  # NaN: no caption
    ("text_area", pa.float32()),  # share of the image under confidently read word boxes
    ("text_probe", pa.bool_()),  # has-text pass found text; null: pass not run
])
RELATIVE_COLUMNS = ("s0", "s_all", "s_co", "s_rand", "rsa", "rsc", "rs_rand", "rsa_diff",
                    "rsc_diff", "rs_rand_diff")


def _sum(data: Collection, read: Any) -> int:
    return int(sum(read(data.part(p)) for p in data.parts))


@register
class ParrotSpot(MapStage):
    """Spot text in every image and compare it with the caption: words, boxes, co-embedded
    words, CoTR (docs/algorithms.md §4.2) and text area. Spotting runs once; the filters
    re-decide in seconds with any threshold."""

    name = SPOT
    version = 2  # 2: the text area counts confidently read words only (AREA_MIN_CONFIDENCE)
    columns = ("caption",)
    needs_image = True
    per_sample = True
    params = (
        Param("spotter", str, "rapidocr", "OCR engine.", choices=("rapidocr", "tesseract")),
        Param("has_text_pass", bool, True, "Run the text detector alone first; recognise only "
                                           "where it finds text."),
        Param("mode", str, "caption", "CoTR: caption (|C∩E|/|C|) or iou (|C∩E|/|C∪E|).",
              choices=COTR_MODES),
        Param("fuzzy", float, 0.0, "Max normalised edit distance of a match (0: exact).",
              low=0, high=1),
        Param("stopwords", bool, True, "Never match function words (a, on, the, ...)."),
        Param("threads", int, None, "Worker threads.", low=1, runtime=True),
    )

    def setup(self, inputs: dict[str, Any]) -> None:
        from ..models.ocr import load_detector, load_spotter

        self.reader = load_spotter(self["spotter"])
        self.detector = load_detector() if self["has_text_pass"] else None

    def prepare(self, sample: Sample) -> dict[str, Any]:
        image = decode_image(sample.data).image
        spotted, probe = spot_image(image, self.reader, self.detector)
        texts = [s.text for s in spotted]
        caption = sample.row["caption"]
        matched = co_embedded(caption, texts, fuzzy=self["fuzzy"],
                              stopwords=STOPWORDS if self["stopwords"] else frozenset())
        boxes = [list(s.box) for s in spotted]
        return {"ocr_text": texts, "ocr_boxes": boxes,
                "ocr_conf": [s.confidence for s in spotted],
                "ocr_co_emb": co_embedded_mask(texts, set(matched.values())),
                "co_emb_words": list(matched),
                "cotr": rate(caption, texts, matched, self["mode"]),
                "text_area": text_area(area_boxes(spotted, image.width, image.height),
                                       image.width, image.height),
                "text_probe": probe}

    def assemble(self, part: PartData, results: list[dict | None] | None) -> PartOutput:
        return PartOutput(signals=pa.Table.from_pylist([r or {} for r in results or []],
                                                        SPOT_SCHEMA))

    def summarize(self, data: Collection) -> dict[str, Any]:
        def spots(part: PartData) -> pa.Table:
            return part.signal(SPOT, ["ocr_text", "cotr", "text_probe"])

        return {
            "total": data.n,
            "with_text": _sum(data, lambda p: pc.sum(pc.greater(
                pc.list_value_length(spots(p).column("ocr_text")), 0)).as_py() or 0),
            "parrot": _sum(data, lambda p: parrot_drop(p.values(SPOT, "cotr", np.float64)).sum()),
            "skipped_by_probe": _sum(data, lambda p: pc.sum(pc.invert(
                spots(p).column("text_probe"))).as_py() or 0),
        }


@register
class ParrotRelative(MapStage):
    """Re-score images with text removed (docs/algorithms.md §4.3): RSA (all spotted words
    inpainted), RSC (only the co-embedded ones) and random boxes of the same sizes, for every
    captioned image with spotted text; others get NaN. All four scores come from one forward
    pass of the same preprocessing, so S0 is the model's score of the untouched image."""

    name = "parrot-relative"
    requires = (SPOT,)
    columns = ("caption",)
    needs_image = True
    per_sample = True
    batch = 16
    params = (
        Param("model", str, None, "Encoder (default: the embedded one, else 'default').",
              runtime=True),  # resolved into the run's inputs
        Param("inpainter", str, "telea", "OpenCV inpainting method.", choices=("telea", "ns")),
        Param("radius", float, 3.0, "Inpainting radius in pixels.", low=0, closed="neither"),
        Param("seed", int, 0, "Seed of the random-box baseline."),
        Param("device", str, "cpu", "cpu | cuda | cuda:N", runtime=True),
        Param("batch_size", int, 16, "Images per forward pass (x4 variants).", low=1,
              runtime=True),
        Param("threads", int, None, "Decode and inpaint threads.", low=1, runtime=True),
    )

    def extra_inputs(self, ws: Any) -> dict[str, Any]:
        embedded = ws.run_config("embed")["model"] if ws.current_run("embed") else "default"
        return {"model": self["model"] or embedded}

    def setup(self, inputs: dict[str, Any]) -> None:
        from ..models import load_encoder
        from ..models.inpaint import load_inpainter

        self.encoder = load_encoder(inputs["model"], self["device"])
        self.filler = load_inpainter(self["inpainter"], radius=self["radius"])

    def sample_table(self, part: PartData) -> pa.Table:
        spots = part.signal(SPOT, ["ocr_boxes", "ocr_co_emb"])
        return part.rows.append_column("ocr_boxes", spots.column("ocr_boxes")).append_column(
            "ocr_co_emb", spots.column("ocr_co_emb"))

    def prepare(self, sample: Sample) -> Any:
        row = sample.row
        if not (row["caption"] and row["ocr_boxes"]):
            return SKIP
        image = decode_image(sample.data).image
        boxes: list[Box] = [tuple(b) for b in row["ocr_boxes"]]
        co = [b for b, c in zip(boxes, row["ocr_co_emb"], strict=True) if c]
        rng = np.random.default_rng([self["seed"], int(row["uid"][:16], 16)])
        images = [image, self.filler.inpaint(image, boxes)]
        if co:
            images.append(self.filler.inpaint(image, co))
        images.append(self.filler.inpaint(image, random_boxes(boxes, *image.size, rng)))
        return row["caption"], [self.encoder.preprocess(im) for im in images]

    def process(self, items: list[tuple[str, list]]) -> list[np.ndarray]:
        """S0, S_all, S_co, S_rand per image: one forward pass for every variant."""
        texts = self.encoder.encode_texts([caption for caption, _ in items])
        owners = np.repeat(np.arange(len(items)), [len(v) for _, v in items])
        joint = self.encoder.embed_pixels(torch.stack([t for _, v in items for t in v])).joint
        sims = np.einsum("ij,ij->i", joint, texts[owners])
        return [_four(sims[owners == i]) for i in range(len(items))]

    def assemble(self, part: PartData, results: list[np.ndarray | None] | None) -> PartOutput:
        scores = np.full((part.num_rows, 4), np.nan, np.float32)
        for i, four in enumerate(results or []):
            if four is not None:
                scores[i] = four
        ratios = relative_scores(*scores.T)
        columns = dict(zip(("s0", "s_all", "s_co", "s_rand"), scores.T, strict=True)) | ratios
        return PartOutput(signals=pa.table({c: pa.array(columns[c], pa.float32())
                                            for c in RELATIVE_COLUMNS}))

    def summarize(self, data: Collection) -> dict[str, Any]:
        values = {c: np.concatenate([data.part(p).values(self.name, c, np.float64)
                                     for p in data.parts] or [np.zeros(0)])
                  for c in ("s0", "rsa", "rsc", "rs_rand")}
        return {"scored": int((~np.isnan(values["s0"])).sum()),
                **{f"mean_{c}": nanmean(values[c]) for c in ("rsa", "rsc", "rs_rand")}}


def _four(sims: np.ndarray) -> np.ndarray:
    """(S0, S_all, S_co, S_rand) from 3 variants (no co-embedded words: S_co = S0) or 4."""
    if len(sims) == 3:
        return np.array([sims[0], sims[1], sims[0], sims[2]], np.float32)
    return sims.astype(np.float32)


class _TextFilter(DecideStage):
    requires = (SPOT,)

    def words(self, part: PartData, column: str) -> pa.ChunkedArray:
        return part.signal(SPOT, [column]).column(column)


@register
class FilterParrot(_TextFilter):
    """Drop parrot captions: CoTR above the threshold (0: any co-embedded word)."""

    name = "filter-parrot"
    reason = "parrot_caption"
    params = (Param("threshold", float, 0.0, "Drop CoTR > T.", low=0, high=1,
                    aliases=("cotr_threshold",)),)

    def decide(self, part: PartData, state: None) -> Decisions:
        cotr = part.values(SPOT, "cotr", np.float64)
        return Decisions(parrot_drop(cotr, self["threshold"]), self.reason, {
            "words": self.words(part, "co_emb_words"), "cotr": cotr,
            "threshold": self["threshold"]})


@register
class FilterTextDominated(_TextFilter):
    """Drop images whose spotted words cover more than the threshold of the image."""

    name = "filter-text-dominated"
    reason = "text_dominated"
    params = (Param("threshold", float, MAX_TEXT_AREA, "Drop text area > T.", low=0, high=1,
                    aliases=("max_text_area",)),)

    def decide(self, part: PartData, state: None) -> Decisions:
        area = np.nan_to_num(part.values(SPOT, "text_area", np.float64))
        return Decisions(text_dominated_drop(area, self["threshold"]), self.reason, {
            "words": self.words(part, "ocr_text"), "text_area": area,
            "threshold": self["threshold"]})


@register
class FilterSimpleFix(_TextFilter):
    """The paper's recipe: keep only images with no spotted text AND CLIP score above the
    threshold. (The paper also required a LAION aesthetics score > 4.5; pairsift has no
    aesthetics predictor, so that clause is left to a separate filter.)"""

    name = "filter-simple-fix"
    requires = (SPOT, "score")
    reason = "simple_fix"
    params = (Param("threshold", float, SIMPLE_FIX_CLIP, "Keep CLIP score > T with no text.",
                    aliases=("clip_threshold",)),)

    def decide(self, part: PartData, state: None) -> Decisions:
        words = self.words(part, "ocr_text")
        n_words = pc.list_value_length(words).fill_null(0).to_numpy(zero_copy_only=False)
        clip = part.values("score", "clip_score", np.float64)
        keep = simple_fix_keep(n_words, clip, self["threshold"])
        return Decisions(~keep, self.reason, {"words": words, "clip_score": clip,
                                              "threshold": self["threshold"]})
