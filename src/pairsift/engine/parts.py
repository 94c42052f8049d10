"""One part of a map stage, start to finish: the unit every engine (local, Ray) schedules.

This is the one place where a per-sample failure — an image that no longer reads or decodes,
an OCR engine or model raising on one input — becomes an error row with a reason while the
stage goes on (docs/design.md §4). A batch that raises is retried sample by sample, so one bad
sample costs its batch a second pass, never the run. A part where *every* sample fails with
the same unexpected exception is a bug in the stage, not bad data: it is raised.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from ..io.images import ImageDecodeError
from ..io.sources import ImageBytesReader
from ..stage import SKIP, Decisions, MapStage, PartOutput, Sample
from ..workspace import DECISION_SCHEMA, ERROR_SCHEMA, Workspace, write_table
from .threads import ordered_map
from .views import PartData

LOCATION = ("key", "source", "shard")  # what an error row names
IMAGE_LOCATION = ("container", "offset", "length")
MIN_ROWS_FOR_BUG = 8  # a part this big failing whole on one exception type is a bug


@dataclass
class Failure:
    """Why one sample failed inside a stage."""

    reason: str
    message: str
    error: BaseException | None = field(default=None, repr=False)


def failure_of(exc: BaseException) -> Failure:
    """The reason code for an exception raised on one sample."""
    if type(exc) is ImageDecodeError:  # ingest decoded it: the file changed since
        return Failure(exc.reason, f"image changed since ingest: {exc.message}", exc)
    if isinstance(exc, ImageDecodeError):  # a model's own per-image failure (ocr_failed)
        return Failure(exc.reason, exc.message, exc)
    if isinstance(exc, FileNotFoundError):
        return Failure("missing_image", f"image file is gone: {exc.filename or exc}", exc)
    if isinstance(exc, OSError):
        return Failure("unreadable", f"cannot read the image: {exc}", exc)
    return Failure("stage_error", f"{type(exc).__name__}: {exc}", exc)


def _guard(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def guarded(item: Any) -> Any:
        if isinstance(item, Failure):
            return item
        try:
            return fn(item)
        except Exception as exc:  # noqa: BLE001 - one sample's failure becomes its error row
            return failure_of(exc)

    return guarded


def _samples(stage: MapStage, part: PartData, image_columns: dict[str, str | None]
             ) -> Iterator[Sample | Failure]:
    """Each row as a Sample; bytes are read here, in one thread (one handle per shard)."""
    records = stage.sample_table(part).to_pylist()
    if not stage.needs_image:
        yield from (Sample(r) for r in records)
        return
    with ImageBytesReader(image_columns) as reader:
        for row in records:
            try:
                yield Sample(row, reader.read(row))
            except Exception as exc:  # noqa: BLE001 - a missing or unreadable file
                yield failure_of(exc)


def _run_batch(stage: MapStage, items: list[Any]) -> list[Any]:
    """``stage.process`` on a batch; if it raises, each sample alone, failures isolated."""
    try:
        out = list(stage.process(items))
    except Exception:  # noqa: BLE001 - find the sample that broke it
        if len(items) == 1:
            raise
        return [_guard(lambda item: stage.process([item])[0])(item) for item in items]
    if len(out) != len(items):
        raise RuntimeError(f"{stage.name}.process returned {len(out)} results for "
                           f"{len(items)} samples")
    return out


def process_part(stage: MapStage, part: PartData, *, image_columns: dict[str, str | None],
                 pool: ThreadPoolExecutor | None, advance: Callable[[int], None]
                 ) -> tuple[PartOutput, list[Failure | None]]:
    """The part's outputs and, per row, its failure (None where the sample went through)."""
    n = part.num_rows
    failures: list[Failure | None] = [None] * n
    if not stage.per_sample:
        output = stage.assemble(part, None)
        advance(n)
        return output, failures
    results: list[Any] = [None] * n
    batch: list[tuple[int, Any]] = []

    def flush() -> None:
        if batch:
            outs = _run_batch(stage, [item for _, item in batch])
            for (i, _), out in zip(batch, outs, strict=True):
                if isinstance(out, Failure):
                    failures[i] = out
                else:
                    results[i] = out
            advance(len(batch))
            batch.clear()

    prepared = ordered_map(_guard(stage.prepare), _samples(stage, part, image_columns), pool)
    for i, item in enumerate(prepared):
        if isinstance(item, Failure) or item is SKIP:
            failures[i] = item if item is not SKIP else None
            advance(1)
            continue
        batch.append((i, item))
        if len(batch) >= stage.batch_size():
            flush()
    flush()
    _raise_if_bug(stage, failures)
    return stage.assemble(part, results), failures


