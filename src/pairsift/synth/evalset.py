"""Evaluation sets held out from the synthetic training corpora, so the curate -> train ->
evaluate loop runs offline.

A corpus made by :func:`pairsift.synth.make_corpus` shows crops of the packaged photos; the
evaluation set shows other crops of them (drawn from a separate random stream, so no image is
byte-identical to a training one) with captions in phrasings the corpora never use. It holds:

- ``classes/<photo>/*.png`` and ``classnames.csv``: zero-shot classification, one class per
  photo (class name: the photo's short caption);
- ``retrieval.csv``: ``image,caption``, two captions per image;
- ``labels.csv``: ``image,label``, the photo's ``subgroups`` label (fairness), where given.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from .layouts import new_folder
from .photos import PHOTOS, Photo, photo_pixels

# Phrasings absent from every caption the corpora write (photo captions and parrot templates).
HELD_OUT_PHRASINGS = ("a picture showing {short}", "an image in which we see {short}")
_STREAM = 0x5EED_E7A1  # separates the evaluation set's random stream from the corpora's
SIDE = 224


@dataclass
class EvalSetConfig:
    seed: int = 0
    per_class: int = 6
    side: tuple[float, float] = (0.5, 0.75)  # crop side as a fraction of the photo's
    subgroups: dict[str, str] = field(default_factory=dict)


@dataclass
class EvalSet:
    root: Path

    @property
    def classes(self) -> Path:
        return self.root / "classes"

    @property
    def classnames(self) -> Path:
        return self.root / "classnames.csv"

    @property
    def retrieval(self) -> Path:
        return self.root / "retrieval.csv"

    @property
    def labels(self) -> Path:
        return self.root / "labels.csv"


def make_eval_set(out_dir: str | Path, config: EvalSetConfig | None = None) -> EvalSet:
    """Write the evaluation set into ``out_dir`` (absent or empty)."""
    config = config or EvalSetConfig()
    root = new_folder(out_dir, "the evaluation set")
    rng = np.random.default_rng([_STREAM, config.seed])
    photos = [p for p in PHOTOS if p.crops]
    retrieval, labels = [], []
    for photo in photos:
        folder = root / "classes" / photo.stem
        folder.mkdir(parents=True)
        for i in range(config.per_class):
            name = f"classes/{photo.stem}/{i:03d}.png"
            _crop(photo, rng, config.side).save(root / name)
            retrieval += [(name, p.format(short=photo.short)) for p in HELD_OUT_PHRASINGS]
            if photo.stem in config.subgroups:
                labels.append((name, config.subgroups[photo.stem]))
    _write(root / "classnames.csv", ("folder", "classname"), [(p.stem, p.short) for p in photos])
    _write(root / "retrieval.csv", ("image", "caption"), retrieval)
    if labels:
        _write(root / "labels.csv", ("image", "label"), labels)
    return EvalSet(root)


def _crop(photo: Photo, rng: np.random.Generator, side: tuple[float, float]) -> Image.Image:
    """A random crop that holds the photo's centre (what the short caption describes),
    resized to SIDE x SIDE."""
    image = photo_pixels(photo).convert("RGB")
    w, h = image.size
    cw, ch = (int(d * rng.uniform(*side)) for d in (w, h))
    x0 = int(rng.integers(max(0, w // 2 - cw), min(w - cw, w // 2) + 1))
    y0 = int(rng.integers(max(0, h // 2 - ch), min(h - ch, h // 2) + 1))
    return image.crop((x0, y0, x0 + cw, y0 + ch)).resize((SIDE, SIDE), Image.BICUBIC)


def _write(path: Path, header: tuple[str, str], rows: list[tuple[str, str]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
