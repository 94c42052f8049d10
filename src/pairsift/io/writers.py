"""Export writers: WebDataset shards, Parquet, open_clip CSV and DataComp uid lists.

Images are written with their original bytes (never re-encoded) and an extension taken from
the format detected at ingest. Writers write plainly to the paths they are given;
:func:`pairsift.pipeline.export.export` makes the result replace its target atomically.
"""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..lazy import lazy
from ..uids import uid_codes
from .images import image_extension

wds = lazy("webdataset")  # imports torch: only when a WebDataset is written

UID_DTYPE = np.dtype("u8,u8")

# A WebDataset reader takes a member name up to the first dot of its basename as the sample
# key and a "/" as a folder; tar extraction also obeys "\" on Windows and chokes on controls.
_KEY_RESERVED = re.compile(r"[%./\\\x00-\x1f\x7f-\x9f]")

# pandas.read_csv's default missing-value strings. open_clip's CsvDataset reads the table with
# pandas, so a title cell spelled like one of these (quoted or not) becomes NaN and then the
# caption "nan".
PANDAS_NA = frozenset({"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan",
                       "1.#IND", "1.#QNAN", "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a",
                       "nan", "null"})


@dataclass
class ExportSample:
    uid: str
    key: str
    caption: str | None
    image: bytes | None  # None when ``path`` is enough (CSV export of file sources)
    format: str
    meta: dict[str, Any]  # uid, source key and signals: becomes the sample's .json
    path: str | None = None  # the original file, when the image is a standalone file


def uid_pairs(uids: Iterable[str] | np.ndarray) -> np.ndarray:
    """DataComp's subset (docs/algorithms.md §5.2): ``(int(uid[:16],16), int(uid[16:],16))``,
    lexicographically sorted, because the resharder binary-searches it. ``uids`` are strings
    or their 16-byte codes (:func:`pairsift.uids.uid_codes`)."""
    if not isinstance(uids, np.ndarray):
        uids = uid_codes(pa.array(list(uids), pa.string()))
    pairs = np.empty(len(uids), UID_DTYPE)
    pairs["f0"], pairs["f1"] = uids["hi"], uids["lo"]
    pairs.sort(order=["f0", "f1"])
    return pairs


def write_datacomp_uids(uids: Iterable[str] | np.ndarray, out: Path) -> int:
    pairs = uid_pairs(uids)
    with open(out, "wb") as f:  # a file object: np.save would add ".npy" to a path
        np.save(f, pairs)
    return len(pairs)


def webdataset_key(key: str) -> str:
    """A source key as a WebDataset key: ``%``, ``.``, ``/``, ``\\`` and control characters
    become ``%XX`` (their UTF-8 bytes), so the key is one tar member stem with no extension
    and no path; ``urllib.parse.unquote`` gives the source key back."""
    return _KEY_RESERVED.sub(lambda m: "".join(f"%{b:02X}" for b in m[0].encode()), key)


def write_webdataset(samples: Iterable[ExportSample], out: Path,
                     shard_size: int = 10_000) -> dict[str, int]:
    """Shards ``{:05d}.tar`` of at most ``shard_size`` samples, plus ``sizes.json``.

    Each sample keeps its source key, encoded by :func:`webdataset_key`; its ``.json`` holds
    the key as it was. An empty key, or one already used in this export (two sources may share
    key names), is replaced by the sample's uid so no sample shadows another.
    """
    out.mkdir(parents=True, exist_ok=True)
    sizes: dict[str, int] = {}
    used: set[str] = set()
    batch: list[ExportSample] = []
    for sample in samples:
        batch.append(sample)
        if len(batch) == shard_size:
            _write_shard(batch, out, sizes, used)
            batch = []
    if batch or not sizes:
        _write_shard(batch, out, sizes, used)
    (out / "sizes.json").write_text(json.dumps(sizes, indent=1))
    return sizes


def _write_shard(batch: list[ExportSample], out: Path, sizes: dict[str, int],
                 used: set[str]) -> None:
    name = f"{len(sizes):05d}.tar"
    with wds.TarWriter(str(out / name)) as sink:
        for s in batch:
            key = webdataset_key(s.key)
            key = s.uid if not key or key in used else key
            used.add(key)
            sink.write({"__key__": key, image_extension(s.format): s.image,
                        "txt": (s.caption or "").encode(),
                        "json": json.dumps(s.meta).encode()})
    sizes[name] = len(batch)


# a title stays on one line of the file: line-based tools (wc -l, split, head) read it too
ONE_LINE = str.maketrans({c: " " for c in "\t\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"})


def write_openclip_csv(samples: Iterable[ExportSample], out: Path, image_dir: Path,
                       image_dir_final: Path | None = None,
                       sources: bool = False) -> tuple[int, Counter]:
    """open_clip's ``CsvDataset`` table (tab-separated ``filepath``/``title``).

    Samples whose image is a file keep their original path; images inside tars or parquet
    files are copied (bytes unchanged) into ``image_dir`` and named where ``image_dir_final``
    (default: ``image_dir``) will be. A caption that open_clip would read as NaN (empty, or
    spelled like pandas' missing values) cannot be written: its sample is left out and counted
    under ``caption_reads_as_nan``. ``sources`` adds a ``caption_source`` column (raw or
    synthetic, from ``mix``). Returns the rows written and the samples left out, by reason.
    """
    image_dir.mkdir(parents=True, exist_ok=True)
    final = (image_dir_final or image_dir).resolve()
    written, left_out = 0, Counter()
    with open(out, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter="\t", quoting=csv.QUOTE_MINIMAL)
        writer.writerow(["filepath", "title", *(["caption_source"] if sources else [])])
        for s in samples:
            title = (s.caption or "").translate(ONE_LINE)
            if title in PANDAS_NA:
                left_out["caption_reads_as_nan"] += 1
                continue
            path = s.path
            if path is None:
                name = f"{s.uid}.{image_extension(s.format)}"
                (image_dir / name).write_bytes(s.image)
                path = str(final / name)
            writer.writerow((path, title, *([s.meta.get("caption_source")] if sources else [])))
            written += 1
    return written, left_out


def write_parquet(tables: Iterable[pa.Table], out: Path) -> int:
    """Tables (of one set of columns) as one Parquet file, written as they come. Empty tables
    only give the schema: an empty part may have typed its columns as Arrow's null."""
    writer, rows, schema = None, 0, None
    for table in tables:
        if table.num_rows == 0:
            schema = schema or table.schema
            continue
        if writer is None:
            writer = pq.ParquetWriter(out, table.schema)
        writer.write_table(table.cast(writer.schema))
        rows += table.num_rows
    if writer is None:
        pq.write_table((schema or pa.schema([])).empty_table(), out)
    else:
        writer.close()
    return rows
