"""Parquet files whose rows carry image bytes (also Hugging Face ``{bytes, path}`` structs).

A file that cannot be read, or lacks the image column, is a ``broken_shard`` error of its own
(see :mod:`pairsift.io.sources`); captions of any type arrive as text.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .records import (
    RawSample,
    SampleError,
    arrow_file,
    caption_value,
    decode_caption,
    path_text,
    valid_uid,
)
from .tables import CAPTION_COLUMNS, SourceError, pick_column

IMAGE_BYTES_COLUMNS = ("image", "jpg", "png", "webp", "img", "image_bytes", "bytes")
KEY_COLUMNS = ("key", "__key__", "id")


def image_columns(path: Path | str, image_column: str | None,
                  caption_column: str | None) -> tuple[str, str | None]:
    with arrow_file(path) as f:
        return _columns(pq.read_schema(f), path, image_column, caption_column)


def _columns(schema: pa.Schema, path: Path, image_column: str | None,
             caption_column: str | None) -> tuple[str, str | None]:
    empty = schema.empty_table()
    image = pick_column(empty, image_column, IMAGE_BYTES_COLUMNS, "image", path)
    try:
        caption = pick_column(empty, caption_column, CAPTION_COLUMNS, "caption", path)
    except SourceError:
        if caption_column is not None:
            raise
        caption = None
    return image, caption


def image_bytes(value) -> bytes | None:
    """Bytes of one cell: raw binary, or the ``bytes`` field of an image struct."""
    if isinstance(value, dict):
        value = value.get("bytes")
    return value if isinstance(value, bytes | bytearray) else None


def read_parquet(path: Path | str, image_column: str | None = None,
                 caption_column: str | None = None) -> Iterator[RawSample | SampleError]:
    with arrow_file(path) as f:
        parquet = pq.ParquetFile(f)
        schema = parquet.schema_arrow
        image_col, caption_col = _columns(schema, path, image_column, caption_column)
        key_col = next((c for c in KEY_COLUMNS if c in schema.names), None)
        columns = [c for c in (image_col, caption_col, key_col, "uid") if c and c in schema.names]
        row = 0
        for batch in parquet.iter_batches(batch_size=256, columns=columns):
            yield from _rows(path_text(path), pa.Table.from_batches([batch]).to_pylist(), row,
                             image_col, caption_col, key_col)
            row += batch.num_rows


def _rows(shard: str, records: list[dict], start: int, image_col: str,
          caption_col: str | None, key_col: str | None) -> Iterator[RawSample | SampleError]:
    for i, record in enumerate(records, start):
        key = str(record[key_col]) if key_col and record[key_col] is not None else f"{i:09d}"
        uid = valid_uid(record.get("uid"))
        data = image_bytes(record[image_col])
        if data is None:
            yield SampleError(key, shard, "missing_image",
                              f"{shard}: row {i} has no bytes in column {image_col!r}", uid)
            continue
        caption, issue = decode_caption(caption_value(record[caption_col]) if caption_col
                                        else None)
        yield RawSample(key=key, shard=shard, container="parquet", offset=i, data=data,
                        caption=caption, caption_issue=issue, uid=uid)


def read_parquet_image(path: Path | str, row: int, image_column: str | None = None) -> bytes:
    """The image bytes of one row (for exports and thumbnails; bulk reads use read_parquet)."""
    with arrow_file(path) as f:
        pf = pq.ParquetFile(f)
        image_col, _ = _columns(pf.schema_arrow, path, image_column, None)
        for group in range(pf.num_row_groups):
            n = pf.metadata.row_group(group).num_rows
            if row < n:
                value = pf.read_row_group(group, columns=[image_col]).column(0)[row].as_py()
                data = image_bytes(value)
                if data is None:
                    raise SourceError(f"{path}: row has no image bytes in {image_col!r}")
                return data
            row -= n
    raise SourceError(f"{path}: row {row} is past the end of the file")
