"""Evaluation sets a user brings, read into paths, captions and labels.

- classification: a folder with one sub-folder of images per class; class names are the folder
  names (``_`` read as a space) or come from a two-column table ``folder,classname``;
- retrieval: an image-caption table (one row per caption: an image with several captions has
  several rows) or a WebDataset (a ``.tar`` or a folder of them; each sample's ``txt`` holds
  one caption per line, as in clip_benchmark's retrieval shards);
- fairness: a table of images with an attribute column, and a prompt table ``template,concept``
  (every template is filled with every concept); the default table holds the templates and
  concepts of Berg et al. 2022 (github.com/oxai/debias-vision-lang, MIT licence);
- fidelity: a table of generated images with their prompt, and a folder of reference images.
Relative image paths in a table are relative to the table's folder.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import ConfigError
from ..io.records import image_files
from ..io.tables import CAPTION_COLUMNS, IMAGE_COLUMNS, pick_column, read_table

BERG_PROMPTS = "berg_prompts.csv"


@dataclass
class ClassificationSet:
    images: list[Path]
    targets: np.ndarray
    classnames: list[str]


def class_folders(root: Path, classnames: Path | None = None) -> ClassificationSet:
    """Images under ``root/<class folder>/``, targets in sorted folder order."""
    folders = sorted(p for p in Path(root).iterdir() if p.is_dir())
    if not folders:
        raise ConfigError(f"{root}: zero-shot needs one sub-folder of images per class")
    names = {f.name: f.name.replace("_", " ") for f in folders}
    if classnames is not None:
        table = read_table(classnames).to_pydict()
        if set(table) != {"folder", "classname"}:
            raise ConfigError(f"{classnames}: a class name table has columns folder,classname")
        names.update(zip(table["folder"], table["classname"], strict=True))
    images, targets = [], []
    for target, folder in enumerate(folders):
        files_ = image_files(folder)
        images += files_
        targets += [target] * len(files_)
    if not images:
        raise ConfigError(f"{root}: no images in the class folders")
    return ClassificationSet(images, np.asarray(targets), [names[f.name] for f in folders])


@dataclass
class CaptionSet:
    """Images (paths, or decoded for WebDataset) and captions; ``text_image[j]`` is the index
    of caption ``j``'s image."""

    images: list[Path] | list[Image.Image]
    captions: list[str]
    text_image: np.ndarray


def caption_set(path: Path, image_column: str | None = None,
                caption_column: str | None = None) -> CaptionSet:
    path = Path(path)
    if path.is_dir() or path.suffix == ".tar":
        return _webdataset_captions(path)
    table = read_table(path)
    image_col = pick_column(table, image_column, IMAGE_COLUMNS, "image", path)
    caption_col = pick_column(table, caption_column, CAPTION_COLUMNS, "caption", path)
    index: dict[str, int] = {}
    text_image = [index.setdefault(p, len(index)) for p in table.column(image_col).to_pylist()]
    images = [_resolve(path.parent, p) for p in index]
    return CaptionSet(images, table.column(caption_col).to_pylist(), np.asarray(text_image))


def _webdataset_captions(path: Path) -> CaptionSet:
    import webdataset as wds

    shards = sorted(path.glob("*.tar")) if path.is_dir() else [path]
    if not shards:
        raise ConfigError(f"{path}: no .tar shards")
    dataset = (wds.WebDataset([str(s) for s in shards], shardshuffle=False, empty_check=False)
               .decode("pilrgb").to_tuple("jpg;jpeg;png;webp", "txt"))
    images, captions, text_image = [], [], []
    for image, text in dataset:
        lines = [line for line in text.splitlines() if line.strip()]
        captions += lines
        text_image += [len(images)] * len(lines)
        images.append(image)
    return CaptionSet(images, captions, np.asarray(text_image))


def _resolve(base: Path, value: str) -> Path:
    p = Path(value)
    return p if p.is_absolute() else base / p


@dataclass
class LabelledSet:
    images: list[Path]
    labels: np.ndarray  # integer codes into ``names``
    names: list[str]


def labelled_images(path: Path, attribute: str, image_column: str | None = None) -> LabelledSet:
    table = read_table(Path(path))
    image_col = pick_column(table, image_column, IMAGE_COLUMNS, "image", Path(path))
    if attribute not in table.column_names:
        raise ConfigError(f"{path}: no attribute column {attribute!r}; columns are "
                          f"{table.column_names}")
    values = [str(v) for v in table.column(attribute).to_pylist()]
    names = sorted(set(values))
    codes = np.asarray([names.index(v) for v in values])
    images = [_resolve(Path(path).parent, p) for p in table.column(image_col).to_pylist()]
    return LabelledSet(images, codes, names)


def concept_prompts(path: Path | None = None) -> list[tuple[str, str]]:
    """(prompt, concept) for every template x concept of a ``template,concept`` table (a
    column may be shorter than the other); default: Berg et al.'s templates and concepts."""
    text = (Path(path).read_text() if path else
            files("pairsift.evaluation").joinpath(BERG_PROMPTS).read_text())
    rows = list(csv.DictReader(text.splitlines()))
    if not rows or set(rows[0]) != {"template", "concept"}:
        raise ConfigError(f"{path or BERG_PROMPTS}: a prompt table has columns template,concept")
    templates = [r["template"].strip() for r in rows if (r["template"] or "").strip()]
    concepts = [r["concept"].strip() for r in rows if (r["concept"] or "").strip()]
    return [(t.format(c), c) for t in templates for c in concepts]


@dataclass
class GeneratedSet:
    images: list[Path]
    prompts: list[str]
    references: list[Path]


def generated_images(path: Path, references: Path, image_column: str | None = None,
                     prompt_column: str = "prompt") -> GeneratedSet:
    table = read_table(Path(path))
    image_col = pick_column(table, image_column, IMAGE_COLUMNS, "image", Path(path))
    prompt_col = pick_column(table, prompt_column, ("prompt",), "prompt", Path(path))
    refs = image_files(Path(references))
    if not refs:
        raise ConfigError(f"{references}: no reference images")
    images = [_resolve(Path(path).parent, p) for p in table.column(image_col).to_pylist()]
    return GeneratedSet(images, table.column(prompt_col).to_pylist(), refs)


def batches(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]
