"""A labelled corpus for near-duplicate detection: hard negatives and every usual copy.

Negatives that fool embedding and hash dedup alike, made from the photos in :mod:`.photos` and
from seeded procedural pictures:

- ``text_page``: different words on a plain background (quotes, signs, menus) in one font and
  layout, which an image classifier's space cannot tell apart;
- ``sky``, ``sea``, ``snow``: different pictures of clouds, waves or snow fields, each from its
  own noise seed;
- ``texture``: disjoint quarters of the brick, grass, gravel and moon photos;
- ``photo``: the packaged photos and disjoint quarters of the others.

Positives: copies of originals by every transform in :data:`DEDUP_TRANSFORMS` (exact bytes,
re-encodes, resizes, crops, flips, rotations by 90/180/270 degrees and by a few degrees,
borders, a word drawn over the picture). ``group`` in the truth names the original, so the
true duplicate pairs are the pairs of samples that share a group.

>>> import tempfile
>>> corpus = make_dedup_corpus(tempfile.mkdtemp(), seed=1, scale=0.2)
>>> sorted(set(corpus.truth.column("family").to_pylist()))
['photo', 'sea', 'sky', 'snow', 'text_page', 'texture']
"""

from __future__ import annotations

import csv
import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw, ImageFont, ImageOps
from scipy.ndimage import gaussian_filter

from .layouts import new_folder
from .photos import PHOTOS, Photo, photo_pixels
from .render import encode
from .text import FONTS, VOCABULARY, TextPlan, draw_words

DEDUP_TRANSFORMS = ("exact", "jpeg_q30", "webp", "resize_50", "center_crop_80", "random_crop",
                    "hflip", "vflip", "rot90", "rot180", "rot270", "rot_small", "border",
                    "text_overlay")
FAMILIES = ("photo", "texture", "text_page", "sky", "sea", "snow")
TEXTURES = ("brick", "grass", "gravel", "moon")
SIDE = 320  # long side of every original, in pixels
DEDUP_TRUTH_SCHEMA = pa.schema([
    ("key", pa.string()),  # file stem: the key pairsift's folder reader gives the sample
    ("file", pa.string()),  # images/<file>
    ("family", pa.string()),  # one of FAMILIES (a copy has its original's)
    ("group", pa.string()),  # key of the original; every copy of it shares the group
    ("transform", pa.string()),  # copies: one of DEDUP_TRANSFORMS; originals: null
    ("width", pa.int32()),
    ("height", pa.int32()),
])

# Counts at scale 1: originals per family (photos and textures come from the packaged files).
_PROCEDURAL = {"text_page": 60, "sky": 24, "sea": 16, "snow": 16}
_COPIES_PER_ORIGINAL = 1.0
_WORDS = VOCABULARY + (
    "coffee", "bread", "salad", "soup", "pasta", "pizza", "cake", "tea", "juice", "water",
    "never", "give", "up", "keep", "going", "stay", "strong", "believe", "yourself", "smile",
    "exit", "stop", "parking", "closed", "push", "pull", "entrance", "private", "danger",
    "life", "is", "short", "make", "it", "count", "every", "day", "new", "start", "kind",
)
_PAGE_COLOURS = (((255, 255, 255), (20, 20, 20)), ((245, 240, 225), (40, 30, 20)),
                 ((20, 20, 20), (250, 250, 250)), ((30, 50, 90), (255, 255, 255)),
                 ((250, 220, 220), (90, 20, 20)))


@dataclass
class DedupCorpus:
    """Where the corpus is and what every sample is a copy of."""

    root: Path
    truth: pa.Table  # DEDUP_TRUTH_SCHEMA, one row per image

    @property
    def images(self) -> Path:
        return self.root / "images"

    @property
    def captions(self) -> Path:
        return self.root / "captions.csv"


def make_dedup_corpus(out_dir: str | Path, seed: int = 0, *, scale: float = 1.0,
                      families: tuple[str, ...] = FAMILIES) -> DedupCorpus:
    """Write ``images/``, ``captions.csv`` and ``truth.parquet`` into ``out_dir`` (absent or
    empty). ``scale`` multiplies the procedural counts (1.0: 366 images with every family);
    ``families`` keeps only some (tests use the procedural ones: no photo decoding). Same
    arguments, same bytes."""
    unknown = set(families) - set(FAMILIES)
    if unknown:
        raise ValueError(f"unknown families {sorted(unknown)}; choose from {FAMILIES}")
    root = new_folder(out_dir, "the corpus")
    (root / "images").mkdir()
    rng = np.random.default_rng(seed)
    originals = [o for o in _originals(rng, scale) if o.family in families]
    copies = _copies(rng, originals, round(_COPIES_PER_ORIGINAL * len(originals)))
    rows = []
    with open(root / "captions.csv", "w", newline="", encoding="utf-8") as f:
        table = csv.writer(f, lineterminator="\n")
        table.writerow(["file", "caption"])
        for i in rng.permutation(len(originals) + len(copies)):
            sample = (originals + copies)[i]
            file = f"dup_{len(rows):04d}.{sample.fmt}"
            (root / "images" / file).write_bytes(sample.data)
            table.writerow([file, sample.caption])
            rows.append({"key": Path(file).stem, "file": file, "family": sample.family,
                         "group": sample.group, "transform": sample.transform,
                         "width": sample.size[0], "height": sample.size[1]})
    truth = pa.Table.from_pylist(_name_groups(rows), schema=DEDUP_TRUTH_SCHEMA)
    pq.write_table(truth, root / "truth.parquet")
    return DedupCorpus(root, truth)


