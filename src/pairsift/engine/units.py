"""The units of work every engine schedules, each one persisting its own result atomically:
one part of a map stage, one checkpointed task of a global stage, and one part of a global or
decide stage's outputs. The local engine runs them in this process, the Ray engine on workers;
what a unit computes and writes is the same code either way.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ..stage import GlobalStage, MapStage, PartOutput, Stage, StageSummary
from ..workspace import Workspace, atomic_write, config_hash
from .parts import IMAGE_LOCATION, LOCATION, error_table, process_part, write_output
from .views import Collection, PartData


def map_columns(stage: MapStage) -> tuple[str, ...]:
    """The part columns a map stage reads: its own, plus where the image is if it needs one."""
    extra = (*LOCATION, *IMAGE_LOCATION) if stage.needs_image else ()
    return tuple(dict.fromkeys((*stage.columns, *extra)))


def map_todo(ws: Workspace, stage: MapStage, run: str, inputs: dict[str, Any]) -> list[int]:
    """The parts this run has not written yet: a killed run resumes from these."""
    return [p for p in ws.part_ids()
            if not stage.part_done(PartData(ws, stage.name, run, inputs, p))]


def map_summary(ws: Workspace, stage: MapStage, run: str, todo: list[int]) -> StageSummary:
    parts = ws.part_ids()
    return StageSummary(stage.name, run, parts_done=len(todo),
                        parts_skipped=len(parts) - len(todo),
                        samples=sum(ws.part_rows(p) for p in todo))


def run_map_part(ws: Workspace, stage: MapStage, run: str, inputs: dict[str, Any], part: int,
                 *, pool: ThreadPoolExecutor | None, advance: Callable[[int], None]) -> int:
    """Compute one part of a map stage (``stage.setup`` done) and write it; returns how many
    of its samples failed and became error rows."""
    view = PartData(ws, stage.name, run, inputs, part, map_columns(stage))
    output, failures = process_part(stage, view, image_columns=ws.image_columns(), pool=pool,
                                    advance=advance)
    errors = error_table(stage.name, view, failures)
    write_output(ws, stage.name, run, part, view.uids, output, errors, output.embeddings_model)
    return errors.num_rows


def task_id(stage: GlobalStage, inputs: dict[str, Any]) -> str:
    """Names a global stage's checkpointed tasks: its inputs and the options they read."""
    names = stage.task_options if stage.task_options is not None else stage.config
    return config_hash({"tasks": {k: stage.config[k] for k in names}, "inputs": inputs})


def task_path(ws: Workspace, stage: GlobalStage, inputs: dict[str, Any], i: int) -> Path:
    return ws.task_dir(stage.name, task_id(stage, inputs)) / f"task-{i:05d}.npz"


def run_task(stage: GlobalStage, data: Collection, tasks: list[Any], i: int
             ) -> dict[str, np.ndarray]:
    """Task ``i`` of a global stage's plan: its checkpoint if a run already saved it, else
    computed and saved (``stage.plan`` done on this stage object)."""
    path = task_path(data.ws, stage, data.inputs, i)
    if path.exists():
        return load_task(path)
    result = stage.run_task(data, tasks[i])
    atomic_write(path, lambda tmp: _savez(tmp, result))
    return result


def load_task(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as saved:
        return dict(saved)


def state_output(stage: Stage, data: Collection, state: Any, part: int) -> PartOutput:
    """One part's outputs from what the whole collection gave: a global stage's combined
    state or a decide stage's prepared one."""
    if stage.kind == "decide":
        return PartOutput(decisions=stage.decide(data.part(part), state))
    return stage.part_output(data, state, part)


def write_state_part(stage: Stage, data: Collection, state: Any, part: int) -> int:
    """Write one part of a global or decide stage; returns how many of its rows it drops."""
    output = state_output(stage, data, state, part)
    uids = data.ws.read_part(part, ["uid"]).column("uid")
    write_output(data.ws, stage.name, data.run, part, uids, output)
    return 0 if output.decisions is None else int(np.count_nonzero(output.decisions.drop))


def state_summary(stage: Stage, data: Collection, dropped: list[int]) -> StageSummary:
    """A global or decide run's counts from the rows each part dropped."""
    summary = StageSummary(stage.name, data.run, samples=data.n, parts_done=len(data.parts))
    if stage.decides:
        summary.kept, summary.dropped = data.n - sum(dropped), sum(dropped)
    return summary


def write_state(stage: Stage, data: Collection, state: Any) -> StageSummary:
    """Every part of a global or decide run written from its state, in this process."""
    return state_summary(stage, data, [write_state_part(stage, data, state, part)
                                       for part in data.parts])


def _savez(path: Any, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as f:
        np.savez(f, **arrays)
