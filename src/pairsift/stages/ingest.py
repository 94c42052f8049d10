"""Ingest, the source step: sources → workspace parts + errors, one part per unit, resumable.

A unit (a tar shard, a parquet file, a chunk of a folder) becomes one part. Its part file is its
completion marker: parts are committed to the manifest in batches, and a part written by an
ingest killed before its commit is adopted on the next run, so a resume re-reads nothing.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from ..engine.threads import ordered_map
from ..io.images import DEFAULT_MAX_PIXELS, ImageDecodeError
from ..io.records import DROPPED_REASONS, SHARD_REASONS, RawSample, SampleError, make_uid
from ..io.sources import KINDS, Source, Unit, open_source
from ..params import Param
from ..stage import Stage, fail, register
from ..uids import UidSet, uid_codes
from ..workspace import ERROR_SCHEMA, PART_SCHEMA, Workspace
from .decode import ImageFacts, image_facts

COMMIT_EVERY = 256  # parts per manifest write: a 10,000-part ingest rewrites it ~40 times


@dataclass
class IngestSummary:
    """Counts of one ingest call: ``samples`` readable + ``errors`` (samples that could not
    be used, by reason) = ``total`` samples in. Error rows that are not samples are counted
    apart: ``shard_errors`` (shards or directories that could not be read) and ``dropped``
    (repeated members or caption rows, by reason, whose sample is counted once)."""

    workspace: Path
    samples: int = 0
    errors: Counter = field(default_factory=Counter)
    shard_errors: int = 0
    dropped: Counter = field(default_factory=Counter)
    skipped_sources: list[str] = field(default_factory=list)
    ignored_files: int = 0

    @property
    def total(self) -> int:
        return self.samples + sum(self.errors.values())


@register
class Ingest(Stage):
    """Read sources into a workspace; every unusable sample is recorded with a reason."""

    name = "ingest"
    kind = "source"
    params = (
        Param("sources", list, None, "Folders, .tar shards (brace patterns like "
                                     "'shard-{00000..00009}.tar'), .parquet files."),
        Param("name", str, None, "Source name (default: its folder or file name)."),
        Param("kind", str, "auto", "What the source is.", choices=KINDS),
        Param("captions", Path, None, "Caption table for a folder: CSV, TSV, JSONL or "
                                      "Parquet."),
        Param("image_column", str, None, "Column naming the image."),
        Param("caption_column", str, None, "Column holding the caption."),
        Param("chunk_size", int, 10_000, "Folder files per workspace part.", low=1),
        Param("max_pixels", int, DEFAULT_MAX_PIXELS, "Larger images are decompression bombs.",
              low=1),
        Param("threads", int, None, "Decode threads.", low=1, runtime=True),
    )

    def check(self) -> None:
        if not self["sources"]:
            fail("ingest needs at least one source")
        if self["name"] is not None and len(self["sources"]) != 1:
            fail("--name names one source; ingest several sources one at a time")

    def open_sources(self) -> list[Source]:
        """Resolve every source (SourceError names a missing or unreadable one)."""
        return [open_source(s, name=self["name"], kind=self["kind"], captions=self["captions"],
                            image_column=self["image_column"],
                            caption_column=self["caption_column"],
                            chunk_size=self["chunk_size"]) for s in self["sources"]]

    def read_unit(self, source: Source, unit: Unit, seen: UidSet, threads: int,
                  advance: Any) -> tuple[pa.Table, pa.Table]:
        """One unit's readable rows and its error rows."""
        rows: list[dict] = []
        errors: list[dict] = []
        probed = ordered_map(lambda item: _probe(item, self["max_pixels"]), unit.read(),
                             threads)
        for item, facts in probed:
            advance(1)
            if isinstance(item, SampleError):
                errors.append(_error_row(source.name, item.shard, item.key, item.uid,
                                         item.reason, item.message))
                continue
            uid = item.uid or make_uid(source.name, unit.shard_id, item.key)
            if isinstance(facts, ImageDecodeError):
                errors.append(_error_row(source.name, item.shard, item.key, uid,
                                         facts.reason, f"{_where(item)}: {facts.message}"))
            else:
                rows.append(_part_row(source.name, uid, item, facts))
        rows, duplicates = _unique(rows, seen)
        errors += [_error_row(source.name, r["shard"], r["key"], r["uid"], "duplicate_uid",
                              f"{_where(r)}: uid {r['uid']} already names another sample")
                   for r in duplicates]
        return (pa.Table.from_pylist(rows, PART_SCHEMA),
                pa.Table.from_pylist(errors, ERROR_SCHEMA))


