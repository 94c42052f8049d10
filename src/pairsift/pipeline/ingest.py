"""Ingest: sources -> workspace parts + errors, one part per unit, resumable."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from ..engine.local import default_threads, ordered_map, progress_bar
from ..io.images import DEFAULT_MAX_PIXELS, ImageDecodeError
from ..io.records import DROPPED_REASONS, SHARD_REASONS, RawSample, SampleError, make_uid
from ..io.sources import Source, Unit, open_source
from ..io.tables import SourceError
from ..stages.decode import ImageFacts, image_facts
from ..workspace import ERROR_SCHEMA, PART_SCHEMA, Workspace


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


def ingest(
    sources: list[str | Path] | str | Path,
    workspace: str | Path,
    *,
    name: str | None = None,
    kind: str = "auto",
    captions: str | Path | None = None,
    image_column: str | None = None,
    caption_column: str | None = None,
    chunk_size: int = 10_000,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    threads: int | None = None,
    progress: bool = True,
) -> IngestSummary:
    """Read sources into ``workspace`` (created if new); unusable samples become error rows.

    >>> from pairsift import ingest  # doctest: +SKIP
    >>> ingest("shards/{00000..00009}.tar", "ws").samples  # doctest: +SKIP
    """
    specs = [sources] if isinstance(sources, str | Path) else list(sources)
    if name is not None and len(specs) != 1:
        raise SourceError("--name names one source; ingest several sources one at a time")
    opened = [open_source(str(s), name=name, kind=kind, captions=captions,
                          image_column=image_column, caption_column=caption_column,
                          chunk_size=chunk_size) for s in specs]
    ws = Workspace.open(workspace, create=True)
    summary = IngestSummary(ws.root)
    seen = set(ws.uids().to_pylist())
    for source in opened:
        if _register(ws, source):
            summary.skipped_sources.append(source.name)
            continue
        summary.ignored_files += source.ignored_files
        record = ws.manifest["sources"][source.name]
        todo = [u for u in source.units if u.name not in record["units"]]
        with progress_bar(f"ingest {source.name}", None, enabled=progress) as advance:
            for unit in todo:
                rows, errors = _ingest_unit(source, unit, seen, max_pixels,
                                            threads or default_threads(), advance)
                part = ws.next_part_id()
                record["units"][unit.name] = part
                ws.add_part(part, rows, errors, {"source": source.name, "unit": unit.name})
        record["complete"] = True
        record["ignored_files"] = source.ignored_files
        ws.save()
    _count(ws, opened, summary)
    return summary


def _register(ws: Workspace, source: Source) -> bool:
    """Record the source in the manifest; True when it was already fully ingested."""
    known = ws.manifest["sources"].get(source.name)
    if known is None:
        ws.manifest["sources"][source.name] = {
            "kind": source.kind, "paths": source.paths, "options": source.options,
            "units": {}, "complete": False,
        }
        ws.save()
        return False
    if known["paths"] != source.paths or known["options"] != source.options:
        raise SourceError(
            f"source name {source.name!r} is already used in {ws.root} for "
            f"{known['paths'][:3]}; give this source another name with --name"
        )
    return bool(known["complete"])


def _probe(item: RawSample | SampleError, max_pixels: int):
    if isinstance(item, SampleError):
        return item, None
    try:
        return item, image_facts(item.data, max_pixels)
    except ImageDecodeError as exc:
        return item, exc


def _ingest_unit(source: Source, unit: Unit, seen: set[str], max_pixels: int, threads: int,
                 advance) -> tuple[pa.Table, pa.Table]:
    rows: list[dict] = []
    errors: list[dict] = []
    probed = ordered_map(lambda item: _probe(item, max_pixels), unit.read(), threads)
    for item, facts in probed:
        advance(1)
        if isinstance(item, SampleError):
            errors.append(_error_row(source.name, item.shard, item.key, item.uid,
                                     item.reason, item.message))
            continue
        uid = item.uid or make_uid(source.name, unit.shard_id, item.key)
        where = item.shard if item.container == "file" else f"{item.shard}: {item.key}"
        if isinstance(facts, ImageDecodeError):
            errors.append(_error_row(source.name, item.shard, item.key, uid,
                                     facts.reason, f"{where}: {facts.message}"))
        elif uid in seen:
            errors.append(_error_row(source.name, item.shard, item.key, uid, "duplicate_uid",
                                     f"{where}: uid {uid} already names another sample"))
        else:
            seen.add(uid)
            rows.append(_part_row(source.name, uid, item, facts))
    return (pa.Table.from_pylist(rows, PART_SCHEMA), pa.Table.from_pylist(errors, ERROR_SCHEMA))


def _part_row(source: str, uid: str, item: RawSample, facts: ImageFacts) -> dict:
    return {
        "uid": uid, "key": item.key, "source": source, "container": item.container,
        "shard": item.shard, "offset": item.offset, "length": len(item.data),
        "caption": item.caption, "caption_issue": item.caption_issue,
        "width": facts.width, "height": facts.height, "format": facts.format,
        "sha256": facts.sha256, "meta": item.meta,
    }


def _error_row(source: str, shard: str, key: str, uid: str | None, reason: str,
               message: str) -> dict:
    return {"source": source, "shard": shard, "key": key, "uid": uid, "stage": "ingest",
            "reason": reason, "message": _storable(message)}


def _storable(text: str) -> str:
    """Arrow strings are UTF-8: an exception's text may hold a file name that is not (its
    bytes as lone surrogates); those are written as their escapes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _count(ws: Workspace, sources: list[Source], summary: IngestSummary) -> None:
    """Totals for the sources of this call, read back from the workspace (resume-proof)."""
    names = {s.name for s in sources}
    parts = ws.manifest["parts"].values()
    summary.samples = sum(p["rows"] for p in parts if p["source"] in names)
    errors = ws.errors()
    for source, stage, reason in zip(errors.column("source").to_pylist(),
                                     errors.column("stage").to_pylist(),
                                     errors.column("reason").to_pylist(), strict=True):
        if source not in names or stage != "ingest":
            continue
        if reason in SHARD_REASONS:
            summary.shard_errors += 1
        elif reason in DROPPED_REASONS:
            summary.dropped[reason] += 1
        else:
            summary.errors[reason] += 1
