"""Text spotting (OCR): the ``TextSpotter`` protocol, its backends and a cheap text detector.

Backends, by name (:func:`load_spotter`):

- ``rapidocr`` (default): PP-OCR detection, orientation and recognition models run by
  onnxruntime; the ONNX files ship inside the ``rapidocr`` wheel, so nothing is downloaded.
  Lines are split into words with rapidocr's own word boxes.
- ``tesseract``: Debian's ``tesseract-ocr`` binary, called with TSV output (word level). Much
  weaker on text drawn over photos; useful where a second opinion or another script is wanted.

:class:`RapidTextDetector` is rapidocr's detector alone, at the image's own resolution: the
"has text" pass that lets images without text skip recognition and the upscaled detection.

>>> spotter = load_spotter("rapidocr")  # doctest: +SKIP
>>> spotter.spot(image)  # doctest: +SKIP
[Spotted(text='SALE', box=(12, 30, 96, 58), confidence=0.998)]
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from functools import cache
from typing import TYPE_CHECKING, NamedTuple, Protocol, runtime_checkable

import numpy as np
from PIL import Image

from ..io.images import ImageDecodeError

if TYPE_CHECKING:
    from rapidocr import RapidOCR

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in image pixels, x1/y1 exclusive
SPOTTERS = ("rapidocr", "tesseract")
MAX_ASPECT = 8  # rapidocr's Global.width_height_ratio: it letterboxes wider images itself
MAX_SIDE = 2000  # rapidocr's Global.max_side_len


class OCRError(ImageDecodeError):
    """The OCR engine failed on one image; map stages record it per sample and go on."""

    def __init__(self, engine: str, size: tuple[int, int], exc: BaseException):
        super().__init__("ocr_failed", f"{engine} failed on this {size[0]}×{size[1]} image: "
                                       f"{type(exc).__name__}: {exc}")


class Spotted(NamedTuple):
    """One spotted word: its text, its axis-aligned box and the backend's confidence (0..1)."""

    text: str
    box: Box
    confidence: float


@runtime_checkable
class TextSpotter(Protocol):
    """``spot(image)`` returns the words an image shows, one :class:`Spotted` per word."""

    name: str

    def spot(self, image: Image.Image) -> list[Spotted]: ...


@runtime_checkable
class TextDetector(Protocol):
    """``detect(image)`` returns text boxes only: the cheap "has text" pass."""

    def detect(self, image: Image.Image) -> list[Box]: ...


def quad_to_box(quad: np.ndarray | list, width: int, height: int) -> Box:
    """The axis-aligned box around a 4-point polygon, clipped to the image."""
    points = np.asarray(quad, np.float64).reshape(-1, 2)
    x0, y0 = np.floor(points.min(axis=0))
    x1, y1 = np.ceil(points.max(axis=0))
    return (int(max(0, x0)), int(max(0, y0)), int(min(width, x1)), int(min(height, y1)))


def _rapid_engine(threads: int, **params: object) -> RapidOCR:
    """A quiet RapidOCR engine on the bundled models with ``threads`` onnxruntime threads."""
    from rapidocr import RapidOCR

    base = {"Global.log_level": "error",
            "EngineConfig.onnxruntime.intra_op_num_threads": threads,
            "EngineConfig.onnxruntime.inter_op_num_threads": 1}
    return RapidOCR(params={**base, **params})


class _Canvas(NamedTuple):
    """The array rapidocr is given for an image, and the map from its pixels back."""

    rgb: np.ndarray
    width: int  # the original image's size
    height: int
    scale: tuple[float, float]  # original pixels per canvas pixel, x and y
    offset: tuple[int, int]  # padding left of and above the image on the canvas

    def box(self, quad: np.ndarray | list) -> Box:
        points = np.asarray(quad, np.float64).reshape(-1, 2)
        return quad_to_box((points - self.offset) * self.scale, self.width, self.height)


