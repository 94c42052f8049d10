"""Text spotting and inpainting backends on rendered words and real photographs."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from pairsift.io.images import ImageDecodeError
from pairsift.models.inpaint import OpenCVInpainter, box_mask, load_inpainter
from pairsift.models.ocr import (
    OCRError,
    Spotted,
    TextSpotter,
    load_detector,
    load_spotter,
    parse_tesseract_tsv,
    quad_to_box,
)
from pairsift.synth import tokens


def _words_image(words: str, size: tuple[int, int] = (320, 200), bg: str = "white",
                 fg: str = "black") -> tuple[Image.Image, tuple[int, int, int, int]]:
    """``words`` drawn in 36 px at a known place; returns the image and the text's box."""
    image = Image.new("RGB", size, bg)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=36)
    draw.text((20, 80), words, font=font, fill=fg, anchor="lt")
    return image, tuple(int(v) for v in draw.textbbox((20, 80), words, font=font, anchor="lt"))


def _inside(box, outer, slack: int = 10) -> bool:
    """Inside, up to the margin the detector adds around glyphs (about a third of their height)."""
    return (box[0] >= outer[0] - slack and box[1] >= outer[1] - slack
            and box[2] <= outer[2] + slack and box[3] <= outer[3] + slack)


@pytest.fixture(scope="module")
def rapid() -> TextSpotter:
    return load_spotter("rapidocr")


def test_rapidocr_reads_words_with_word_boxes(rapid):
    image, drawn = _words_image("SUMMER SALE")
    spotted = rapid.spot(image)
    assert isinstance(rapid, TextSpotter)
    assert [tokens(s.text) for s in spotted] == [["summer"], ["sale"]]  # one item per word
    assert all(_inside(s.box, drawn) and 0.5 <= s.confidence <= 1 for s in spotted)
    assert spotted[0].box[2] <= spotted[1].box[0]  # reading order, side by side


def test_rapidocr_and_detector_find_nothing_on_a_blank_image(rapid):
    blank = Image.new("RGB", (256, 256), "gray")
    assert rapid.spot(blank) == []
    assert load_detector().detect(blank) == []


def test_detector_finds_small_light_text():
    image, drawn = _words_image("open", bg="black", fg="white")
    boxes = load_detector().detect(image.resize((160, 100)))  # text now ~18 px high
    assert boxes and all(0 <= b[0] < b[2] <= 160 and 0 <= b[1] < b[3] <= 100 for b in boxes)


def test_rapidocr_reads_the_bus(rapid, shared_data):
    """data-juicer img2.jpg: a bus with readable lettering."""
    with Image.open(shared_data / "data-juicer" / "img2.jpg") as im:
        spotted = rapid.spot(im.convert("RGB"))
    words = set(tokens(" ".join(s.text for s in spotted)))
    assert {"privileges", "nothing", "compares"} <= words
    assert all(0 <= s.box[0] < s.box[2] <= 640 and 0 <= s.box[1] < s.box[3] <= 480
               for s in spotted)


EXTREME = [(4000, 10), (20000, 3), (30000, 100)]


@pytest.mark.parametrize("size", [*EXTREME, *((h, w) for w, h in EXTREME)])
def test_extreme_aspect_ratios_are_read_not_raised(rapid, size):
    """rapidocr rounded a side of these to 0 px and raised ResizeImgError, stopping the stage."""
    image = Image.new("RGB", size, "white")
    assert rapid.spot(image) == []
    assert load_detector().detect(image) == []


