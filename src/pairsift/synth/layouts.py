"""Store rendered samples as a folder, img2dataset WebDataset shards, or one parquet file.

Each writer consumes ``(spec, rendered)`` pairs in storage order (streaming: memory stays
bounded at any corpus size) and returns, per sample, the key pairsift's readers will give it
and the container it is in. Output is byte-deterministic: tar
members carry fixed metadata and no timestamps are written anywhere.
"""

from __future__ import annotations

import csv
import io
import json
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .plan import Spec
from .render import Rendered

Item = tuple[Spec, Rendered]

URL_PREFIX = "https://example.com/pairsift-synth/"
# What img2dataset records for URLs it could not fetch (its error_message column).
DOWNLOAD_ERRORS = (
    "HTTP Error 404: Not Found",
    "<urlopen error [Errno -2] Name or service not known>",
    "The read operation timed out",
    "HTTP Error 403: Forbidden",
)
PARQUET_ROW_GROUP = 256
STATUS_SCHEMA = pa.schema([
    ("url", pa.string()), ("key", pa.string()), ("caption", pa.string()),
    ("status", pa.string()), ("error_message", pa.string()), ("width", pa.int64()),
    ("height", pa.int64()), ("sha256", pa.string()),
])


@dataclass(frozen=True)
class Placed:
    key: str  # the key pairsift's reader gives the sample
    container: str | None  # file, shard or parquet holding it (relative to the corpus root)


def new_folder(out_dir: str | Path, what: str) -> Path:
    """``out_dir``, created, for a generator to write ``what`` into: absent or empty, so no
    stale file can join what it writes."""
    root = Path(out_dir)
    if root.exists() and any(root.iterdir()):
        raise ValueError(f"{root} is not empty; choose a new directory for {what}")
    root.mkdir(parents=True, exist_ok=True)
    return root


def write_folder(root: Path, items: Iterable[Item], with_uids: bool) -> list[Placed]:
    """``images/<name>`` plus ``captions.csv`` (file, caption[, uid]): a sample with no
    caption has no row, a missing image has a row but no file."""
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    placed = []
    with open(root / "captions.csv", "w", newline="", encoding="utf-8") as f:
        table = csv.writer(f, lineterminator="\n")
        table.writerow(["file", "caption", *(["uid"] if with_uids else [])])
        for spec, rendered in items:
            if rendered.data is not None:
                (images / spec.name).write_bytes(rendered.data)
            if spec.caption is not None:
                table.writerow([spec.name, spec.caption, *([spec.uid] if with_uids else [])])
            missing = rendered.data is None
            placed.append(Placed(spec.name if missing else Path(spec.name).stem,
                                 None if missing else f"images/{spec.name}"))
    return placed


def write_parquet(root: Path, items: Iterable[Item], with_uids: bool) -> list[Placed]:
    """``samples.parquet`` with key, caption, image (bytes; null when missing)[, uid]."""
    fields = [("key", pa.string()), ("caption", pa.string()), ("image", pa.binary())]
    schema = pa.schema(fields + ([("uid", pa.string())] if with_uids else []))
    placed, rows = [], []
    with pq.ParquetWriter(root / "samples.parquet", schema) as writer:
        for spec, rendered in items:
            rows.append({"key": Path(spec.name).stem, "caption": spec.caption,
                         "image": rendered.data, **({"uid": spec.uid} if with_uids else {})})
            placed.append(Placed(rows[-1]["key"], "samples.parquet"))
            if len(rows) == PARQUET_ROW_GROUP:
                writer.write_table(pa.Table.from_pylist(rows, schema=schema))
                rows = []
        if rows or not placed:
            writer.write_table(pa.Table.from_pylist(rows, schema=schema))
    return placed


def write_webdataset(root: Path, items: Iterable[Item], shard_size: int,
                     with_uids: bool) -> list[Placed]:
    """img2dataset output: ``NNNNN.tar`` with ``<key>.<ext>``, ``.txt``, ``.json`` members,
    ``NNNNN.parquet`` (status of every URL, failed downloads included) and
    ``NNNNN_stats.json``. A missing image is a failed download: a status row, no members."""
    root.mkdir(parents=True, exist_ok=True)
    placed = []
    for shard, group in groupby(enumerate(items), key=lambda x: x[0] // shard_size):
        placed += _write_shard(root, shard, [(i % shard_size, it) for i, it in group], with_uids)
    return placed


def _write_shard(root: Path, shard: int, items: list[tuple[int, Item]],
                 with_uids: bool) -> list[Placed]:
    status, placed = [], []
    with tarfile.open(root / f"{shard:05d}.tar", "w", format=tarfile.USTAR_FORMAT) as tar:
        for idx, (spec, rendered) in items:
            key = f"{shard:05d}{idx:04d}"
            record = _record(key, spec, rendered, with_uids)
            status.append(record)
            if rendered.data is not None:
                _add(tar, f"{key}.{spec.fmt}", rendered.data)
                if spec.caption is not None:
                    _add(tar, f"{key}.txt", spec.caption.encode())
                _add(tar, f"{key}.json", json.dumps(record, sort_keys=True).encode())
            placed.append(Placed(key, f"{shard:05d}.tar"))
    schema = STATUS_SCHEMA.append(pa.field("uid", pa.string())) if with_uids else STATUS_SCHEMA
    pq.write_table(pa.Table.from_pylist(status, schema=schema), root / f"{shard:05d}.parquet")
    (root / f"{shard:05d}_stats.json").write_text(json.dumps(_stats(status), indent=2) + "\n")
    return placed


def _record(key: str, spec: Spec, rendered: Rendered, with_uids: bool) -> dict:
    failed = rendered.data is None
    record = {
        "url": f"{URL_PREFIX}{spec.name}", "key": key, "caption": spec.caption,
        "status": "failed_to_download" if failed else "success",
        "error_message": DOWNLOAD_ERRORS[spec.seed % len(DOWNLOAD_ERRORS)] if failed else None,
        "width": rendered.width, "height": rendered.height, "sha256": rendered.sha256,
    }
    if with_uids:
        record["uid"] = spec.uid
    return record


def _stats(status: list[dict]) -> dict:
    """img2dataset's per-shard summary (without its timing fields, to stay deterministic)."""
    errors: dict[str, int] = {}
    for row in status:
        name = row["error_message"] or "success"
        errors[name] = errors.get(name, 0) + 1
    successes = sum(r["status"] == "success" for r in status)
    return {"count": len(status), "successes": successes,
            "failed_to_download": len(status) - successes, "failed_to_resize": 0,
            "status_dict": errors}


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    tar.addfile(info, io.BytesIO(data))
