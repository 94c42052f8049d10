"""Export the kept subset: WebDataset, Parquet, open_clip CSV or a DataComp uid list."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from ..errors import ConfigError
from ..io.sources import ImageBytesReader
from ..io.writers import (
    ExportSample,
    write_datacomp_uids,
    write_openclip_csv,
    write_parquet,
    write_webdataset,
)
from ..workspace import PART_SCHEMA, Workspace

FORMATS = ("webdataset", "parquet", "openclip-csv", "datacomp-uids")


@dataclass
class ExportSummary:
    format: str
    out: Path
    exported: int
    dropped: int


def kept_parts(ws: Workspace) -> Iterator[pa.Table]:
    """Each part's kept rows, with the current signals of every stage as extra columns."""
    for part in ws.part_ids():
        table = ws.read_part(part)
        for stage, signals in ws.part_signals(part).items():
            for name in signals.column_names:
                if name != "uid":  # a name two stages share keeps the stage as a prefix
                    column = name if name not in table.column_names else f"{stage}.{name}"
                    table = table.append_column(column, signals.column(name))
        yield table.filter(pa.array(~ws.dropped(part)))


def _signal_columns(table: pa.Table) -> list[str]:
    return [c for c in table.column_names if c not in PART_SCHEMA.names]


def _samples(ws: Workspace, need_bytes_for_files: bool) -> Iterator[ExportSample]:
    with ImageBytesReader(ws.image_columns()) as reader:
        for table in kept_parts(ws):
            signals = _signal_columns(table)
            for row in table.to_pylist():
                is_file = row["container"] == "file"
                yield ExportSample(
                    uid=row["uid"], key=row["key"], caption=row["caption"],
                    image=reader.read(row) if need_bytes_for_files or not is_file else None,
                    format=row["format"],
                    meta={"uid": row["uid"], "key": row["key"], "source": row["source"],
                          **{s: row[s] for s in signals}},
                    path=row["shard"] if is_file else None,
                )


def export(workspace: str | Path, out: str | Path, *, format: str = "webdataset",
           shard_size: int = 10_000) -> ExportSummary:
    """Write the samples that no decision dropped to ``out`` in ``format``.

    >>> from pairsift import export  # doctest: +SKIP
    >>> export("ws", "subset.npy", format="datacomp-uids")  # doctest: +SKIP
    """
    if format not in FORMATS:
        raise ConfigError(f"unknown export format {format!r}; choose one of {FORMATS}")
    ws = Workspace.open(workspace)
    out = Path(out)
    if format == "webdataset":
        count = sum(write_webdataset(_samples(ws, True), out, shard_size).values())
    elif format == "openclip-csv":
        count = write_openclip_csv(_samples(ws, False), out)
    elif format == "parquet":
        tables = list(kept_parts(ws))
        count = write_parquet(pa.concat_tables(tables, promote_options="default"), out)
    else:
        uids = (u for t in kept_parts(ws) for u in t.column("uid").to_pylist())
        count = write_datacomp_uids(uids, out)
    return ExportSummary(format, out, count, ws.num_samples() - count)
