"""The in-process engine: ordered thread-pool maps and progress bars with samples/s."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

import pyarrow as pa
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from ..io.images import ImageDecodeError
from ..io.sources import ImageBytesReader
from ..workspace import ERROR_SCHEMA, Workspace, write_table

T = TypeVar("T")
R = TypeVar("R")


def default_threads() -> int:
    return max(2, min(8, os.cpu_count() or 2))


def ordered_map(fn: Callable[[T], R], items: Iterable[T], threads: int,
                window: int | None = None) -> Iterator[R]:
    """``map(fn, items)`` on a thread pool, results in input order, at most ``window`` in flight.

    Pillow and torch release the GIL while decoding and resizing, so threads overlap image
    work with the model running in the caller's thread. The window bounds memory.
    """
    window = window or threads * 4
    with ThreadPoolExecutor(threads, thread_name_prefix="pairsift") as pool:
        pending: deque[Future[R]] = deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


class _Rate(TextColumn):
    def __init__(self, unit: str):
        super().__init__("")
        self.unit = unit

    def render(self, task):  # type: ignore[override]
        elapsed = task.elapsed or 0.0
        return f"{task.completed / elapsed if elapsed else 0:,.1f} {self.unit}/s"


@contextmanager
def progress_bar(description: str, total: int | None, *, unit: str = "samples",
                 enabled: bool = True) -> Iterator[Callable[[int], None]]:
    """A rich progress bar; yields ``advance(n)``. Disabled, it is a no-op."""
    if not enabled:
        yield lambda n: None
        return
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               _Rate(unit), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)


def map_images(records: Iterable[dict], fn: Callable[[bytes], R], *,
               image_columns: dict[str, str | None], threads: int,
               window: int | None = None) -> Iterator[R | ImageDecodeError]:
    """``fn(image bytes)`` for each part row, in order, on the thread pool.

    Bytes are read in the caller's thread (one open handle per shard); a sample that no longer
    decodes yields its :class:`ImageDecodeError` instead of stopping the run.
    """

    def guarded(data: bytes) -> R | ImageDecodeError:
        try:
            return fn(data)
        except ImageDecodeError as exc:
            return exc

    with ImageBytesReader(image_columns) as reader:
        yield from ordered_map(guarded, (reader.read(r) for r in records), threads, window)


def decode_error_row(row: dict, stage: str, exc: ImageDecodeError) -> dict:
    """An errors-table row for a sample that ingest could read but a later stage could not."""
    return {"source": row["source"], "shard": row["shard"], "key": row["key"],
            "uid": row["uid"], "stage": stage, "reason": exc.reason,
            "message": f"image changed since ingest: {exc.message}"}


def run_signal_stage(
    ws: Workspace,
    stage: str,
    config: dict[str, Any],
    compute: Callable[[int, pa.Table, Callable[[int], None]], tuple[pa.Table, list[dict]]],
    *,
    columns: list[str],
    progress: bool = True,
) -> int:
    """Run a map stage part by part, skipping parts this config already finished.

    ``compute(part, rows, advance)`` returns the part's signal table (uid + columns, same row order)
    and error rows. Returns the number of parts computed.
    """
    run = ws.start_run(stage, config)
    todo = [p for p in ws.part_ids() if not ws.signal_path(stage, run, p).exists()]
    total = sum(ws.manifest["parts"][str(p)]["rows"] for p in todo)
    with progress_bar(stage, total, enabled=progress) as advance:
        for part in todo:
            signals, errors = compute(part, ws.read_part(part, columns), advance)
            ws.write_errors(stage, part, pa.Table.from_pylist(errors, ERROR_SCHEMA))
            write_table(ws.signal_path(stage, run, part), signals)
    ws.finish_run(stage, run, {"parts": len(ws.part_ids())})
    return len(todo)