def _raise_if_bug(stage: MapStage, failures: list[Failure | None]) -> None:
    errors = [f for f in failures if f is not None and f.reason == "stage_error"]
    if len(errors) == len(failures) >= MIN_ROWS_FOR_BUG and errors[0].error is not None:
        kinds = {type(f.error) for f in errors}
        if len(kinds) == 1:
            raise errors[0].error


def error_table(stage: str, part: PartData, failures: list[Failure | None]) -> pa.Table:
    rows = [i for i, f in enumerate(failures) if f is not None]
    if not rows:
        return ERROR_SCHEMA.empty_table()
    where = part.ws.read_part(part.part, ["uid", *LOCATION]).take(pa.array(rows, pa.int64()))
    return pa.table({
        "source": where.column("source"), "shard": where.column("shard"),
        "key": where.column("key"), "uid": where.column("uid"),
        "stage": pa.array([stage] * len(rows), pa.string()),
        "reason": pa.array([failures[i].reason for i in rows], pa.string()),
        "message": pa.array([failures[i].message for i in rows], pa.string()),
    }, schema=ERROR_SCHEMA)


def write_output(ws: Workspace, stage: str, run: str, part: int, uids: pa.ChunkedArray,
                 output: PartOutput, errors: pa.Table | None = None,
                 embeddings_model: str | None = None) -> None:
    """Persist one part's outputs, errors first: the output file is the completion marker."""
    if errors is not None:
        ws.write_errors(stage, part, errors)
    if output.embeddings is not None:
        ws.write_embeddings(embeddings_model or "", output.embeddings, part)
    if output.decisions is not None:
        ws.write_decisions(stage, run, part, decision_table(stage, run, uids, output.decisions))
    if output.signals is not None:
        table = output.signals
        if "uid" not in table.column_names:
            table = table.add_column(0, "uid", uids)
        write_table(ws.signal_path(stage, run, part), table)


def decision_table(stage: str, run: str, uids: pa.ChunkedArray | pa.Array,
                   decisions: Decisions) -> pa.Table:
    """A part's decision rows; reason and evidence are stored for the dropped rows and for
    the kept rows ``decisions.noted`` marks."""
    drop = np.asarray(decisions.drop, bool)
    n = len(drop)
    if len(uids) != n:
        raise RuntimeError(f"{stage} decided {n} rows of a part with {len(uids)}")
    noted = drop if decisions.noted is None else drop | np.asarray(decisions.noted, bool)
    stored = np.flatnonzero(noted)  # the rows whose reason and evidence are kept
    reason = decisions.reason
    reasons = np.full(n, "", object)
    reasons[stored] = reason if isinstance(reason, str) else np.asarray(reason, object)[stored]
    evidence = np.full(n, "{}", object)
    if stored.size:
        columns = {k: _json_values(v, stored) for k, v in decisions.evidence.items()}
        evidence[stored] = [json.dumps(dict(zip(columns, values, strict=True)))
                             for values in zip(*columns.values(), strict=True)] \
            if columns else "{}"
    return pa.table({
        "uid": uids, "stage": pa.array([stage] * n, pa.string()),
        "verdict": pa.array(np.where(drop, "drop", "keep").tolist(), pa.string()),
        "reason": pa.array(reasons.tolist(), pa.string()),
        "evidence": pa.array(evidence.tolist(), pa.string()),
        "config_hash": pa.array([run] * n, pa.string()),
    }, schema=DECISION_SCHEMA)


def _json_values(values: Any, rows: np.ndarray) -> list[Any]:
    """Evidence values of the given rows as JSON-ready Python (floats to 6 decimals, NaN→null);
    a scalar applies to every row."""
    if isinstance(values, str | int | float | bool | type(None)):
        return [values] * len(rows)
    if isinstance(values, pa.ChunkedArray | pa.Array):
        return values.take(pa.array(rows, pa.int64())).to_pylist()
    array = np.asarray(values) if not isinstance(values, Sequence) else None
    if array is not None and array.dtype.kind == "f":
        return [None if math.isnan(v) else v for v in np.round(array[rows].astype(np.float64),
                                                                 6).tolist()]
    if array is not None and array.dtype.kind in "iub":
        return array[rows].tolist()
    return [values[int(i)] for i in rows]
