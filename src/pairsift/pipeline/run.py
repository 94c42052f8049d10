"""``pairsift run RECIPE``: every step of a recipe, after the whole file has been checked."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..engine.runner import executor, is_complete, resolve_inputs, run_id, run_stage
from ..errors import ConfigError, WorkspaceError
from ..recipe import Recipe, Step, load_recipe
from ..stage import get_stage
from ..workspace import MANIFEST, Workspace, cli_name


@dataclass
class PlannedStep:
    line: int
    name: str
    options: dict[str, Any]
    status: str  # "cached" | "runs" | "resumes"


@dataclass
class RunResult:
    recipe: Path
    digest: str
    workspace: Path
    plan: list[PlannedStep]
    summaries: list[Any] = field(default_factory=list)
    exports: list[Any] = field(default_factory=list)
    report: Path | None = None


def run(recipe: str | Path, workspace: str | Path, *, base: str | Path | None = None,
        dry_run: bool = False, engine: str = "local", address: str | None = None,
        gpus_per_worker: float = 0.0, progress: bool = True) -> RunResult:
    """Validate the whole recipe, then run it; with ``dry_run``, only say what would run.
    ``engine``, ``address``, ``gpus_per_worker``: where the stages run (as on every stage).

    >>> from pairsift import run  # doctest: +SKIP
    >>> run("curate.yaml", "ws", dry_run=True).plan  # doctest: +SKIP
    """
    parsed = load_recipe(recipe, base)
    workspace = Path(workspace)
    existing = Workspace.open(workspace) if (workspace / MANIFEST).exists() else None
    check_inputs(parsed, existing)
    result = RunResult(parsed.path, parsed.digest, workspace.resolve(), plan(parsed, existing))
    if dry_run:
        return result
    engine = executor(engine, address, gpus_per_worker)
    for step in parsed.sources:
        result.summaries.append(run_stage(step.stage, workspace, engine=engine,
                                          progress=progress))
    ws = Workspace.open(workspace)
    ws.record_recipe(parsed.text, parsed.digest)
    for step in parsed.steps:
        result.summaries.append(run_stage(step.stage, ws, engine=engine, progress=progress))
    from .export import export
    from .report import report

    for _, options in parsed.exports:
        result.exports.append(export(ws.root, **options))
    if parsed.report is not None:
        result.report = report(ws.root, parsed.report.get("out"), progress=progress)
    return result


def check_inputs(recipe: Recipe, ws: Workspace | None) -> None:
    """Every stage's inputs are made by an earlier step or already in the workspace."""
    available = set(ws.current_stages()) if ws is not None else set()
    has_parts = bool(recipe.sources) or (ws is not None and bool(ws.part_ids()))
    for step in recipe.steps:
        stage = step.stage
        if not has_parts:
            raise _missing(recipe, step, "samples: add a source under `sources:`")
        required, _ = stage.dependencies(available)
        needs = (["embed"] if stage.reads_embeddings else []) + list(required)
        for name in needs:
            if name not in available and not get_stage(name).auto:
                raise _missing(recipe, step, f"`{name}`: add `- {name}: {{}}` before it "
                                             f"(or run `pairsift {cli_name(name)}` first)")
        available.add(stage.name)


def _missing(recipe: Recipe, step: Step, what: str) -> ConfigError:
    return ConfigError(f"{recipe.path}:{step.line}: {step.stage.name} needs {what}")


def plan(recipe: Recipe, ws: Workspace | None) -> list[PlannedStep]:
    """What running the recipe would do now: a step is cached when its run has finished with
    the same options and inputs; everything after a step that runs, runs."""
    steps: list[PlannedStep] = []
    changed = ws is None
    for step in recipe.sources:
        status = "runs" if changed or _new_units(step, ws) else "cached"
        changed |= status != "cached"
        steps.append(PlannedStep(step.line, "ingest", step.stage.options, status))
    for step in recipe.steps:
        status = "runs" if changed else _status(step, ws)
        changed |= status != "cached"
        steps.append(PlannedStep(step.line, step.stage.name, step.stage.options, status))
    return steps


def _new_units(step: Step, ws: Workspace) -> bool:
    for source in step.stage.open_sources():
        record = ws.sources().get(source.name)
        if record is None or any(u.name not in record["units"] for u in source.units):
            return True
    return False


def _status(step: Step, ws: Workspace) -> str:
    try:
        inputs = resolve_inputs(ws, step.stage)
    except WorkspaceError:
        return "runs"
    run = run_id(step.stage, inputs)
    if is_complete(ws, step.stage, run):
        return "cached"
    record = ws.run_record(step.stage.name, run)
    return "resumes" if record is not None else "runs"


def undo(workspace: str | Path, stage: str) -> str | None:
    """Forget ``stage``'s current run (its signals and decisions), so exports and the report
    no longer see it; returns the run removed (None when the stage had none).

    >>> from pairsift import undo  # doctest: +SKIP
    >>> undo("ws", "dedup-semantic")  # doctest: +SKIP
    """
    name = get_stage(stage).name
    ws = Workspace.open(workspace)
    with ws.lock(name, f"undo {cli_name(name)}"):
        return ws.clear_stage(name)