def _canvas(image: Image.Image) -> _Canvas:
    """The image as rapidocr can take it, whatever its shape.

    rapidocr fits the long side into 2000 px and lifts the short side to 30 px, rounding both
    to multiples of 32: a side that rounds to 0 raises ResizeImgError (4000×10), and lifting a
    short side stretches the long one (1999×3 is detected at 19968×4992: 15 GB, minutes). Tall
    images are not letterboxed, so their detection input grows with the ratio (500×30000:
    6 GB). An image beyond 8:1 either way is therefore fitted into 2000 px here and its short
    side padded to 8:1 by repeating the edge pixels: rapidocr then detects it at most at
    5888×736, like any 8:1 image. (Its own letterbox for wide images, black and to 4:1, halves
    the detection scale and spoils text near the edge: 31 vs 45 of 63 strips read.) Other
    images, empty ones too, pass unchanged.
    """
    rgb = image.convert("RGB")
    width, height = rgb.size
    if min(width, height) == 0 or max(width, height) <= MAX_ASPECT * min(width, height):
        return _Canvas(np.asarray(rgb), width, height, (1.0, 1.0), (0, 0))
    if max(width, height) > MAX_SIDE:
        f = MAX_SIDE / max(width, height)
        rgb = rgb.resize((max(1, round(width * f)), max(1, round(height * f))),
                         Image.Resampling.BILINEAR)
    w, h = rgb.size
    left, top = _pad_to_ratio(w, h), _pad_to_ratio(h, w)
    padded = np.pad(np.asarray(rgb), ((top, top), (left, left), (0, 0)), mode="edge")
    return _Canvas(padded, width, height, (width / w, height / h), (left, top))


