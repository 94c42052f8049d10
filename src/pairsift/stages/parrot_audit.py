"""Encoder audit: the synthetic text benchmark of "Parrot Captions" (docs/algorithms.md §4.1).

Each word is drawn alone, 32 px, centred on a 224×224 canvas in four background/text styles;
the Sync. Score is the mean cosine of a rendered word with the embedding of the same word.
An encoder that learned to read scores high (OpenAI CLIP 0.317, debiased-100M 0.163 in the
paper). Cosines are not comparable across encoders, so the mean cosine with the *other* words
is reported beside it: the gap between the two is how much reading the word adds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache

import numpy as np
from matplotlib.figure import Figure
from PIL import Image, ImageDraw, ImageFont

from ..models.base import ImageTextEncoder, encode_images

CANVAS = 224
FONT_PX = 32
# (background, text) as in CLIP-Parrot-Bias sys_benchmark.py.
STYLES = (("white", "black"), ("black", "white"), ("gray", "white"), ("gray", "black"))
# Arial in the paper; DejaVu Sans (Debian fonts-dejavu-core) is the closest free sans, and
# Pillow's bundled font keeps the audit runnable without it.
FONT = "DejaVuSans.ttf"

# 1-grams frequent in web alt-text (the paper used LAION's caption vocabulary).
WORDS = (
    "dog", "cat", "car", "house", "tree", "flower", "beach", "mountain", "city", "food",
    "coffee", "pizza", "cake", "wedding", "baby", "girl", "boy", "woman", "man", "family",
    "dress", "shoes", "shirt", "bag", "watch", "ring", "chair", "table", "bed", "kitchen",
    "garden", "river", "lake", "snow", "sunset", "sky", "bird", "horse", "fish", "bike",
    "train", "plane", "boat", "phone", "book", "music", "guitar", "art", "logo", "map",
    "christmas", "summer", "love", "sale", "vintage", "modern", "red", "blue", "green", "black",
)


@dataclass
class AuditResult:
    """Cosines of each rendered word (rows) in each style (columns) with its own text
    (``matched``) and, averaged, with every other word's text (``mismatched``)."""

    model: str
    words: list[str]
    matched: np.ndarray
    mismatched: np.ndarray
    skipped: list[str] = field(default_factory=list)

    @property
    def sync_score(self) -> float:
        return float(self.matched.mean())

    @property
    def baseline(self) -> float:
        return float(self.mismatched.mean())

    def summary(self) -> dict:
        """Headline numbers and per-style means, JSON-ready."""
        styles = {f"{bg}/{fg}": {"sync_score": float(m), "mismatched": float(x)}
                  for (bg, fg), m, x in zip(STYLES, self.matched.mean(0),
                                            self.mismatched.mean(0), strict=True)}
        return {"model": self.model, "words": len(self.words),
                "asked": [*self.words, *self.skipped], "skipped": self.skipped,
                "sync_score": self.sync_score, "mismatched": self.baseline,
                "gap": self.sync_score - self.baseline, "styles": styles}


@cache
def _font(px: int) -> ImageFont.FreeTypeFont:
    try:
        return ImageFont.truetype(FONT, px)
    except OSError:
        return ImageFont.load_default(size=px)


def render_word(word: str, background: str, foreground: str, *, px: int = FONT_PX,
                canvas: int = CANVAS) -> Image.Image | None:
    """``word`` centred on a square canvas; None when the font cannot measure it or it does
    not fit (the paper skips such strings)."""
    font = _font(px)
    x0, y0, x1, y1 = font.getbbox(word)
    if x1 <= x0 or y1 <= y0 or x1 - x0 > canvas:
        return None
    image = Image.new("RGB", (canvas, canvas), background)
    ImageDraw.Draw(image).text((canvas / 2, canvas / 2), word, font=font, fill=foreground,
                               anchor="mm")
    return image


def sync_scores(encoder: ImageTextEncoder, words: list[str] | tuple[str, ...] = WORDS, *,
                batch_size: int = 64,
                advance: Callable[[int], None] = lambda n: None) -> AuditResult:
    """Render every word in every style and score it against every word's text.

    ``advance(n)`` is called as images are done: ``len(STYLES)`` per distinct word in all
    (a word the font cannot render counts as done at once).
    """
    unique = list(dict.fromkeys(words))
    kept = [w for w in unique if render_word(w, *STYLES[0]) is not None]
    if len(kept) < 2:
        raise ValueError("the audit needs at least two words the font can render")
    advance((len(unique) - len(kept)) * len(STYLES))
    texts = encoder.encode_texts(kept)
    n = len(kept)
    matched = np.zeros((n, len(STYLES)), np.float32)
    mismatched = np.zeros_like(matched)
    for s, (bg, fg) in enumerate(STYLES):
        sims = _image_embeddings(encoder, kept, bg, fg, batch_size, advance) @ texts.T
        matched[:, s] = np.diag(sims)
        mismatched[:, s] = (sims.sum(1) - np.diag(sims)) / (n - 1)
    skipped = [w for w in unique if w not in kept]
    return AuditResult(encoder.name, kept, matched, mismatched, skipped)


def _image_embeddings(encoder: ImageTextEncoder, words: list[str], background: str,
                      foreground: str, batch_size: int,
                      advance: Callable[[int], None]) -> np.ndarray:
    chunks = []
    for start in range(0, len(words), batch_size):
        images = [render_word(w, background, foreground) for w in words[start:start + batch_size]]
        chunks.append(encode_images(encoder, images).joint)
        advance(len(images))
    return np.concatenate(chunks)


def audit_figure(result: AuditResult) -> Figure:
    """Per style, matched vs other-word cosine (bars), and the two distributions."""
    fig = Figure(figsize=(8.0, 3.2), layout="constrained")
    bars, hist = fig.subplots(1, 2)
    x = np.arange(len(STYLES))
    matched, other = result.matched.mean(0), result.mismatched.mean(0)
    bars.bar(x - 0.2, matched, 0.4, label="same word")
    bars.bar(x + 0.2, other, 0.4, label="other words")
    bars.set_xticks(x, [f"{fg} on\n{bg}" for bg, fg in STYLES])
    bars.set_ylim(min(0.0, matched.min(), other.min()), 1.3 * max(matched.max(), other.max()))
    bars.set_ylabel("mean cosine")
    bars.legend(loc="upper left", ncols=2, fontsize="small")
    bars.set_title(f"Sync. Score {result.sync_score:.3f} (other words {result.baseline:.3f})")
    edges = np.histogram_bin_edges(np.concatenate([result.matched.ravel(),
                                                   result.mismatched.ravel()]), bins=30)
    hist.hist(result.matched.ravel(), bins=edges, alpha=0.6, label="same word")
    hist.hist(result.mismatched.ravel(), bins=edges, alpha=0.6, label="other words (mean)")
    hist.set_xlabel("cosine(rendered word, text)")
    hist.legend(fontsize="small")
    fig.suptitle(f"text-spotting audit: {result.model}")
    return fig
