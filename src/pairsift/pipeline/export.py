"""Export the kept subset: WebDataset, Parquet, open_clip CSV or a DataComp uid list.

An export replaces its target only once it is complete: everything is written under a hidden
sibling (``.NAME.pairsift-tmp``) that is then renamed over the target, so a reader finds the
previous export or the new one, never a mix (a folder is swapped by two renames, between which
it is briefly absent), and a killed export leaves the previous one as it was. Folders that
pairsift writes (WebDataset shards, the images an open_clip CSV points to) hold
``pairsift-export.json``: format, workspace, counts and a digest of the decisions applied. Any
other non-empty folder is refused unless ``overwrite=True``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..engine.parts import failure_of
from ..engine.runner import bring_up_to_date
from ..errors import ConfigError
from ..io.sources import ImageBytesReader
from ..io.writers import (
    ExportSample,
    write_datacomp_uids,
    write_openclip_csv,
    write_parquet,
    write_webdataset,
)
from ..stages.mix import BOTH, CAPTION_SOURCE, RAW, SYNTHETIC
from ..uids import uid_codes
from ..workspace import PART_SCHEMA, Workspace, config_hash, fsync

FORMATS = ("webdataset", "parquet", "openclip-csv", "datacomp-uids")
MARKER = "pairsift-export.json"


class ExportError(ConfigError):
    """The export's target cannot be replaced as asked; the message says what to do."""


@dataclass
class ExportSummary:
    format: str
    out: Path
    exported: int
    dropped: int
    left_out: dict[str, int] = field(default_factory=dict)  # kept, but the format can't hold it


def kept_parts(ws: Workspace) -> Iterator[pa.Table]:
    """Each part's kept rows, with the current signals of every stage as extra columns."""
    for part in ws.part_ids():
        table = ws.read_part(part)
        for stage, signals in ws.part_signals(part).items():
            for name in signals.column_names:
                if name != "uid":  # a name two stages share keeps the stage as a prefix
                    column = name if name not in table.column_names else f"{stage}.{name}"
                    table = table.append_column(column, signals.column(name))
        kept = table.filter(pa.array(~ws.dropped(part)))
        yield with_chosen_captions(kept) if CAPTION_SOURCE in kept.column_names else kept


def with_chosen_captions(table: pa.Table) -> pa.Table:
    """The captions ``mix`` chose: ``caption`` becomes the chosen one, ``raw_caption`` keeps
    the source's. A sample kept with both captions (strategy ``both``) becomes two rows; the
    synthetic one's key gets ``#synthetic`` so the two never share a key."""
    source = table.column(CAPTION_SOURCE)
    table = table.append_column("raw_caption", table.column("caption"))
    raw = table.filter(pc.is_in(source, pa.array([RAW, BOTH])))
    raw = raw.set_column(raw.schema.get_field_index(CAPTION_SOURCE), CAPTION_SOURCE,
                         pa.array([RAW] * raw.num_rows, pa.string()))
    syn = table.filter(pc.is_in(source, pa.array([SYNTHETIC, BOTH])))
    keys = pc.if_else(pc.equal(syn.column(CAPTION_SOURCE), BOTH),
                      pc.binary_join_element_wise(syn.column("key"), "synthetic", "#"),
                      syn.column("key"))
    for name, values in (("key", keys), ("caption", syn.column("synthetic_caption")),
                         (CAPTION_SOURCE, pa.array([SYNTHETIC] * syn.num_rows, pa.string()))):
        syn = syn.set_column(syn.schema.get_field_index(name), name, values)
    return pa.concat_tables([raw, syn])


def chosen_synthetic(ws: Workspace) -> int:
    """How many kept samples ``mix`` gave a synthetic caption (0 when mix has not run)."""
    if "mix" not in ws.signal_stages():
        return 0
    count = 0
    for part in ws.part_ids():
        source = ws.part_signal("mix", part, [CAPTION_SOURCE]).column(CAPTION_SOURCE).filter(
            pa.array(~ws.dropped(part)))
        count += pc.sum(pc.is_in(source, pa.array([SYNTHETIC, BOTH]))).as_py() or 0
    return count


def _signal_columns(table: pa.Table) -> list[str]:
    return [c for c in table.column_names if c not in PART_SCHEMA.names]


def _samples(ws: Workspace, need_bytes_for_files: bool,
             unreadable: Counter) -> Iterator[ExportSample]:
    """Kept samples with what the writers need; an image that can no longer be read (its file
    deleted or changed since ingest) is counted in ``unreadable`` by reason and left out."""
    with ImageBytesReader(ws.image_columns()) as reader:
        for table in kept_parts(ws):
            signals = _signal_columns(table)
            for row in table.to_pylist():
                is_file = row["container"] == "file"
                try:
                    image = reader.read(row) if need_bytes_for_files or not is_file else None
                    if is_file and image is None and not os.path.isfile(row["shard"]):
                        raise FileNotFoundError(row["shard"])
                except (OSError, ValueError) as exc:
                    unreadable[failure_of(exc).reason] += 1
                    continue
                yield ExportSample(
                    uid=row["uid"], key=row["key"], caption=row["caption"], image=image,
                    format=row["format"],
                    meta={"uid": row["uid"], "key": row["key"], "source": row["source"],
                          **{s: row[s] for s in signals}},
                    path=row["shard"] if is_file else None,
                )


