"""Caption tables (CSV, TSV, JSONL, Parquet) that map image files to captions."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from ..errors import SourceError
from .records import valid_uid

IMAGE_COLUMNS = ("file", "filepath", "filename", "image", "image_path", "path")
CAPTION_COLUMNS = ("caption", "text", "title", "txt", "alt")


def read_table(path: Path) -> pa.Table:
    """Read CSV, TSV, JSONL or Parquet by extension; captions always come back as strings."""
    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".tsv"):
            return pacsv.read_csv(
                path,
                parse_options=pacsv.ParseOptions(delimiter="\t" if suffix == ".tsv" else ",",
                                                 newlines_in_values=True),
                convert_options=pacsv.ConvertOptions(strings_can_be_null=False,
                                                     column_types=_all_strings(path, suffix)),
            )
        if suffix in (".jsonl", ".json"):
            return pajson.read_json(path)
        if suffix == ".parquet":
            return pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise SourceError(f"{path}: cannot read the caption table: {exc}") from exc
    raise SourceError(f"{path}: caption tables must be .csv, .tsv, .jsonl or .parquet")


def _all_strings(path: Path, suffix: str) -> dict[str, pa.DataType]:
    # Read the header only, so numeric-looking captions or file names stay text.
    with open(path, encoding="utf-8", errors="replace") as f:
        header = f.readline().rstrip("\r\n")
    return {name: pa.string() for name in header.split("\t" if suffix == ".tsv" else ",")}


def pick_column(table: pa.Table, wanted: str | None, candidates: tuple[str, ...],
                what: str, path: Path) -> str:
    """The column the user named, or the first conventional name present."""
    names = table.column_names
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
    caption: str | None
    uid: str | None


class CaptionTable:
    """Rows of a caption table indexed by the image path they name (relative to ``root``)."""

    def __init__(self, path: Path, root: Path, image_column: str | None = None,
                 caption_column: str | None = None):
        self.path = path.resolve()
        table = read_table(self.path)
        image_col = pick_column(table, image_column, IMAGE_COLUMNS, "image", path)
        caption_col = pick_column(table, caption_column, CAPTION_COLUMNS, "caption", path)
        files = [str(v) for v in table.column(image_col).to_pylist()]
        captions = table.column(caption_col).to_pylist()
        uids = (table.column("uid").to_pylist() if "uid" in table.column_names
                else [None] * len(files))
        self._rows: dict[Path, TableRow] = {}
        self._names: dict[Path, str] = {}
        for name, caption, uid in zip(files, captions, uids, strict=True):
            target = (root / name).resolve()
            self._rows[target] = TableRow(None if caption is None else str(caption),
                                          valid_uid(uid))
            self._names[target] = name

    def lookup(self, image: Path) -> TableRow | None:
        return self._rows.get(image.resolve())

    def unmatched(self, seen: set[Path]) -> list[str]:
        """Table entries whose image file is not in the folder."""
        return [self._names[p] for p in self._rows if p not in seen]