@pytest.mark.parametrize(("size", "at", "words"), [
    ((4000, 60), (1500, 10), "SUMMER SALE"),  # 67:1: fitted into 2000 px, then padded to 8:1
    ((120, 1200), (5, 600), "SALE"),  # 1:10: rapidocr letterboxes wide images only
])
def test_text_on_a_strip_is_read_where_it_is(rapid, size, at, words):
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=40)
    draw.text(at, words, font=font, fill="black", anchor="lt")
    drawn = draw.textbbox(at, words, font=font, anchor="lt")
    spotted = rapid.spot(image)
    assert [tokens(s.text) for s in spotted] == [[w] for w in tokens(words)]
    boxes = [s.box for s in spotted] + load_detector().detect(image)
    assert all(_inside(b, drawn, slack=20) for b in boxes)  # the detector's margin, ×2 at 2:1


def test_engine_failure_is_a_per_sample_error(rapid):
    """Whatever rapidocr raises on one image comes out as that image's OCRError, which map
    stages record as a per-sample error (it is an ImageDecodeError) instead of stopping."""
    empty = Image.new("RGB", (0, 10))
    for read in (rapid.spot, load_detector().detect):
        with pytest.raises(OCRError, match="0×10") as caught:
            read(empty)
        assert isinstance(caught.value, ImageDecodeError) and caught.value.reason == "ocr_failed"


def test_quad_to_box_clips_to_the_image():
    assert quad_to_box([[-3.2, 5.5], [50.1, 5], [50, 20.7], [-3, 20]], 40, 18) == (0, 5, 40, 18)


def test_parse_tesseract_tsv_keeps_words_only():
    tsv = ("level\tpage_num\tblock_num\tpar_num\tline_num\tword_num\tleft\ttop\twidth\theight"
           "\tconf\ttext\n"
           "1\t1\t0\t0\t0\t0\t0\t0\t320\t200\t-1\t\n"
           "5\t1\t1\t1\t1\t1\t20\t80\t120\t30\t96.5\tSUMMER\n"
           "5\t1\t1\t1\t1\t2\t150\t80\t80\t30\t91\tSALE\n"
           "5\t1\t1\t1\t1\t3\t240\t80\t5\t30\t12\t \n")
    assert parse_tesseract_tsv(tsv) == [Spotted("SUMMER", (20, 80, 140, 110), 0.965),
                                        Spotted("SALE", (150, 80, 230, 110), 0.91)]
    assert parse_tesseract_tsv("") == []


@pytest.mark.skipif(shutil.which("tesseract") is None,
                    reason="tesseract binary absent (apt-get install tesseract-ocr)")
def test_tesseract_reads_clean_text():
    image, drawn = _words_image("SUMMER SALE")
    spotted = load_spotter("tesseract").spot(image)
    assert {"summer", "sale"} <= set(tokens(" ".join(s.text for s in spotted)))
    assert all(_inside(s.box, drawn) for s in spotted)


def test_unknown_spotter_is_refused():
    with pytest.raises(ValueError, match="rapidocr"):
        load_spotter("deepsolo")


def test_box_mask_grows_by_pad_and_clips():
    mask = box_mask([(2, 3, 5, 4), (8, 8, 12, 12)], 10, 10, pad=1)
    assert mask[2:5, 1:6].all() and mask[7:, 7:].all()
    assert mask.sum() == 3 * 5 + 3 * 3


@pytest.mark.parametrize("method", ["telea", "ns"])
def test_inpainting_removes_the_text_and_nothing_else(rapid, method):
    image, drawn = _words_image("SUMMER SALE")
    boxes = [s.box for s in rapid.spot(image)]
    cleaned = load_inpainter(method).inpaint(image, boxes)
    assert rapid.spot(cleaned) == []
    before, after = np.asarray(image), np.asarray(cleaned)
    outside = ~box_mask(boxes, image.width, image.height, pad=2)
    assert (before[outside] == after[outside]).all()


def test_inpainting_without_boxes_is_a_copy_and_bad_method_is_refused():
    image, _ = _words_image("open")
    assert np.array_equal(np.asarray(OpenCVInpainter().inpaint(image, [])), np.asarray(image))
    with pytest.raises(ValueError, match="telea"):
        OpenCVInpainter("lama")