def _unique(rows: list[dict], seen: UidSet) -> tuple[list[dict], list[dict]]:
    """Rows whose uid is new (to the workspace and earlier in the unit), and the others."""
    if not rows:
        return rows, []
    codes = uid_codes(pa.array([r["uid"] for r in rows], pa.string()))
    old = seen.contains(codes)
    kept, duplicates, firsts = [], [], set()
    for row, code, is_old in zip(rows, codes.tolist(), old, strict=True):
        if is_old or code in firsts:
            duplicates.append(row)
        else:
            firsts.add(code)
            kept.append(row)
    seen.add(codes[[not o for o in old]] if kept else codes[:0])
    return kept, duplicates


def register_source(ws: Workspace, source: Source) -> bool:
    """Check the source's name against the workspace; True when it is already complete."""
    known = ws.sources().get(source.name)
    if known is None:
        return False
    if known["paths"] != source.paths or known["options"] != source.options:
        from ..errors import SourceError

        raise SourceError(
            f"source name {source.name!r} is already used in {ws.root} for "
            f"{known['paths'][:3]}; give this source another name with --name"
        )
    return bool(known["complete"])


def source_record(source: Source) -> dict[str, Any]:
    return {"kind": source.kind, "paths": source.paths, "options": source.options,
            "units": {}, "complete": False, "ignored_files": source.ignored_files}


def _probe(item: RawSample | SampleError, max_pixels: int):
    if isinstance(item, SampleError):
        return item, None
    try:
        return item, image_facts(item.data, max_pixels)
    except ImageDecodeError as exc:
        return item, exc


def _part_row(source: str, uid: str, item: RawSample, facts: ImageFacts) -> dict:
    return {
        "uid": uid, "key": item.key, "source": source, "container": item.container,
        "shard": item.shard, "offset": item.offset, "length": len(item.data),
        "caption": item.caption, "caption_issue": item.caption_issue,
        "width": facts.width, "height": facts.height, "format": facts.format,
        "sha256": facts.sha256, "meta": item.meta,
    }


def _where(item: RawSample | dict) -> str:
    """The file, or the shard and key, that an error message starts with."""
    get = item.get if isinstance(item, dict) else lambda name: getattr(item, name)
    return get("shard") if get("container") == "file" else f"{get('shard')}: {get('key')}"


def _error_row(source: str, shard: str, key: str, uid: str | None, reason: str,
               message: str) -> dict:
    return {"source": source, "shard": shard, "key": key, "uid": uid, "stage": "ingest",
            "reason": reason, "message": _storable(message)}


def _storable(text: str) -> str:
    """Arrow strings are UTF-8: an exception's text may hold a file name that is not (its
    bytes as lone surrogates); those are written as their escapes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def count(ws: Workspace, sources: list[str], summary: IngestSummary) -> None:
    """Totals for the sources of this call, read back from the workspace (resume-proof)."""
    names = set(sources)
    summary.samples = sum(ws.part_rows(p) for p in ws.part_ids() if ws.part_source(p) in names)
    errors = ws.errors("ingest")
    for source, reason in zip(errors.column("source").to_pylist(),
                              errors.column("reason").to_pylist(), strict=True):
        if source not in names:
            continue
        if reason in SHARD_REASONS:
            summary.shard_errors += 1
        elif reason in DROPPED_REASONS:
            summary.dropped[reason] += 1
        else:
            summary.errors[reason] += 1
