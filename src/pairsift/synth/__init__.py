"""Synthetic image-text corpora with known ground truth, built from real photographs.

The photographs ship inside scikit-image (see :mod:`.photos` for the captions); everything
else is made from them: exact and near duplicates, mismatched captions, rendered text with
parrot and control captions, corrupt files, a missing caption and missing images. Tests, the
``pairsift demo`` command and the benchmarks share it, so its truth table is the reference
that dedup, CLIP-score, parrot and decode checks are scored against.

``group`` marks duplicates by construction (an original, its byte copies and its transforms).
Other samples cut from the same photo are different crops of one scene: semantic dedup may
rightly pair them, so score it with ``photo`` and ``box`` too, above all in scaled corpora
(see :mod:`.plan`), where there are thousands of crops of 14 scenes.

>>> import tempfile
>>> from pairsift.synth import SynthConfig, make_corpus
>>> corpus = make_corpus(tempfile.mkdtemp(), SynthConfig(seed=1), layout="webdataset")
>>> corpus.count("exact_duplicate"), corpus.count("near_duplicate")
(4, 16)
>>> dup = corpus.rows("exact_duplicate")[0]
>>> original = [r for r in corpus.rows("original") if r["name"] == dup["group"]][0]
>>> dup["sha256"] == original["sha256"]
True
>>> sorted(r["expected_error"] for r in corpus.rows("corrupt"))
['corrupt', 'empty', 'truncated', 'unidentified']
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .layouts import Placed, new_folder, write_folder, write_parquet, write_webdataset
from .photos import PHOTOS, Photo
from .plan import (
    CORRUPTIONS,
    KINDS,
    LAYOUTS,
    TEXT_ROLES,
    TRANSFORMS,
    Spec,
    SynthConfig,
    make_plan,
)
from .render import Rendered, render
from .text import VOCABULARY, Drawn, tokens

__all__ = ["CORRUPTIONS", "KINDS", "LAYOUTS", "PHOTOS", "TEXT_ROLES", "TRANSFORMS",
           "TRUTH_SCHEMA", "VOCABULARY", "Corpus", "Photo", "SynthConfig", "make_corpus",
           "tokens"]

_BOX = pa.list_(pa.int32(), 4)
TRUTH_SCHEMA = pa.schema([
    ("name", pa.string()),  # planned file name (images/<name> in the folder layout)
    ("key", pa.string()),  # the key pairsift's reader gives the sample
    ("container", pa.string()),  # file/shard/parquet holding it, relative to root; null: none
    ("kind", pa.string()),  # one of KINDS
    ("group", pa.string()),  # name of the original shared by it and its duplicates
    ("photo", pa.string()),  # packaged photo the pixels come from
    ("box", _BOX),  # region of that photo shown, before any transform
    ("transform", pa.string()),  # near duplicates: one of TRANSFORMS
    ("transform_params", pa.string()),  # JSON
    ("caption", pa.string()),  # as stored; null: no caption
    ("true_caption", pa.string()),  # what the picture shows
    ("mismatched", pa.bool_()),  # caption describes a different photo
    ("expected_error", pa.string()),  # reason pairsift must record; null: usable
    ("caption_issue", pa.string()),  # "missing_caption" or null
    ("text_role", pa.string()),  # rendered_text: one of TEXT_ROLES
    ("drawn_words", pa.list_(pa.string())),  # exactly as drawn, in drawing order
    ("text_boxes", pa.list_(_BOX)),  # [x0, y0, x1, y1] of each drawn word, output pixels
    ("font", pa.string()),  # font the words were drawn with
    ("parrot_words", pa.list_(pa.string())),  # caption tokens that are drawn (tokens())
    ("mentioned_words", pa.list_(pa.string())),  # caption tokens from VOCABULARY
    ("subgroup", pa.string()),  # config.subgroups label of the photo
    ("format", pa.string()),  # file extension
    ("width", pa.int32()),  # of the decodable image; null otherwise
    ("height", pa.int32()),
    ("sha256", pa.string()),  # of the stored bytes
    ("uid", pa.string()),  # DataComp uid written with the sample (config.with_uids)
])

_WRITE_AHEAD = 64  # samples rendered ahead of the writer


@dataclass(frozen=True)
class _Facts:
    """What the truth needs from a render, without its bytes."""

    sha256: str | None
    width: int | None
    height: int | None
    drawn: Drawn | None


@dataclass
class Corpus:
    """A generated corpus: where it is and what each sample truly is."""

    root: Path
    layout: str
    truth: pa.Table  # TRUTH_SCHEMA, one row per sample, in storage order

    @property
    def source(self) -> Path:
        """What to ingest: the images folder, the shard folder, or the parquet file."""
        return {"folder": self.root / "images", "webdataset": self.root,
                "parquet": self.root / "samples.parquet"}[self.layout]

    @property
    def captions(self) -> Path | None:
        """The caption table of the folder layout (None for the others)."""
        return self.root / "captions.csv" if self.layout == "folder" else None

    def rows(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Truth rows as dicts, optionally of one kind."""
        return [r for r in self.truth.to_pylist() if kind is None or r["kind"] == kind]

    def count(self, kind: str) -> int:
        return self.truth.column("kind").to_pylist().count(kind)


