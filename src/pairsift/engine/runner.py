"""Run one stage on a workspace: lock, bring stale inputs up to date, resolve the run id,
skip what is finished, execute on an engine, record the run.

The run id is the hash of the stage's config and of its *inputs*: the upstream runs it reads,
the embedding model, and — for stages that need the whole collection — the set of parts. So a
run made from other inputs is a different run, never a silent reuse: after more data is
ingested, ``dedup semantic`` re-clusters and re-scores instead of reusing old checkpoints, while
a map stage (its outputs are per part) only computes the new parts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console

from ..errors import ConfigError, WorkspaceError
from ..models import weights_version
from ..params import Param, validate
from ..stage import Stage, StageSummary, get_stage, stage_names
from ..workspace import Workspace, cli_name, config_hash

_console = Console(stderr=True)


def run_stage(stage: Stage, workspace: str | Path | Workspace, *, engine: str | Any = "local",
              progress: bool = True) -> Any:
    """Run ``stage`` (already validated: building it checked its options) on ``workspace``;
    ``engine``: a name or an engine object (:func:`executor`)."""
    engine = executor(engine)
    if stage.kind == "source":
        return engine.ingest(stage, workspace, progress=progress)
    ws = workspace if isinstance(workspace, Workspace) else Workspace.open(workspace)
    with ws.lock(stage.name, cli_name(stage.name)):
        _refresh_upstream(ws, stage, engine=engine, progress=progress)
        ws.refresh()
        inputs = resolve_inputs(ws, stage)
        run = run_id(stage, inputs)
        if is_complete(ws, stage, run):
            ws.make_current(stage.name, run)  # asking for an earlier run again brings it back
            return cached_summary(ws, stage.name, run)
        ws.begin_run(stage.name, run, {"kind": stage.kind, "config": stage.config,
                                       "options": stage.options, "inputs": inputs})
        summary = engine.execute(ws, stage, run, inputs, progress=progress)
        models = summary.details.pop("models", None)
        ws.finish_run(stage.name, run, summary.to_dict(), models=models)
    return summary


def run_id(stage: Stage, inputs: dict[str, Any]) -> str:
    """The run's name: what it computes (config and version) from what (inputs)."""
    return config_hash({"config": stage.config, "inputs": inputs, "version": stage.version})


def resolve_inputs(ws: Workspace, stage: Stage) -> dict[str, Any]:
    """What this run reads: upstream current runs, the model, and the parts (non-map)."""
    required, optional = stage.dependencies(ws.current_stages())
    inputs: dict[str, Any] = {}
    if stage.reads_embeddings:
        inputs |= model_inputs(stage.options.get("model") or ws.current_model())
    for name in required:
        run = ws.current_run(name)
        if run is None:
            raise WorkspaceError(f"{stage.name} needs {name!r} first: run "
                                 f"`pairsift {cli_name(name)}` on {ws.root}")
        inputs[name] = run
    for name in optional:
        if ws.current_run(name):
            inputs[name] = ws.current_run(name)
    if stage.kind != "map":
        inputs["parts"] = ws.parts_fingerprint()
    inputs.update(stage.extra_inputs(ws))
    return inputs


def model_inputs(model: str | None) -> dict[str, Any]:
    """The model a run reads embeddings of, and the digest of its checkpoint file when it has
    one: a checkpoint retrained in place makes new runs, not the old runs' results."""
    version = weights_version(model) if model else None
    return {"model": model} | ({"weights": version} if version else {})


def is_complete(ws: Workspace, stage: Stage, run: str) -> bool:
    record = ws.run_record(stage.name, run)
    if record is None or record.get("status") != "finished":
        return False
    return stage.kind != "map" or not _missing_parts(ws, stage, run, record["inputs"])


def _missing_parts(ws: Workspace, stage: Stage, run: str, inputs: dict[str, Any]) -> list[int]:
    from .views import PartData

    return [p for p in ws.part_ids()
            if not stage.part_done(PartData(ws, stage.name, run, inputs, p))]


def cached_summary(ws: Workspace, stage: str, run: str) -> StageSummary:
    recorded = dict(ws.run_record(stage, run).get("summary") or {})
    fields = {k: recorded.pop(k) for k in list(recorded) if k in StageSummary.__dataclass_fields__}
    fields.update(stage=stage, run=run, cached=True, details=recorded,
                  parts_done=0, parts_skipped=len(ws.part_ids()), failed=0)
    return StageSummary(**fields)


