"""The local engine's machinery: an ordered thread-pool map and progress bars with rates."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from typing import TypeVar

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")
R = TypeVar("R")


def default_threads() -> int:
    return max(2, min(8, os.cpu_count() or 2))


def ordered_map(fn: Callable[[T], R], items: Iterable[T],
                threads: int | ThreadPoolExecutor | None, window: int | None = None
                ) -> Iterator[R]:
    """``map(fn, items)`` on a thread pool, results in input order, at most ``window`` in flight.

    Pillow, torch and onnxruntime release the GIL, so threads overlap image work with the model
    running in the caller's thread. The window bounds memory. ``threads`` may be a pool to
    reuse (its size sets the default window) or None to run in the caller's thread.
    """
    if threads is None:
        yield from map(fn, items)
        return
    with ExitStack() as stack:
        pool = threads if isinstance(threads, ThreadPoolExecutor) else stack.enter_context(
            ThreadPoolExecutor(threads, thread_name_prefix="pairsift"))
        window = window or pool._max_workers * 4
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
