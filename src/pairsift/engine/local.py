"""The in-process engine: a thread pool for per-sample work, progress bars with rates, and
checkpointed global tasks. ``runner.run_stage`` decides *what* runs; this decides *how*."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ..stage import DecideStage, GlobalStage, MapStage, Stage, StageSummary
from ..uids import UidSet, uid_codes
from ..workspace import Workspace
from .threads import default_threads, ordered_map, progress_bar
from .units import (
    map_summary,
    map_todo,
    run_map_part,
    run_task,
    write_state,
)
from .views import Collection


class LocalEngine:
    """Runs every kind of stage in this process."""

    def execute(self, ws: Workspace, stage: Stage, run: str, inputs: dict[str, Any], *,
                progress: bool) -> StageSummary:
        kind = {"map": self.map, "global": self.global_, "decide": self.decide}[stage.kind]
        return kind(ws, stage, run, inputs, progress)

    def ingest(self, stage: Any, workspace: str | Path | Workspace, *,
               progress: bool) -> Any:
        """Read every unit of every source that is not yet a part (stages.ingest.Ingest)."""
        from ..stages import ingest as source_step

        opened = stage.open_sources()  # a missing source fails before the workspace exists
        ws = workspace if isinstance(workspace, Workspace) else Workspace.open(workspace,
                                                                                create=True)
        summary = source_step.IngestSummary(ws.root)
        with ws.lock("ingest"):
            self._adopt_orphans(ws)
            seen = UidSet(np.concatenate([uid_codes(t.column("uid"))
                                          for _, t in ws.iter_parts(["uid"])] or
                                         [uid_codes(pa.array([], pa.string()))]))
            for source in opened:
                if source_step.register_source(ws, source):
                    summary.skipped_sources.append(source.name)
                    continue
                summary.ignored_files += source.ignored_files
                if source.name not in ws.sources():  # recorded first, so orphans have a home
                    ws.commit_parts(source.name, source_step.source_record(source), {},
                                    complete=False)
                record = ws.sources()[source.name]
                todo = [u for u in source.units if u.name not in record["units"]]
                new: dict[int, dict[str, Any]] = {}
                first = ws.next_part_id()
                with progress_bar(f"ingest {source.name}", None, enabled=progress) as advance:
                    for part, unit in enumerate(todo, start=first):
                        rows, errors = stage.read_unit(source, unit, seen, self.threads(stage),
                                                       advance)
                        new[part] = ws.write_part(part, rows, errors, source.name, unit.name)
                        if len(new) >= source_step.COMMIT_EVERY:
                            ws.commit_parts(source.name, record, new, complete=False)
                            new = {}
                ws.commit_parts(source.name, record, new, complete=True)
        source_step.count(ws, [s.name for s in opened], summary)
        return summary

    @staticmethod
    def _adopt_orphans(ws: Workspace) -> None:
        """Commit parts a killed ingest wrote but did not record."""
        by_source: dict[str, dict[int, dict[str, Any]]] = {}
        for part, info in ws.orphan_parts().items():
            by_source.setdefault(info["source"], {})[part] = info
        for source, parts in by_source.items():
            record = ws.sources().get(source)
            if record is not None:
                ws.commit_parts(source, record, parts, complete=False)

    @staticmethod
    def threads(stage: Stage) -> int:
        return int(stage.options.get("threads") or default_threads())

    def map(self, ws: Workspace, stage: MapStage, run: str, inputs: dict[str, Any],
            progress: bool) -> StageSummary:
        todo = map_todo(ws, stage, run, inputs)
        summary = map_summary(ws, stage, run, todo)
        if todo:
            stage.setup(inputs)
        with ExitStack() as stack:
            pool = (stack.enter_context(ThreadPoolExecutor(self.threads(stage), "pairsift"))
                    if stage.per_sample else None)
            advance = stack.enter_context(progress_bar(stage.name, summary.samples,
                                                       enabled=progress))
            for part in todo:  # one part's rows in memory at a time
                summary.failed += run_map_part(ws, stage, run, inputs, part, pool=pool,
                                               advance=advance)
        summary.details = stage.summarize(Collection(ws, stage.name, run, inputs))
        return summary

    def global_(self, ws: Workspace, stage: GlobalStage, run: str, inputs: dict[str, Any],
                progress: bool) -> StageSummary:
        data = Collection(ws, stage.name, run, inputs)
        stage.setup(inputs)
        tasks = stage.plan(data)
        with progress_bar(stage.name, len(tasks), unit="tasks", enabled=progress) as advance:
            def done() -> Iterator[dict[str, np.ndarray]]:
                for result in ordered_map(lambda i: run_task(stage, data, tasks, i),
                                          range(len(tasks)), self.threads(stage),
                                          window=self.threads(stage)):
                    advance(1)
                    yield result

            state = stage.combine(data, done())
        summary = write_state(stage, data, state)
        summary.details = stage.summarize(data, state)
        return summary

    def decide(self, ws: Workspace, stage: DecideStage, run: str, inputs: dict[str, Any],
               progress: bool) -> StageSummary:
        data = Collection(ws, stage.name, run, inputs)
        state = stage.prepare(data)
        summary = write_state(stage, data, state)
        summary.details = stage.summarize(data, state)
        return summary