@dataclass
class _Sample:
    family: str
    group: str  # a unique id of the original, replaced by its key when written
    caption: str
    data: bytes
    fmt: str
    size: tuple[int, int]
    transform: str | None = None
    image: Image.Image | None = None  # originals only: the pixels copies are made from


def _name_groups(rows: list[dict]) -> list[dict]:
    """Replace each original's internal id by its key in every row of its group."""
    key_of = {r["group"]: r["key"] for r in rows if r["transform"] is None}
    return [{**r, "group": key_of[r["group"]]} for r in rows]


def _original(family: str, caption: str, image: Image.Image, fmt: str = "jpg") -> _Sample:
    image = _fit(image.convert("RGB"))
    group = f"{family}:{hashlib.sha1(image.tobytes()).hexdigest()[:12]}"
    return _Sample(family, group, caption, encode(image, fmt, quality=92), fmt, image.size,
                   image=image)


def _originals(rng: np.random.Generator, scale: float) -> list[_Sample]:
    out = []
    for photo in PHOTOS:
        family = "texture" if photo.stem in TEXTURES else "photo"
        if photo.stem not in TEXTURES:
            out.append(_original(family, photo.caption, photo_pixels(photo)))
        if photo.crops:
            out += [_original(family, photo.short, q) for q in _quarters(photo)]
    makers: dict[str, Callable[[np.random.Generator], Image.Image]] = {
        "sky": _sky, "sea": _sea, "snow": _snow}
    for family, count in _PROCEDURAL.items():
        for _ in range(max(1, round(count * scale))):
            if family == "text_page":
                out.append(_original(family, "a page of text", _text_page(rng), "png"))
            else:
                out.append(_original(family, f"a picture of {family}", makers[family](rng)))
    return out


