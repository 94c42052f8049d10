"""Words drawn on photos, with the exact box of every word, for parrot-caption ground truth.

Fonts: Pillow's bundled scalable font (``ImageFont.load_default(size=...)``, Pillow >= 10) is
always there; DejaVu fonts are used when the system has them, and a font that is not installed
falls back to the bundled one, so the same plan renders everywhere (truth names the font used).
"""

from __future__ import annotations

import re
import threading
import unicodedata
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

DEFAULT_FONT = "default"
FONTS = (DEFAULT_FONT, "DejaVuSans-Bold.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf")

# Overlay words: common on web images, and none of them in any photo caption or template.
VOCABULARY = (
    "sale", "open", "summer", "welcome", "fresh", "best", "free", "love", "home", "travel",
    "dream", "happy", "monday", "explore", "vintage", "organic", "classic", "premium",
    "limited", "edition", "winter", "autumn", "holiday", "gift", "special", "offer", "today",
    "only", "discount", "quality", "original", "modern", "simple", "adventure", "journey",
    "morning", "weekend", "festival", "market", "season",
)

# (fill, stroke colour, banner colour): every style has an outline or a banner in a contrasting
# colour, so the words are legible on any photo (truth never lists invisible words).
STYLES = (
    ("white", "black", None),
    ("black", "white", None),
    ("yellow", "black", None),
    ("red", "white", None),
    ("white", None, "black"),
)
PLACEMENTS = ("top", "center", "bottom", "random")
_PLACEMENT_Y = {"top": 0.05, "center": 0.5, "bottom": 0.95}
MIN_FONT_PX = 14


def tokens(text: str) -> list[str]:
    """Caption/OCR words as docs/algorithms.md §4.2 compares them: lowercase, NFKC, alnum runs."""
    return [w for w in re.split(r"[\W_]+", unicodedata.normalize("NFKC", text.lower())) if w]


@dataclass(frozen=True)
class TextPlan:
    """What to draw and how; positions are fractions of the free space, chosen at plan time."""

    words: tuple[str, ...]  # exactly as drawn (case included)
    font: str
    size: float  # font size as a fraction of the image height
    style: int  # index into STYLES
    placement: str
    stacked: bool  # one word per line instead of one line
    fx: float
    fy: float


@dataclass(frozen=True)
class Drawn:
    font: str  # "family style" of the font actually used
    boxes: list[list[int]]  # [x0, y0, x1, y1] per drawn word, in output pixels


_FONTS = threading.local()  # one cache per thread: a FreeType face is not thread-safe


def _font(name: str, size: int) -> ImageFont.FreeTypeFont:
    cache = _FONTS.__dict__.setdefault("cache", {})
    if (name, size) not in cache:
        cache[name, size] = _load_font(name, size)
    return cache[name, size]


def _load_font(name: str, size: int) -> ImageFont.FreeTypeFont:
    if name != DEFAULT_FONT:
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            pass  # not installed here: the bundled font keeps the plan renderable
    return ImageFont.load_default(size=size)


def draw_words(image: Image.Image, plan: TextPlan) -> tuple[Image.Image, Drawn]:
    """``image`` (as RGB) with the words drawn on it, and where each word landed."""
    out = image.convert("RGB")
    draw = ImageDraw.Draw(out)
    fill, stroke, banner = STYLES[plan.style]
    font, sizes = _fit(draw, out.size, plan, 2 if stroke else 0)
    block_w, block_h = _block(sizes, font.size, plan.stacked)
    x0 = max(0, round(plan.fx * (out.width - block_w)))
    y0 = max(0, round(plan.fy * (out.height - block_h)))
    if banner:
        pad = font.size // 4
        draw.rectangle((x0 - pad, y0 - pad, x0 + block_w + pad, y0 + block_h + pad), fill=banner)
    boxes = []
    x, y = x0, y0
    for word, (w, h) in zip(plan.words, sizes, strict=True):
        draw.text((x, y), word, font=font, fill=fill, stroke_width=2 if stroke else 0,
                  stroke_fill=stroke, anchor="lt")
        box = draw.textbbox((x, y), word, font=font, stroke_width=2 if stroke else 0, anchor="lt")
        boxes.append([max(0, round(box[0])), max(0, round(box[1])),
                      min(out.width, round(box[2])), min(out.height, round(box[3]))])
        if plan.stacked:
            y += h + font.size // 4
        else:
            x += w + font.size // 3
    family, style = font.getname()
    return out, Drawn(f"{family} {style}", boxes)


def _fit(draw: ImageDraw.ImageDraw, size: tuple[int, int], plan: TextPlan,
         stroke: int) -> tuple[ImageFont.FreeTypeFont, list[tuple[int, int]]]:
    """The largest font up to the planned size whose block fits in 90% of the image."""
    px = max(MIN_FONT_PX, round(plan.size * size[1]))
    while True:
        font = _font(plan.font, px)
        sizes = []
        for word in plan.words:
            x0, y0, x1, y1 = draw.textbbox((0, 0), word, font=font, stroke_width=stroke,
                                           anchor="lt")
            sizes.append((round(x1 - x0), round(y1 - y0)))
        block_w, block_h = _block(sizes, px, plan.stacked)
        if px <= MIN_FONT_PX or (block_w <= 0.9 * size[0] and block_h <= 0.9 * size[1]):
            return font, sizes
        px = max(MIN_FONT_PX, int(px * 0.85))


def _block(sizes: list[tuple[int, int]], px: int, stacked: bool) -> tuple[int, int]:
    if stacked:
        return max(w for w, _ in sizes), sum(h for _, h in sizes) + px // 4 * (len(sizes) - 1)
    return sum(w for w, _ in sizes) + px // 3 * (len(sizes) - 1), max(h for _, h in sizes)


def placement_y(placement: str, random_y: float) -> float:
    """Vertical position (fraction of free space) for a named placement."""
    return _PLACEMENT_Y.get(placement, random_y)
