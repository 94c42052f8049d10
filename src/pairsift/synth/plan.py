"""What the corpus holds, decided up front from the seed: one :class:`Spec` per sample.

Every random choice is made here, so rendering a spec is a pure function (an exact duplicate
is its original rendered again, byte for byte) and the layout only decides how specs are
stored. Samples that are not duplicates by construction show crops ("views", each side 50-75%
of the photo's, so the centre the short caption describes stays in) placed to overlap the other
crops of the same photo as little as possible: IoU <= 0.5 while there is room, which holds in
the small corpus; at thousands of samples the 14 croppable photos run out of room and the
closest sibling crop overlaps more (median IoU ~0.75 at 2,000 samples, ~0.84 at 10,000).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .photos import PHOTOS, Photo, photo_pixels
from .text import FONTS, PLACEMENTS, STYLES, VOCABULARY, TextPlan, placement_y

KINDS = ("original", "exact_duplicate", "near_duplicate", "mismatched", "rendered_text",
         "corrupt", "missing_caption", "missing_image")
TRANSFORMS = ("jpeg_q30", "resize_60", "center_crop_90", "random_crop", "hflip",
              "brighten_30", "border", "webp")
TEXT_ROLES = ("parrot", "drawn_only", "mentioned_only")
CORRUPTIONS = ("truncated", "unidentified", "empty", "corrupt")
LAYOUTS = ("folder", "webdataset", "parquet")

_COUNT_FIELDS = {"original": "originals", "exact_duplicate": "exact_duplicates",
                 "near_duplicate": "near_duplicates", "mismatched": "mismatched",
                 "rendered_text": "rendered_text", "corrupt": "corrupt",
                 "missing_caption": "missing_captions", "missing_image": "missing_images"}
_CAPTION_TEMPLATES = ("{words}", "{words} - {scene}", "{scene} with the words {words}",
                      "{words}: {scene}")
_VIEW_SIDE = (0.5, 0.75)  # crop side as a fraction of the photo's side
_MAX_VIEW_IOU = 0.5
_VIEW_TRIES = 16
_CROPPABLE = tuple(p for p in PHOTOS if p.crops)


@dataclass
class SynthConfig:
    """How many samples of each kind, and how they are stored.

    The counts give a small corpus (57 samples). ``n_samples`` scales every count to that
    total in the same proportions (originals take the rounding); originals beyond the 15
    packaged photos are crops of them. ``subgroups`` maps a photo stem (``"chelsea"``) to a
    label that every sample cut from that photo carries (near duplicates inherit it), for
    fairness tests; photos not in it get none.
    """

    seed: int = 0
    n_samples: int | None = None
    originals: int = 15
    exact_duplicates: int = 4
    near_duplicates: int = 16  # cycles through ``transforms``
    mismatched: int = 6
    rendered_text: int = 9  # cycles through TEXT_ROLES
    corrupt: int = 4  # cycles through CORRUPTIONS
    missing_captions: int = 1  # an image with no caption
    missing_images: int = 2  # folder/parquet: caption without image; webdataset: failed download
    transforms: tuple[str, ...] = TRANSFORMS
    max_side: int = 384  # crops are resized to fit; the packaged photos keep their size
    shard_size: int = 32  # webdataset samples (failed downloads included) per shard
    with_uids: bool = False  # DataComp "uid" in webdataset json, parquet and captions.csv
    subgroups: dict[str, str] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        """Samples per kind, after ``n_samples`` scaling."""
        counts = {kind: getattr(self, name) for kind, name in _COUNT_FIELDS.items()}
        if self.n_samples is None:
            return counts
        total = sum(counts.values())
        scaled = {k: round(v * self.n_samples / total) for k, v in counts.items()
                  if k != "original"}
        return {"original": self.n_samples - sum(scaled.values()), **scaled}

    def validate(self) -> None:
        """Reject impossible settings here rather than deep inside generation."""
        counts = self.counts()
        if any(v < 0 for v in counts.values()):
            raise ValueError(f"sample counts must be >= 0, got {counts}")
        if counts["original"] < 1 and counts["exact_duplicate"] + counts["near_duplicate"]:
            raise ValueError("duplicates need at least one original")
        if counts["near_duplicate"] and not self.transforms:
            raise ValueError("near duplicates need at least one transform")
        unknown = set(self.transforms) - set(TRANSFORMS)
        if unknown:
            raise ValueError(f"unknown transforms {sorted(unknown)}; choose from {TRANSFORMS}")
        if not 1 <= self.shard_size <= 10_000:
            raise ValueError("shard_size must be in 1..10000 (keys are 5+4 digits)")
        if self.max_side < 32:
            raise ValueError("max_side must be at least 32 pixels")
        unknown = set(self.subgroups) - {p.stem for p in PHOTOS}
        if unknown:
            raise ValueError(f"subgroups name unknown photos {sorted(unknown)}")


@dataclass
class Spec:
    """One sample: which pixels, which caption, and what the truth says about it."""

    kind: str
    photo: Photo
    box: tuple[int, int, int, int] | None  # region of the photo shown; None: no image
    size: tuple[int, int] | None  # pixels before any transform
    full: bool  # the packaged file itself, bytes verbatim
    fmt: str  # file extension
    caption: str | None
    true_caption: str
    base: Spec | None = None  # the original a duplicate was made from
    transform: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    text: TextPlan | None = None
    text_role: str | None = None
    error: str | None = None
    seed: int = 0
    name: str = ""
    group: str | None = None
    uid: str = ""


def make_plan(config: SynthConfig) -> list[Spec]:
    """All samples in storage order, named, grouped and with uids."""
    config.validate()
    rng = np.random.default_rng(config.seed)
    counts = config.counts()
    views = _Views(rng, config.max_side)
    originals = _originals(rng, views, counts["original"])
    specs = [
        *originals,
        *(_exact(o) for o in _pick(rng, originals, counts["exact_duplicate"])),
        *(_near(rng, o, config.transforms[i % len(config.transforms)])
          for i, o in enumerate(_pick(rng, originals, counts["near_duplicate"]))),
        *(_mismatched(rng, views) for _ in range(counts["mismatched"])),
        *(_rendered(rng, views, TEXT_ROLES[i % 3]) for i in range(counts["rendered_text"])),
        *(_corrupt(rng, views, CORRUPTIONS[i % 4]) for i in range(counts["corrupt"])),
        *(_missing_caption(views) for _ in range(counts["missing_caption"])),
        *(_missing_image(rng) for _ in range(counts["missing_image"])),
    ]
    specs = [specs[i] for i in rng.permutation(len(specs))]
    width = max(4, len(str(len(specs) - 1)))
    for i, spec in enumerate(specs):
        spec.name = f"img_{i:0{width}d}.{spec.fmt}"
        spec.uid = rng.bytes(16).hex()
    for spec in specs:
        if spec.base is not None:
            spec.group = spec.base.group = spec.base.name
    return specs


def _pick(rng: np.random.Generator, items: list[Spec], n: int) -> list[Spec]:
    """``n`` items spread as evenly as possible (each used once before any is reused)."""
    if not n:
        return []
    rounds = -(-n // len(items))
    return [items[i] for r in range(rounds) for i in rng.permutation(len(items))][:n]


def _originals(rng: np.random.Generator, views: _Views, n: int) -> list[Spec]:
    photos = [PHOTOS[i] for i in rng.permutation(len(PHOTOS))[: min(n, len(PHOTOS))]]
    full = [_full(p) for p in photos]
    return full + [views.spec("original") for _ in range(n - len(full))]


def _full(photo: Photo) -> Spec:
    size = photo_pixels(photo).size
    return Spec("original", photo, (0, 0, *size), size, True, Path(photo.file).suffix[1:],
                photo.caption, photo.caption)


def _exact(original: Spec) -> Spec:
    return Spec("exact_duplicate", original.photo, original.box, original.size, original.full,
                original.fmt, original.caption, original.true_caption, base=original)


def _near(rng: np.random.Generator, original: Spec, transform: str) -> Spec:
    params = _transform_params(rng, transform, original.size)
    fmt = "webp" if transform == "webp" else "jpg"
    return Spec("near_duplicate", original.photo, original.box, original.size, False, fmt,
                original.caption, original.true_caption, base=original, transform=transform,
                params=params)


def _transform_params(rng: np.random.Generator, transform: str,
                      size: tuple[int, int]) -> dict[str, Any]:
    w, h = size
    if transform == "random_crop":  # each side >= 90%, so the area is >= 81%
        cw, ch = round(w * rng.uniform(0.9, 1.0)), round(h * rng.uniform(0.9, 1.0))
        x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        return {"box": [x0, y0, x0 + cw, y0 + ch]}
    if transform == "border":
        return {"pixels": max(4, round(0.08 * max(w, h))),
                "fill": ["black", "white", "gray"][int(rng.integers(3))]}
    return {"jpeg_q30": {"quality": 30}, "resize_60": {"scale": 0.6},
            "center_crop_90": {"fraction": 0.9}, "brighten_30": {"factor": 1.3},
            "webp": {"quality": 75}, "hflip": {}}[transform]


def _mismatched(rng: np.random.Generator, views: _Views) -> Spec:
    spec = views.spec("mismatched")
    others = [p for p in PHOTOS if p != spec.photo]
    spec.caption = others[int(rng.integers(len(others)))].caption
    return spec


def _words(rng: np.random.Generator) -> list[str]:
    n = int(rng.integers(1, 4))
    return [str(w) for w in rng.choice(VOCABULARY, n, replace=False)]


def _rendered(rng: np.random.Generator, views: _Views, role: str) -> Spec:
    spec = views.spec("rendered_text")
    spec.text_role = role
    words = _words(rng)
    if role != "mentioned_only":
        spec.text = _text_plan(rng, words)
    if role == "drawn_only":
        return spec  # captioned with the scene only: text present, not parroted
    mentioned = words[: int(rng.integers(1, len(words) + 1))]  # the first k, in drawn order
    cased = [w.title() if rng.random() < 0.5 else w for w in mentioned]
    template = _CAPTION_TEMPLATES[int(rng.integers(len(_CAPTION_TEMPLATES)))]
    spec.caption = template.format(words=" ".join(cased), scene=spec.true_caption)
    return spec


def _text_plan(rng: np.random.Generator, words: list[str]) -> TextPlan:
    case = int(rng.integers(3))
    drawn = tuple(w.upper() if case == 0 else w.title() if case == 1 else w for w in words)
    placement = PLACEMENTS[int(rng.integers(len(PLACEMENTS)))]
    fx, fy = float(rng.uniform()), float(rng.uniform())
    return TextPlan(
        words=drawn,
        font=FONTS[int(rng.integers(len(FONTS)))],
        size=float(rng.uniform(0.07, 0.16)),
        style=int(rng.integers(len(STYLES))),
        placement=placement,
        stacked=len(words) > 1 and rng.uniform() < 0.3,
        fx=fx if placement == "random" else 0.5,
        fy=placement_y(placement, fy),
    )


def _corrupt(rng: np.random.Generator, views: _Views, reason: str) -> Spec:
    spec = views.spec("corrupt")
    spec.error, spec.fmt = reason, "png" if reason == "corrupt" else "jpg"
    spec.seed = int(rng.integers(2**31))
    return spec


def _missing_caption(views: _Views) -> Spec:
    spec = views.spec("missing_caption")
    spec.caption = None
    return spec


def _missing_image(rng: np.random.Generator) -> Spec:
    photo = PHOTOS[int(rng.integers(len(PHOTOS)))]
    return Spec("missing_image", photo, None, None, False, "jpg", photo.short, photo.short,
                error="missing_image", seed=int(rng.integers(2**31)))


class _Views:
    """Crops of the photos, cycling through them, spread to overlap each other little."""

    def __init__(self, rng: np.random.Generator, max_side: int):
        self._rng = rng
        self._max_side = max_side
        self._cycle: list[Photo] = []
        self._boxes: dict[str, np.ndarray] = defaultdict(lambda: np.zeros((0, 4), int))

    def spec(self, kind: str) -> Spec:
        """A new view of the next photo, captioned with what any crop of it shows."""
        photo = self._next_photo()
        box = self._box(photo)
        w, h = box[2] - box[0], box[3] - box[1]
        scale = min(1.0, self._max_side / max(w, h))
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        return Spec(kind, photo, box, size, False, "jpg", photo.short, photo.short)

    def _next_photo(self) -> Photo:
        if not self._cycle:
            self._cycle = [_CROPPABLE[i] for i in self._rng.permutation(len(_CROPPABLE))]
        return self._cycle.pop()

    def _box(self, photo: Photo) -> tuple[int, int, int, int]:
        w, h = photo_pixels(photo).size
        fw, fh = (self._rng.uniform(*_VIEW_SIDE, _VIEW_TRIES) for _ in range(2))
        x0, y0 = self._rng.uniform(0, 1 - fw) * w, self._rng.uniform(0, 1 - fh) * h
        cands = np.stack([x0, y0, x0 + fw * w, y0 + fh * h], axis=1).round().astype(int)
        previous = self._boxes[photo.stem]
        worst = _max_iou(cands, previous) if len(previous) else np.zeros(_VIEW_TRIES)
        ok = np.flatnonzero(worst <= _MAX_VIEW_IOU)
        chosen = cands[ok[0] if ok.size else int(np.argmin(worst))]
        self._boxes[photo.stem] = np.vstack([previous, chosen])
        return tuple(int(v) for v in chosen)


def _max_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """For each box in ``a``, its largest IoU with any box in ``b``."""
    a, b = a[:, None, :], b[None, :, :]
    ix = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    iy = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = ix * iy
    return (inter / (_area(a) + _area(b) - inter)).max(axis=1)


def _area(boxes: np.ndarray) -> np.ndarray:
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
