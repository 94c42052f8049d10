"""Caption tables (CSV, TSV, JSONL, Parquet) that map image files to captions.

A caption table is read as written and one bad row never refuses the whole table: every cell
is text (``"0012"`` stays ``0012``, whatever the quoting), invalid UTF-8 is replaced and flagged
on its own sample, a row that cannot be parsed is recorded (``bad_caption_row``) and dropped,
the first row for an image wins and each later one is recorded (``duplicate_caption_row``),
and a row naming a file outside the folder is an error (``outside_source``), never read.
Rows are numbered from 1, header not counted (a JSONL row is a non-blank line).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from ..errors import SourceError
from .records import SampleError, arrow_file, caption_value, path_text, valid_uid

IMAGE_COLUMNS = ("file", "filepath", "filename", "image", "image_path", "path")
CAPTION_COLUMNS = ("caption", "text", "title", "txt", "alt")


def read_table(path: Path) -> pa.Table:
    """Read CSV, TSV, JSONL or Parquet by extension; CSV columns always come back as strings."""
    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".tsv"):
            parse = _csv_parse_options(suffix)
            return pacsv.read_csv(path, parse_options=parse, convert_options=pacsv.ConvertOptions(
                strings_can_be_null=False,
                column_types=dict.fromkeys(_csv_columns(path, parse), pa.string())))
        if suffix in (".jsonl", ".json"):
            return pajson.read_json(path)
        if suffix == ".parquet":
            return pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise SourceError(f"{path}: cannot read the caption table: {exc}") from exc
    raise SourceError(f"{path}: caption tables must be .csv, .tsv, .jsonl or .parquet")


def _csv_parse_options(suffix: str, **options: Any) -> pacsv.ParseOptions:
    return pacsv.ParseOptions(delimiter="\t" if suffix == ".tsv" else ",",
                              newlines_in_values=True, **options)


def _csv_columns(path: Path | pa.NativeFile, parse: pacsv.ParseOptions) -> list[str]:
    """Column names as Arrow's CSV parser reads the header, quoted or not."""
    with pacsv.open_csv(path, parse_options=parse) as reader:
        return reader.schema.names


def pick_column(table: pa.Table, wanted: str | None, candidates: tuple[str, ...],
                what: str, path: Path) -> str:
    """The column the user named, or the first conventional name present."""
    return _pick(table.column_names, wanted, candidates, what, path)


def _pick(names: list[str], wanted: str | None, candidates: tuple[str, ...], what: str,
          path: Path) -> str:
    if wanted is not None:
        if wanted not in names:
            raise SourceError(f"{path}: no {what} column {wanted!r}; columns are {names}")
        return wanted
    for name in candidates:
        if name in names:
            return name
    raise SourceError(
        f"{path}: cannot tell which column holds the {what} (tried {list(candidates)}); "
        f"columns are {names}: pass --{what}-column"
    )


@dataclass(frozen=True)
class TableRow:
    caption: bytes | str | None  # as written: decode_caption flags what is wrong with it
    uid: str | None


class CaptionTable:
    """Rows of a caption table indexed by the image path they name, relative to ``root``.

    ``issues`` holds the rows that name no usable image of the folder (outside it, again, or
    unparseable); :meth:`take` hands each row out once and :meth:`unmatched` reports the rest.
    """

    def __init__(self, path: Path, root: Path, image_column: str | None = None,
                 caption_column: str | None = None):
        self.path = path.resolve()
        self._root = str(root)
        self._real_dirs: dict[str, str] = {}  # a folder's real path, looked up once
        self._shard = path_text(self.path)
        self.issues: list[SampleError] = []
        columns, bad_rows = _read_columns(self.path)
        image_col = _pick(list(columns), image_column, IMAGE_COLUMNS, "image", path)
        caption_col = _pick(list(columns), caption_column, CAPTION_COLUMNS, "caption", path)
        names = columns[image_col]
        uids = columns.get("uid", [None] * len(names))
        self._rows: dict[str, TableRow] = {}
        self._names: dict[str, tuple[str, int]] = {}  # relative path -> (name, row number)
        for number, (name, caption, uid) in enumerate(
                zip(names, columns[caption_col], uids, strict=True), 1):
            self._add(number, _file_name(name), TableRow(caption_value(caption), _uid(uid)))
        for text in bad_rows:
            self._issue("", "bad_caption_row", f"a row that cannot be parsed was dropped: {text}")

    def _add(self, number: int, name: str, row: TableRow) -> None:
        if not name:
            self._issue("", "bad_caption_row", f"row {number} names no image")
            return
        rel = self._relative(name)
        if rel is None:
            self._issue(name, "outside_source",
                        f"row {number} names a file outside the source {path_text(self._root)}")
        elif rel in self._names:
            self._issue(name, "duplicate_caption_row",
                        f"row {number} names {path_text(rel)} again and was dropped; "
                        f"row {self._names[rel][1]} was kept (the first row wins)")
        else:
            self._rows[rel] = row
            self._names[rel] = (name, number)

    def _issue(self, name: str, reason: str, detail: str) -> None:
        self.issues.append(SampleError(path_text(name), self._shard, reason,
                                       f"{self._shard}: {detail}"))

    def _relative(self, name: str) -> str | None:
        """``name`` (relative to the root, or absolute) as the path the folder walk lists,
        or None when it leads outside. Folders on the way are resolved (the walk lists the
        real one); a link as the file itself is kept, and checked when the file is read."""
        folder, file = os.path.split(os.path.join(self._root, name))
        real = self._real_dirs.get(folder)
        if real is None:
            real = self._real_dirs[folder] = os.path.realpath(folder)
        path = os.path.join(real, file)
        return path[len(self._root) + 1:] if path.startswith(self._root + os.sep) else None

    def take(self, rel: str) -> TableRow | None:
        """The row naming ``rel`` (a path relative to the root), at most once."""
        return self._rows.pop(rel, None)

    def unmatched(self) -> list[SampleError]:
        """Rows whose image is not in the folder (every row not taken)."""
        return [SampleError(path_text(self._names[rel][0]), self._shard, "missing_image",
                            f"{self._shard}: row {self._names[rel][1]} names "
                            f"{path_text(self._names[rel][0])} but no such file is in "
                            f"{path_text(self._root)}")
                for rel in self._rows]


