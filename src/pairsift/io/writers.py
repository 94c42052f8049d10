"""Export writers: WebDataset shards, Parquet, open_clip CSV and DataComp uid lists.

Images are written with their original bytes (never re-encoded) and an extension taken from
the format detected at ingest.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import webdataset as wds

from ..workspace import atomic_write, write_array, write_table
from .images import image_extension

UID_DTYPE = np.dtype("u8,u8")


@dataclass
class ExportSample:
    uid: str
    key: str
    caption: str | None
    image: bytes | None  # None when ``path`` is enough (CSV export of file sources)
    format: str
    meta: dict[str, Any]  # uid, source key and signals: becomes the sample's .json
    path: str | None = None  # the original file, when the image is a standalone file


def uid_pairs(uids: Iterable[str]) -> np.ndarray:
    """DataComp's subset (docs/algorithms.md §5.2): ``(int(uid[:16],16), int(uid[16:],16))``,
    lexicographically sorted, because the resharder binary-searches it."""
    pairs = np.array([(int(u[:16], 16), int(u[16:32], 16)) for u in uids], dtype=UID_DTYPE)
    return np.sort(pairs, order=["f0", "f1"])


def write_datacomp_uids(uids: Iterable[str], out: Path) -> int:
    pairs = uid_pairs(uids)
    write_array(out, pairs)
    return len(pairs)


def write_webdataset(samples: Iterable[ExportSample], out: Path,
                     shard_size: int = 10_000) -> dict[str, int]:
    """Shards ``{:05d}.tar`` of at most ``shard_size`` samples, plus ``sizes.json``.

    A key already used in this export (two sources may share key names) is replaced by the
    sample's uid so no sample shadows another.
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
    blob = json.dumps(sizes, indent=1).encode()
    atomic_write(out / "sizes.json", lambda tmp: tmp.write_bytes(blob))
    return sizes


def _write_shard(batch: list[ExportSample], out: Path, sizes: dict[str, int],
                 used: set[str]) -> None:
    name = f"{len(sizes):05d}.tar"

    def write(tmp: Path) -> None:
        with wds.TarWriter(str(tmp)) as sink:
            for s in batch:
                key = s.key.replace(".", "_")
                key = s.uid if key in used else key
                used.add(key)
                sink.write({"__key__": key, image_extension(s.format): s.image,
                            "txt": (s.caption or "").encode(),
                            "json": json.dumps(s.meta).encode()})

    atomic_write(out / name, write)
    sizes[name] = len(batch)


def write_openclip_csv(samples: Iterable[ExportSample], out: Path) -> int:
    """open_clip's ``CsvDataset`` table (tab-separated ``filepath``/``title``).

    Samples whose image is a file keep their original path; images inside tars or parquet
    files are copied (bytes unchanged) next to the CSV in ``<name>_images/``.
    """
    image_dir = out.with_name(f"{out.stem}_images")
    rows = []
    for s in samples:
        path = s.path
        if path is None:
            target = image_dir / f"{s.uid}.{image_extension(s.format)}"
            atomic_write(target, lambda tmp, data=s.image: tmp.write_bytes(data))
            path = str(target.resolve())
        rows.append((path, (s.caption or "").replace("\t", " ").replace("\n", " ")))

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, delimiter="\t", quoting=csv.QUOTE_MINIMAL)
            writer.writerow(["filepath", "title"])
            writer.writerows(rows)

    atomic_write(out, write)
    return len(rows)


def write_parquet(table: pa.Table, out: Path) -> int:
    write_table(out, table)
    return table.num_rows
