"""Turn a SOURCE argument into named units of work, and read image bytes back from rows.

A unit is the piece of a source that becomes one workspace part: one tar shard, one parquet
file, or a fixed-size chunk of a folder's files. Units are listed in a stable order so a killed
ingest resumes where it stopped.
"""

from __future__ import annotations

import glob
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from braceexpand import braceexpand

from . import storage
from .folder import list_folder, read_entries
from .parquet import image_bytes, image_columns, read_parquet, read_parquet_image
from .records import (
    IMAGE_EXTENSIONS,
    RawSample,
    SampleError,
    arrow_file,
    path_text,
    text_path,
)
from .tables import CaptionTable, SourceError
from .webdataset import read_tar

KINDS = ("auto", "folder", "webdataset", "parquet")


@dataclass
class Unit:
    name: str
    shard_id: str  # the part of the uid recipe that names where inside the source a key lives
    read: Callable[[], Iterator[RawSample | SampleError]]


@dataclass
class Source:
    name: str
    kind: str
    paths: list[str]
    options: dict[str, Any] = field(default_factory=dict)
    units: list[Unit] = field(default_factory=list)
    ignored_files: int = 0


def _expand(spec: str) -> list[Path]:
    """Brace patterns (``shard-{00000..00009}.tar``) and globs, in sorted order."""
    paths: list[Path] = []
    for pattern in braceexpand(spec):
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        paths.extend(Path(m) for m in matches)
    return paths


def _detect(path: Path) -> str:
    if path.is_file():
        if path.suffix == ".tar":
            return "webdataset"
        if path.suffix == ".parquet":
            return "parquet"
        raise SourceError(f"{path}: a source file must be a .tar shard or a .parquet file")
    if any(path.glob("*.tar")):
        return "webdataset"
    has_images = any(p.suffix.lstrip(".").lower() in IMAGE_EXTENSIONS for p in path.rglob("*"))
    if not has_images and any(path.glob("*.parquet")):
        return "parquet"
    return "folder"


def _files(paths: list[Path], suffix: str) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        files.extend(sorted(path.glob(f"*{suffix}")) if path.is_dir() else [path])
    return [f.resolve() for f in files]


def open_source(
    spec: str,
    *,
    name: str | None = None,
    kind: str = "auto",
    captions: str | Path | None = None,
    image_column: str | None = None,
    caption_column: str | None = None,
    chunk_size: int = 10_000,
) -> Source:
    """Resolve a SOURCE argument (folder, shard, brace pattern, parquet file) to its units."""
    if kind not in KINDS:
        raise SourceError(f"unknown source kind {kind!r}; choose one of {KINDS}")
    if storage.is_url(spec):
        return _open_url(spec, name=name, kind=kind, image_column=image_column,
                         caption_column=caption_column)
    paths = _expand(str(spec))
    missing = [p for p in paths if not p.exists()]
    if not paths or missing:
        raise SourceError(f"{missing[0] if missing else spec}: no such file or directory")
    if kind == "auto":
        kinds = {_detect(p) for p in paths}
        if len(kinds) > 1:
            raise SourceError(f"{spec}: mixes {sorted(kinds)}; pass --kind")
        kind = kinds.pop()
    base = paths[0] if len(paths) == 1 else paths[0].parent
    source = Source(
        name=name or path_text(base.stem if base.is_file() else base.resolve().name),
        kind=kind,
        paths=[str(p.resolve()) for p in paths],
        options={"captions": str(Path(captions).resolve()) if captions else None,
                 "image_column": image_column, "caption_column": caption_column},
    )
    if kind == "webdataset":
        source.units = [_file_unit(t, lambda t=t: read_tar(t)) for t in _files(paths, ".tar")]
    elif kind == "parquet":
        source.units = [_file_unit(p, lambda p=p: read_parquet(p, image_column, caption_column))
                        for p in _files(paths, ".parquet")]
    else:
        _folder_units(source, paths, captions, image_column, caption_column, chunk_size)
    return source


def _open_url(spec: str, *, name: str | None, kind: str, image_column: str | None,
              caption_column: str | None) -> Source:
    """WebDataset shards or Parquet files on object storage (see :mod:`.storage`)."""
    urls = storage.expand_url(spec)
    if kind == "auto":  # as for a local folder: the shards when there are any (img2dataset
        # writes a status .parquet beside each one)
        kind = "webdataset" if any(u.endswith(".tar") for u in urls) else "parquet"
    urls = [u for u in urls if u.endswith(".tar" if kind == "webdataset" else ".parquet")]
    if kind == "folder" or not urls:
        raise SourceError(f"{spec}: no .tar or .parquet object there (a source on object "
                          "storage is WebDataset shards or Parquet files)")
    source = Source(name=name or path_text(_url_base(spec, urls)), kind=kind, paths=urls,
                    options={"captions": None, "image_column": image_column,
                             "caption_column": caption_column})
    read = (read_tar if kind == "webdataset" else
            partial(read_parquet, image_column=image_column, caption_column=caption_column))
    source.units = [_file_unit(u, partial(read, u)) for u in urls]
    return source


