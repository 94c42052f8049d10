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

from ..stage import DecideStage, GlobalStage, MapStage, PartOutput, Stage, StageSummary
from ..uids import UidSet, uid_codes
from ..workspace import Workspace, atomic_write, config_hash
from .parts import IMAGE_LOCATION, LOCATION, error_table, process_part, write_output
from .threads import default_threads, ordered_map, progress_bar
from .views import Collection, PartData


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
        columns = _map_columns(stage)
        parts = ws.part_ids()
        todo = [p for p in parts if not stage.part_done(PartData(ws, stage.name, run, inputs, p))]
        summary = StageSummary(stage.name, run, parts_done=len(todo),
                               parts_skipped=len(parts) - len(todo),
                               samples=sum(ws.part_rows(p) for p in todo))
        if todo:
            stage.setup(inputs)
        with ExitStack() as stack:
            pool = (stack.enter_context(ThreadPoolExecutor(self.threads(stage), "pairsift"))
                    if stage.per_sample else None)
            advance = stack.enter_context(progress_bar(stage.name, summary.samples,
                                                       enabled=progress))
            for part in todo:  # one part's rows in memory at a time
                view = PartData(ws, stage.name, run, inputs, part, columns)
                output, failures = process_part(stage, view, image_columns=ws.image_columns(),
                                                pool=pool, advance=advance)
                errors = error_table(stage.name, view, failures)
                write_output(ws, stage.name, run, part, view.uids, output, errors,
                             output.embeddings_model)
                summary.failed += errors.num_rows
        summary.details = stage.summarize(Collection(ws, stage.name, run, inputs))
        return summary

    def global_(self, ws: Workspace, stage: GlobalStage, run: str, inputs: dict[str, Any],
                progress: bool) -> StageSummary:
        data = Collection(ws, stage.name, run, inputs)
        stage.setup(inputs)
        tasks = stage.plan(data)
        folder = ws.task_dir(stage.name, task_id(stage, inputs))

        def one(i: int) -> dict[str, np.ndarray]:
            path = folder / f"task-{i:05d}.npz"
            if path.exists():
                with np.load(path) as saved:
                    return dict(saved)
            result = stage.run_task(data, tasks[i])
            atomic_write(path, lambda tmp: _savez(tmp, result))
            return result

        with progress_bar(stage.name, len(tasks), unit="tasks", enabled=progress) as advance:
            def done() -> Iterator[dict[str, np.ndarray]]:
                for result in ordered_map(one, range(len(tasks)), self.threads(stage),
                                          window=self.threads(stage)):
                    advance(1)
                    yield result

            state = stage.combine(data, done())
        summary = self._write_parts(ws, stage, run, data,
                                    lambda part: stage.part_output(data, state, part))
        summary.details = stage.summarize(data, state)
        return summary

    def decide(self, ws: Workspace, stage: DecideStage, run: str, inputs: dict[str, Any],
               progress: bool) -> StageSummary:
        data = Collection(ws, stage.name, run, inputs)
        state = stage.prepare(data)
        summary = self._write_parts(ws, stage, run, data, lambda part: PartOutput(
            decisions=stage.decide(data.part(part), state)))
        summary.details = stage.summarize(data, state)
        return summary

    @staticmethod
    def _write_parts(ws: Workspace, stage: Stage, run: str, data: Collection,
                     output_of: Any) -> StageSummary:
        summary = StageSummary(stage.name, run, samples=data.n, parts_done=len(data.parts))
        dropped = 0
        for part in data.parts:
            output = output_of(part)
            uids = ws.read_part(part, ["uid"]).column("uid")
            write_output(ws, stage.name, run, part, uids, output)
            if output.decisions is not None:
                dropped += int(np.count_nonzero(output.decisions.drop))
        if stage.decides:
            summary.kept, summary.dropped = data.n - dropped, dropped
        return summary


def task_id(stage: GlobalStage, inputs: dict[str, Any]) -> str:
    """Names a global stage's checkpointed tasks: its inputs and the options they read."""
    names = stage.task_options if stage.task_options is not None else stage.config
    return config_hash({"tasks": {k: stage.config[k] for k in names}, "inputs": inputs})


def _map_columns(stage: MapStage) -> tuple[str, ...]:
    extra = (*LOCATION, *IMAGE_LOCATION) if stage.needs_image else ()
    return tuple(dict.fromkeys((*stage.columns, *extra)))


def _savez(path: Any, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as f:
        np.savez(f, **arrays)