def export(workspace: str | Path, out: str | Path, *, format: str = "webdataset",
           shard_size: int = 10_000, overwrite: bool = False) -> ExportSummary:
    """Write the samples that no decision dropped to ``out`` in ``format``.

    ``out`` is replaced once the export is complete. A folder that is not empty and not a
    pairsift export of the same format is refused unless ``overwrite`` (which deletes it).

    >>> from pairsift import export  # doctest: +SKIP
    >>> export("ws", "subset.npy", format="datacomp-uids")  # doctest: +SKIP
    """
    if format not in FORMATS:
        raise ConfigError(f"unknown export format {format!r}; choose one of {FORMATS}")
    ws = Workspace.open(workspace)
    bring_up_to_date(ws, ws.decision_stages())  # parts added since a stage decided
    ws.refresh()
    out = Path(out).absolute()
    record = {"format": format, "workspace": str(ws.root), "decisions": decisions_digest(ws)}
    if format == "webdataset":
        return _export_webdataset(ws, out, record, shard_size, overwrite)
    _check_file(out, format)
    if format == "openclip-csv":
        return _export_openclip_csv(ws, out, record, overwrite)
    synthetic = chosen_synthetic(ws) if format == "datacomp-uids" else 0
    if synthetic:
        raise ExportError(f"a DataComp uid list cannot carry the synthetic captions mix chose "
                          f"for {synthetic:,} kept samples: export webdataset, parquet or "
                          "openclip-csv")
    with _replacing(out) as tmp:
        if format == "parquet":
            count = write_parquet(kept_parts(ws), tmp)
        else:
            count = write_datacomp_uids(kept_uid_codes(ws), tmp)
    return _summary(ws, format, out, count)


def kept_uid_codes(ws: Workspace) -> np.ndarray:
    """The kept samples' uids as 16-byte codes, read part by part (uid column only)."""
    codes = [uid_codes(ws.read_part(p, ["uid"]).column("uid"))[~ws.dropped(p)]
             for p in ws.part_ids()]
    return np.concatenate(codes) if codes else uid_codes(pa.array([], pa.string()))


def _export_webdataset(ws: Workspace, out: Path, record: dict, shard_size: int,
                       overwrite: bool) -> ExportSummary:
    _check_folder(out, "webdataset", overwrite, ws)
    unreadable: Counter = Counter()
    with _replacing(out) as tmp:
        count = sum(write_webdataset(_samples(ws, True, unreadable), tmp, shard_size).values())
        summary = _summary(ws, "webdataset", out, count, unreadable)
        _write_marker(tmp, record, summary)
    return summary


def _export_openclip_csv(ws: Workspace, out: Path, record: dict,
                         overwrite: bool) -> ExportSummary:
    images = out.with_name(f"{out.stem}_images")
    _check_folder(images, "openclip-csv", overwrite, ws)
    with _replacing(images) as tmp_images, _replacing(out) as tmp:
        unreadable: Counter = Counter()
        count, left_out = write_openclip_csv(_samples(ws, False, unreadable), tmp, tmp_images,
                                             images, sources="mix" in ws.signal_stages())
        left_out = Counter(left_out) + unreadable
        summary = _summary(ws, "openclip-csv", out, count, left_out)
        _write_marker(tmp_images, record, summary)
    return summary


def _summary(ws: Workspace, format: str, out: Path, count: int,
             left_out: dict[str, int] | None = None) -> ExportSummary:
    left_out = dict(left_out or {})
    dropped = ws.num_dropped()  # samples; ``count`` is pairs (mix ``both``: two per image)
    return ExportSummary(format, out, count, dropped, left_out)


def decisions_digest(ws: Workspace) -> str:
    """Names the decisions an export reflects: each decision stage's current run (a run id
    hashes the stage's options and inputs, the parts among them)."""
    return config_hash({s: ws.current_run(s) for s in ws.decision_stages()})


def _write_marker(folder: Path, record: dict, summary: ExportSummary) -> None:
    marker = {**record, "exported": summary.exported, "dropped": summary.dropped,
              "left_out": summary.left_out,
              "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    (folder / MARKER).write_text(json.dumps(marker, indent=1))


def read_marker(folder: Path) -> dict | None:
    """The record of the pairsift export in ``folder`` (for a CSV: its images folder), None
    if it is not one."""
    try:
        marker = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def _check_folder(folder: Path, format: str, overwrite: bool, ws: Workspace) -> None:
    if ws.root.is_relative_to(folder.resolve()):  # even with overwrite: it would be deleted
        raise ExportError(f"{folder} holds the workspace {ws.root}; export somewhere else")
    if overwrite or not folder.exists():
        return
    if folder.is_dir() and ((read_marker(folder) or {}).get("format") == format
                            or not any(folder.iterdir())):
        return
    raise ExportError(f"{folder} exists and is not a pairsift {format} export; choose another "
                      "path, or pass --overwrite (overwrite=True) to replace it")


def _check_file(out: Path, format: str) -> None:
    if out.is_dir():
        raise ExportError(f"{out} is a folder; --format {format} writes one file: name the "
                          "file to write")


@contextmanager
def _replacing(target: Path) -> Iterator[Path]:
    """A hidden sibling path to write instead of ``target``; when the block completes, it
    replaces ``target`` by rename. If the block fails, ``target`` is left as it was."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.pairsift-tmp")
    _remove(tmp)  # left by a killed export
    try:
        yield tmp
    except BaseException:
        _remove(tmp)
        raise
    _fsync(tmp)
    if tmp.is_dir() and target.exists():
        # rename cannot replace a non-empty folder: move the old one aside, swap, delete it
        old = target.with_name(f".{target.name}.pairsift-old")
        _remove(old)
        os.replace(target, old)
        os.replace(tmp, target)
        _remove(old)
    else:
        os.replace(tmp, target)
    _fsync(target.parent)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _fsync(path: Path) -> None:
    """Flush a file, or a folder and everything in it, to disk."""
    if path.is_dir():
        with os.scandir(path) as entries:  # lazily: a CSV export's images are one per sample
            for entry in entries:
                _fsync(Path(entry.path))
    fsync(path)