def _url_base(spec: str, urls: list[str]) -> str:
    """The source's default name, as for local paths: one object's stem, else the name of
    the prefix ("folder") that holds the objects."""
    if urls == [spec]:
        return Path(storage.name(spec)).stem
    if not any(c in spec for c in "*?[{"):
        return storage.name(spec)
    return storage.name(urls[0].rsplit("/", 1)[0])


def _file_unit(path: Path | str, read: Callable[[], Iterator[RawSample | SampleError]]
               ) -> Unit:
    name = path_text(storage.name(path))
    return Unit(name, name, lambda: _whole_file_errors(path, read))


def _whole_file_errors(path: Path | str, read: Callable[[], Iterator[RawSample | SampleError]]
                       ) -> Iterator[RawSample | SampleError]:
    """A shard's items; if the file itself cannot be read, the items read until then and one
    ``broken_shard`` error, so that the run goes on with the next shard."""
    try:
        yield from read()
    except (OSError, EOFError, tarfile.TarError, pa.ArrowException, SourceError) as exc:
        shard = path_text(path)
        yield SampleError("", shard, "broken_shard", f"{shard}: {type(exc).__name__}: {exc}")


def _folder_units(source: Source, paths: list[Path], captions, image_column, caption_column,
                  chunk_size: int) -> None:
    if len(paths) != 1 or not paths[0].is_dir():
        raise SourceError(f"{paths[0]}: a folder source is one directory")
    root = paths[0].resolve()
    table = (CaptionTable(Path(captions), root, image_column, caption_column)
             if captions else None)
    entries, source.ignored_files = list_folder(root, table)
    for start in range(0, max(len(entries), 1), chunk_size):
        chunk = entries[start:start + chunk_size]
        source.units.append(Unit(f"files[{start}:{start + len(chunk)}]", "",
                                 lambda c=chunk: read_entries(root, c)))


class ImageBytesReader:
    """Reads the image bytes of many rows with one open handle per shard.

    Rows of a part come in file order, so parquet images are streamed batch by batch instead
    of re-reading a row group for every row.
    """

    def __init__(self, image_columns: dict[str, str | None] | None = None):
        self._image_columns = image_columns or {}
        self._tars: dict[str, Any] = {}
        self._parquet: dict[str, _ParquetCursor] = {}

    def read(self, row: dict[str, Any]) -> bytes:
        container, shard = row["container"], row["shard"]
        if container == "tar":
            f = self._tars.get(shard)
            if f is None:  # closed in close()
                f = self._tars[shard] = storage.open_binary(text_path(shard))
            f.seek(row["offset"])
            return f.read(row["length"])
        if container == "parquet":
            column = self._image_columns.get(row["source"])
            cursor = self._parquet.get(shard)
            if cursor is None or cursor.row > row["offset"]:
                cursor = self._parquet[shard] = _ParquetCursor(text_path(shard), column)
            return cursor.read(row["offset"])
        return read_image_bytes(container, shard, row["offset"], row["length"])

    def close(self) -> None:
        for f in self._tars.values():
            f.close()
        self._tars.clear()
        self._parquet.clear()

    def __enter__(self) -> ImageBytesReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _ParquetCursor:
    def __init__(self, path: str, image_column: str | None):
        column, _ = image_columns(path, image_column, None)
        self._batches = pq.ParquetFile(arrow_file(path)).iter_batches(batch_size=256,
                                                                       columns=[column])
        self._values: list = []
        self._start = 0
        self.row = 0

    def read(self, row: int) -> bytes:
        while row >= self._start + len(self._values):
            self._start += len(self._values)
            self._values = next(self._batches).column(0).to_pylist()
        self.row = row
        data = image_bytes(self._values[row - self._start])
        if data is None:
            raise SourceError(f"row {row} holds no image bytes")
        return data


def read_image_bytes(container: str, shard: str, offset: int, length: int,
                     image_column: str | None = None) -> bytes:
    """The original bytes of one sample's image, wherever the row says they are."""
    path = text_path(shard)
    if container == "file":
        return Path(path).read_bytes()
    if container == "tar":
        with storage.open_binary(path) as f:
            f.seek(offset)
            return f.read(length)
    if container == "parquet":
        return read_parquet_image(path, offset, image_column)
    raise SourceError(f"unknown container {container!r} for {shard}")