def _read_columns(path: Path) -> tuple[dict[str, list], list[str]]:
    """Every column as Python values (CSV cells as bytes, as written), and the rows that
    could not be parsed."""
    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".tsv"):
            return _read_csv(path, suffix)
        if suffix in (".jsonl", ".json"):
            return _read_jsonl(path)
        if suffix == ".parquet":
            with arrow_file(path) as f:
                return pq.read_table(f).to_pydict(), []
    except (pa.ArrowException, OSError) as exc:
        raise SourceError(f"{path}: cannot read the caption table: {exc}") from exc
    raise SourceError(f"{path}: caption tables must be .csv, .tsv, .jsonl or .parquet")


def _read_csv(path: Path, suffix: str) -> tuple[dict[str, list], list[str]]:
    bad: list[str] = []

    def drop(row: pacsv.InvalidRow) -> str:
        bad.append(f"{row.text[:200]!r} has {row.actual_columns} fields, "
                   f"the header {row.expected_columns}")
        return "skip"

    with arrow_file(path) as f:
        names = _csv_columns(f, _csv_parse_options(suffix, invalid_row_handler=lambda _: "skip"))
    with arrow_file(path) as f:
        table = pacsv.read_csv(
            f,
            read_options=pacsv.ReadOptions(use_threads=False),  # bad rows in file order
            parse_options=_csv_parse_options(suffix, invalid_row_handler=drop),
            # binary, not string: one invalid UTF-8 byte must not refuse the whole table
            convert_options=pacsv.ConvertOptions(strings_can_be_null=False,
                                                 column_types=dict.fromkeys(names, pa.binary())),
        )
    return table.to_pydict(), bad


def _read_jsonl(path: Path) -> tuple[dict[str, list], list[str]]:
    records: list[dict] = []
    bad: list[str] = []
    with open(path, "rb") as f:
        for line in f:
            if not line.strip():
                continue
            try:  # numbers keep their text (1e5 stays "1e5"); NaN is no value
                record = json.loads(line.decode("utf-8", "surrogateescape"), parse_int=str,
                                    parse_float=str, parse_constant=_json_constant)
            except ValueError:
                record = None
            if isinstance(record, dict):
                records.append(record)
            else:
                bad.append(f"row {len(records) + len(bad) + 1} is not a JSON object")
    if bad and not records:
        raise SourceError(f"{path}: no line is a JSON object; a JSON caption table must be "
                          "JSON Lines (one object per line)")
    names = list(dict.fromkeys(name for record in records for name in record))
    return {name: [record.get(name) for record in records] for name in names}, bad


def _json_constant(name: str) -> str | None:
    return None if name == "NaN" else name


def _file_name(value: Any) -> str:
    """A cell naming a file, as a file system name (bytes that are not UTF-8 kept)."""
    if isinstance(value, bytes):
        return os.fsdecode(value)
    value = caption_value(value)
    return "" if value is None else value


def _uid(value: Any) -> str | None:
    return valid_uid(value.decode("utf-8", "replace") if isinstance(value, bytes) else value)