def _pad_to_ratio(side: int, other: int) -> int:
    """Padding on each end of ``side`` so that ``other`` is at most MAX_ASPECT times it."""
    short_by = -(-other // MAX_ASPECT) - side
    return max(0, -(-short_by // 2))


def _run(engine: RapidOCR, canvas: _Canvas):
    """One rapidocr call; whatever it raises becomes this image's :class:`OCRError`."""
    try:
        return engine(canvas.rgb)
    except Exception as exc:
        raise OCRError("rapidocr", (canvas.width, canvas.height), exc) from exc


class RapidOCRSpotter:
    """rapidocr (PP-OCR via onnxruntime), words from its word boxes.

    rapidocr reads lines ("HOLIDAY FREELIMITED"); its word boxes split them into words, which
    is what co-embedded text and per-word inpainting need. Word groups are matched to their
    line by content, not by index, because rapidocr drops empty word groups without keeping
    the indices aligned. Thread-safe: onnxruntime sessions may run concurrently.
    """

    name = "rapidocr"

    def __init__(self, *, threads: int = 1, min_confidence: float = 0.5) -> None:
        self._engine = _rapid_engine(threads, **{"Global.return_word_box": True,
                                                 "Global.text_score": min_confidence})

    def spot(self, image: Image.Image) -> list[Spotted]:
        canvas = _canvas(image)
        out = _run(self._engine, canvas)
        if not getattr(out, "txts", None):
            return []
        groups = [g for g in out.word_results if g]
        spotted = []
        for text, score, quad in zip(out.txts, out.scores, out.boxes, strict=True):
            line = canvas.box(quad)
            words = _pop_group(groups, text, line, canvas)
            if words is None:
                spotted.append(Spotted(text, line, float(score)))
                continue
            spotted += [Spotted(w, canvas.box(q), float(s)) for w, s, q in words if w.strip()]
        return spotted


def _pop_group(groups: list, text: str, line: Box, canvas: _Canvas) -> tuple | None:
    """Remove and return the word group that spells ``text`` and lies inside ``line``."""
    for i, group in enumerate(groups):
        if "".join(w[0] for w in group).replace(" ", "") != text.replace(" ", ""):
            continue
        x0, y0, x1, y1 = canvas.box(group[0][2])
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        if line[0] <= cx <= line[2] and line[1] <= cy <= line[3]:
            return groups.pop(i)
    return None


class RapidTextDetector:
    """rapidocr's text detector alone, never upscaling: a cheap, safe "has text" test.

    Full spotting upscales small images to 736 px (short side) and then recognises every
    line; detection at the image's own size (long side capped at ``max_side``) finds the same
    legible text for a fraction of the cost. A lower box threshold than spotting's (0.3 vs
    0.5) errs towards "has text": a false alarm only costs a full spotting pass.
    """

    def __init__(self, *, threads: int = 1, max_side: int = 1024,
                 box_thresh: float = 0.3) -> None:
        self._engine = _rapid_engine(threads, **{
            "Global.use_cls": False, "Global.use_rec": False, "Det.limit_type": "max",
            "Det.limit_side_len": max_side, "Det.box_thresh": box_thresh})

    def detect(self, image: Image.Image) -> list[Box]:
        canvas = _canvas(image)
        boxes = getattr(_run(self._engine, canvas), "boxes", None)
        if boxes is None:
            return []
        return [canvas.box(q) for q in boxes]


class TesseractSpotter:
    """Debian's ``tesseract`` binary, one process per image, words from its TSV output.

    ``psm`` 11 (sparse text) suits words scattered over a picture better than page layout
    analysis. ``OMP_THREAD_LIMIT=1`` keeps each process on one core: parallelism comes from
    the engine's threads.
    """

    name = "tesseract"

    def __init__(self, *, lang: str = "eng", psm: int = 11, min_confidence: float = 0.5,
                 timeout: float = 60.0) -> None:
        binary = shutil.which("tesseract")
        if binary is None:
            raise FileNotFoundError("the tesseract backend needs the `tesseract` binary: "
                               "apt-get install tesseract-ocr")
        self._command = [binary, "stdin", "stdout", "--psm", str(psm), "-l", lang, "tsv"]
        self._min_confidence = min_confidence
        self._timeout = timeout

    def spot(self, image: Image.Image) -> list[Spotted]:
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, "PNG")
        try:
            done = subprocess.run(self._command, input=buffer.getvalue(), capture_output=True,
                                  check=True, timeout=self._timeout,
                                  env={**os.environ, "OMP_THREAD_LIMIT": "1"})
        except subprocess.SubprocessError as exc:  # a non-zero exit or the timeout
            raise OCRError("tesseract", image.size, exc) from exc
        words = parse_tesseract_tsv(done.stdout.decode("utf-8", "replace"))
        return [w for w in words if w.confidence >= self._min_confidence]


def parse_tesseract_tsv(tsv: str) -> list[Spotted]:
    """Word rows (level 5) of tesseract's TSV with non-blank text; confidence scaled to 0..1."""
    lines = tsv.splitlines()
    if not lines:
        return []
    header = lines[0].split("\t")
    spotted = []
    for line in lines[1:]:
        row = dict(zip(header, line.split("\t"), strict=False))
        text = row.get("text", "").strip()
        if row.get("level") != "5" or not text or float(row["conf"]) < 0:
            continue
        x, y, w, h = (int(row[k]) for k in ("left", "top", "width", "height"))
        spotted.append(Spotted(text, (x, y, x + w, y + h), float(row["conf"]) / 100))
    return spotted


@cache
def load_spotter(name: str = "rapidocr", *, threads: int = 1) -> TextSpotter:
    """The spotter named ``name`` (one of :data:`SPOTTERS`); cached, models load once."""
    if name == "rapidocr":
        return RapidOCRSpotter(threads=threads)
    if name == "tesseract":
        return TesseractSpotter()
    raise ValueError(f"unknown text spotter {name!r}; choose one of {SPOTTERS}")


@cache
def load_detector(*, threads: int = 1, max_side: int = 1024) -> RapidTextDetector:
    """The cached "has text" detector."""
    return RapidTextDetector(threads=threads, max_side=max_side)