def make_corpus(out_dir: str | Path, config: SynthConfig | None = None, *,
                layout: str = "folder", workers: int = 2) -> Corpus:
    """Write a corpus into ``out_dir`` (absent or empty, so no stale shard can join it) and
    its truth into ``out_dir/truth.parquet``. Same config and seed, same bytes. ``workers``
    threads render images (Pillow releases the GIL while resizing and encoding)."""
    config = config or SynthConfig()
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose one of {LAYOUTS}")
    root = new_folder(out_dir, "the corpus")
    specs = make_plan(config)
    facts: list[_Facts] = []
    items = _rendered(specs, facts, max(1, workers))
    if layout == "folder":
        placed = write_folder(root, items, config.with_uids)
    elif layout == "parquet":
        placed = write_parquet(root, items, config.with_uids)
    else:
        placed = write_webdataset(root, items, config.shard_size, config.with_uids)
    rows = [_truth_row(s, f, p, config, layout)
            for s, f, p in zip(specs, facts, placed, strict=True)]
    truth = pa.Table.from_pylist(rows, schema=TRUTH_SCHEMA)
    pq.write_table(truth, root / "truth.parquet")
    return Corpus(root, layout, truth)


def _rendered(specs: list[Spec], facts: list[_Facts],
              workers: int) -> Iterator[tuple[Spec, Rendered]]:
    """Specs with their renders, in order, a few chunks ahead of the writer; only the facts
    of each render are kept (appended to ``facts``), so memory stays bounded."""
    with ThreadPoolExecutor(workers) as pool:
        for start in range(0, len(specs), _WRITE_AHEAD):
            chunk = specs[start : start + _WRITE_AHEAD]
            for spec, rendered in zip(chunk, pool.map(render, chunk), strict=True):
                facts.append(_Facts(rendered.sha256, rendered.width, rendered.height,
                                    rendered.drawn))
                yield spec, rendered


def _truth_row(spec: Spec, facts: _Facts, placed: Placed, config: SynthConfig,
               layout: str) -> dict[str, Any]:
    drawn = list(spec.text.words) if spec.text else []
    caption_tokens = tokens(spec.caption or "")
    drawn_tokens = set(tokens(" ".join(drawn)))
    error = spec.error
    if error == "missing_image" and layout == "webdataset":
        error = "download_failed"  # img2dataset: a status row for a URL it could not fetch
    return {
        "name": spec.name, "key": placed.key, "container": placed.container,
        "kind": spec.kind, "group": spec.group, "photo": spec.photo.stem,
        "box": list(spec.box) if spec.box else None, "transform": spec.transform,
        "transform_params": json.dumps(spec.params) if spec.transform else None,
        "caption": spec.caption, "true_caption": spec.true_caption,
        "mismatched": spec.kind == "mismatched", "expected_error": error,
        "caption_issue": "missing_caption" if spec.caption is None else None,
        "text_role": spec.text_role, "drawn_words": drawn,
        "text_boxes": facts.drawn.boxes if facts.drawn else [],
        "font": facts.drawn.font if facts.drawn else None,
        "parrot_words": _unique(t for t in caption_tokens if t in drawn_tokens),
        "mentioned_words": _unique(t for t in caption_tokens if t in VOCABULARY),
        "subgroup": config.subgroups.get(spec.photo.stem),
        "format": None if spec.kind == "missing_image" else spec.fmt,
        "width": facts.width, "height": facts.height, "sha256": facts.sha256,
        "uid": spec.uid if config.with_uids else None,
    }


def _unique(words: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(words))