def _quarters(photo: Photo) -> list[Image.Image]:
    """The four disjoint quarters of a photo: same subject, no shared pixels."""
    image = photo_pixels(photo)
    w, h = image.size
    return [image.crop((x, y, x + w // 2, y + h // 2)) for y in (0, h // 2) for x in (0, w // 2)]


def _fit(image: Image.Image) -> Image.Image:
    scale = SIDE / max(image.size)
    if scale >= 1:
        return image
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS)


# -- procedural originals --------------------------------------------------------------------
def _noise(rng: np.random.Generator, shape: tuple[int, int], sigma: tuple[float, float]
           ) -> np.ndarray:
    """Smooth noise scaled to [0, 1]."""
    field = gaussian_filter(rng.normal(size=shape), sigma)
    return (field - field.min()) / (np.ptp(field) or 1.0)


def _gradient(h: int, w: int, top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
    t = np.linspace(0, 1, h)[:, None, None]
    return np.broadcast_to(top * (1 - t) + bottom * t, (h, w, 3)).copy()


def _to_image(pixels: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _sky(rng: np.random.Generator) -> Image.Image:
    h, w = 240, 320
    top = np.array([40, 90, 180]) + rng.uniform(-20, 20, 3)
    sky = _gradient(h, w, top, np.array([170, 200, 235]))
    cover = rng.uniform(0.35, 0.6)
    cloud = _noise(rng, (h, w), (rng.uniform(6, 14), rng.uniform(10, 24)))
    alpha = np.clip((cloud - cover) / 0.25, 0, 1)[..., None]
    shade = 200 + 55 * _noise(rng, (h, w), 4)[..., None]
    return _to_image(sky * (1 - alpha) + shade * alpha)


def _sea(rng: np.random.Generator) -> Image.Image:
    h, w = 240, 320
    horizon = int(h * rng.uniform(0.3, 0.5))
    sky = _gradient(horizon, w, np.array([90, 140, 210]), np.array([190, 210, 235]))
    water = _gradient(h - horizon, w, np.array([30, 90, 120]) + rng.uniform(-15, 15, 3),
                      np.array([10, 50, 90]))
    waves = _noise(rng, (h - horizon, w), (rng.uniform(0.8, 2), rng.uniform(8, 20)))
    water += (waves[..., None] - 0.5) * 80
    return _to_image(np.concatenate([sky, water]))


def _snow(rng: np.random.Generator) -> Image.Image:
    h, w = 240, 320
    base = _gradient(h, w, np.array([225, 230, 240]), np.array([250, 250, 252]))
    drifts = _noise(rng, (h, w), (rng.uniform(10, 25), rng.uniform(20, 40)))
    grain = rng.normal(0, 4, (h, w))
    return _to_image(base - 35 * drifts[..., None] + grain[..., None])


def _text_page(rng: np.random.Generator) -> Image.Image:
    """A quote, a sign or a menu: plain background, one font, centred lines of words."""
    kind = ("quote", "sign", "menu")[int(rng.integers(3))]
    background, ink = _PAGE_COLOURS[int(rng.integers(len(_PAGE_COLOURS)))]
    image = Image.new("RGB", (SIDE, SIDE), background)
    draw = ImageDraw.Draw(image)
    n_lines, n_words, px = {"quote": (4, 3, 26), "sign": (2, 1, 56), "menu": (6, 1, 22)}[kind]
    lines = [" ".join(rng.choice(_WORDS, n_words)) for _ in range(n_lines)]
    if kind == "menu":
        lines = [f"{line} ..... {int(rng.integers(3, 30))}" for line in lines]
    font = _font(px)
    y = (SIDE - n_lines * px * 1.3) / 2
    for line in lines:
        draw.text((SIDE / 2, y), line.upper() if kind == "sign" else line, font=font, fill=ink,
                  anchor="mt")
        y += px * 1.3
    return image


def _font(px: int) -> ImageFont.FreeTypeFont:
    try:
        return ImageFont.truetype(FONTS[1], px)
    except OSError:  # DejaVu not installed: Pillow's bundled font keeps the corpus renderable
        return ImageFont.load_default(size=px)


# -- copies -----------------------------------------------------------------------------------
def _copies(rng: np.random.Generator, originals: list[_Sample], n: int) -> list[_Sample]:
    """``n`` copies; transforms cycle so each is used about equally, originals are drawn at
    random (some get several copies, whose pairs are duplicates too)."""
    picks = rng.integers(len(originals), size=n)
    return [_copy(rng, originals[p], DEDUP_TRANSFORMS[i % len(DEDUP_TRANSFORMS)])
            for i, p in enumerate(picks)]


def _copy(rng: np.random.Generator, original: _Sample, transform: str) -> _Sample:
    if transform == "exact":
        return _Sample(original.family, original.group, original.caption, original.data,
                       original.fmt, original.size, transform)
    image = _transformed(rng, original.image, transform)
    fmt = "webp" if transform == "webp" else "jpg"
    quality = {"jpeg_q30": 30, "webp": 75}.get(transform, 90)
    return _Sample(original.family, original.group, original.caption,
                   encode(image, fmt, quality), fmt, image.size, transform)


def _transformed(rng: np.random.Generator, image: Image.Image, transform: str) -> Image.Image:
    w, h = image.size
    transposes = {"hflip": Image.Transpose.FLIP_LEFT_RIGHT,
                  "vflip": Image.Transpose.FLIP_TOP_BOTTOM, "rot90": Image.Transpose.ROTATE_90,
                  "rot180": Image.Transpose.ROTATE_180, "rot270": Image.Transpose.ROTATE_270}
    if transform in transposes:
        return image.transpose(transposes[transform])
    if transform == "resize_50":
        return image.resize((w // 2, h // 2), Image.Resampling.LANCZOS)
    if transform == "center_crop_80":
        return image.crop((w // 10, h // 10, w - w // 10, h - h // 10))
    if transform == "random_crop":  # each side 80-95 %
        cw, ch = round(w * rng.uniform(0.8, 0.95)), round(h * rng.uniform(0.8, 0.95))
        x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        return image.crop((x0, y0, x0 + cw, y0 + ch))
    if transform == "rot_small":
        return _rotate_small(image, float(rng.uniform(2, 8) * rng.choice([-1, 1])))
    if transform == "border":
        fill = ("white", "black", "gray")[int(rng.integers(3))]
        return ImageOps.expand(image, border=round(rng.uniform(0.04, 0.1) * max(w, h)),
                               fill=fill)
    if transform == "text_overlay":
        return _overlay(rng, image)
    return image  # jpeg_q30 and webp change only the encoding


def _rotate_small(image: Image.Image, degrees: float) -> Image.Image:
    """Rotated by a few degrees and cropped to the largest centred box with no corner fill."""
    w, h = image.size
    a = math.radians(abs(degrees))
    f = 1 / (math.cos(a) + math.sin(a) * max(w / h, h / w))
    rotated = image.rotate(degrees, Image.Resampling.BICUBIC)
    cw, ch = round(w * f), round(h * f)
    x0, y0 = (w - cw) // 2, (h - ch) // 2
    return rotated.crop((x0, y0, x0 + cw, y0 + ch))


def _overlay(rng: np.random.Generator, image: Image.Image) -> Image.Image:
    words = tuple(str(w).upper() for w in rng.choice(VOCABULARY, int(rng.integers(1, 3)),
                                                     replace=False))
    plan = TextPlan(words=words, font=FONTS[1], size=float(rng.uniform(0.08, 0.14)),
                    style=int(rng.integers(5)), placement="random", stacked=False,
                    fx=float(rng.uniform()), fy=float(rng.uniform()))
    return draw_words(image, plan)[0]