def _refresh_upstream(ws: Workspace, stage: Stage, *, engine: Any, progress: bool) -> None:
    """Re-run every upstream stage whose current run no longer matches the workspace."""
    if stage.reads_embeddings:
        _refresh_embeddings(ws, stage.options.get("model"), engine=engine, progress=progress)
    required, optional = stage.dependencies(ws.current_stages())
    for name in required:
        auto = get_stage(name)
        if ws.current_run(name) is None and auto.auto:
            run_stage(auto(**_runtime(stage, auto)), ws, engine=engine, progress=progress)
    bring_up_to_date(ws, [*required, *optional], engine=engine, progress=progress)


def bring_up_to_date(ws: Workspace, stages: list[str], *, engine: str | Any = "local",
                     progress: bool = True) -> None:
    """Run again, with their recorded options, those of ``stages`` whose current run no
    longer matches the workspace (more parts, another upstream run). Exports call this, so
    an export never misses the decisions of parts added since a stage ran."""
    known = set(stage_names())
    for name in stages:
        record = ws.run_record(name) if ws.current_run(name) else None
        if record is None or name not in known:  # not a registered stage: nothing to re-run
            continue
        upstream = get_stage(name)(**record["options"])
        if _stale(ws, upstream, record):
            _console.print(f"[yellow]{cli_name(name)}[/yellow] is out of date (the workspace "
                           f"changed since it ran): running it again with the same options")
            run_stage(upstream, ws, engine=engine, progress=progress)


def _refresh_embeddings(ws: Workspace, model: str | None, *, engine: Any,
                        progress: bool) -> None:
    record = ws.run_record("embed") if ws.current_run("embed") else None
    if record is None:
        return  # resolve_inputs names the command to run
    options = dict(record["options"])
    if model is not None and model != options["model"]:
        options = {"model": model}
    embed = get_stage("embed")(**options)
    if _missing_parts(ws, embed, run_id(embed, resolve_inputs(ws, embed)), {}):
        _console.print(f"[yellow]embed[/yellow]: some parts have no {options['model']} "
                       "embeddings yet: embedding them first")
        run_stage(embed, ws, engine=engine, progress=progress)


def _stale(ws: Workspace, stage: Stage, record: dict[str, Any]) -> bool:
    try:
        inputs = resolve_inputs(ws, stage)
    except WorkspaceError:
        # an input that runs by itself (text-detect once parrot-spot is undone): run again;
        # one the user must run is gone (undone): its outputs are all there is
        required, _ = stage.dependencies(ws.current_stages())
        return any(ws.current_run(n) is None and get_stage(n).auto for n in required)
    if inputs != record.get("inputs"):
        return True
    return stage.kind == "map" and bool(_missing_parts(ws, stage, record["run"], inputs))


def _runtime(stage: Stage, upstream: type[Stage]) -> dict[str, Any]:
    """Runtime options (threads, device) passed on to an upstream stage that has them."""
    names = {p.name for p in upstream.params if p.runtime}
    return {k: v for k, v in stage.options.items() if k in names}


# How stages run, declared once for every stage command, the Python API and `pairsift run`.
ENGINE_PARAMS = (
    Param("engine", str, "local", "Where stages run: local (this process) or ray (a Ray "
                                  "cluster).", choices=("local", "ray")),
    Param("address", str, None, "With --engine ray: the cluster to join (auto, HOST:6379 or "
                                "ray://HOST:10001); unset: a Ray started for this command."),
    Param("gpus_per_worker", float, 0.0, "With --engine ray: GPUs per model actor (0.5: two "
                                         "actors per GPU); their stages then run on cuda.",
          low=0),
)


def executor(engine: str | Any = "local", address: str | None = None,
             gpus_per_worker: float = 0.0) -> Any:
    """The engine object for ``--engine/--address/--gpus-per-worker`` (an engine object
    passes through, so nested runs share it)."""
    if not isinstance(engine, str):
        return engine
    return _executor(**validate("engine", ENGINE_PARAMS, {
        "engine": engine, "address": address, "gpus_per_worker": gpus_per_worker}))


def _executor(engine: str, address: str | None, gpus_per_worker: float) -> Any:
    if engine == "ray":
        from .ray import RayEngine

        return RayEngine(address, gpus_per_worker)
    if address is not None or gpus_per_worker:
        raise ConfigError("--address and --gpus-per-worker are options of --engine ray")
    from .local import LocalEngine

    return LocalEngine()
