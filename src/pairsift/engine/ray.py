"""The Ray engine: the same stages, runs and files as the local engine, with the units of work
(:mod:`pairsift.engine.units`) spread over a Ray cluster.

- **map** stages: one Ray task per part. A stage that loads a model in ``setup`` (embed,
  parrot spot) runs on a pool of actors instead, the model loaded once per actor;
  ``gpus_per_worker`` gives each actor a share of a GPU.
- **global** stages: the driver plans; the tasks (batches of clusters for SemDeDup and
  FairDeDup, the k-means fit) run on a pool of actors, each of which plans once and
  checkpoints every task's result; the driver combines the checkpoints in plan order; the
  actors then write the parts from the combined state (k-means assignment, decisions).
- **decide** stages: the driver prepares the state (a threshold), one task per part decides.
- **ingest** runs in the driver, as on the local engine: parts are numbered in source order and
  each unit's uids are checked against every earlier one, a sequential scan.

Each unit writes its own files atomically, so what exists is never recomputed: a Ray run
killed midway resumes like a local one, and Ray retries a task whose worker died.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..stage import DecideStage, GlobalStage, MapStage, Stage, StageSummary
from ..workspace import Workspace
from .local import LocalEngine
from .threads import progress_bar
from .units import (
    load_task,
    map_summary,
    map_todo,
    run_map_part,
    run_task,
    state_summary,
    task_path,
    write_state_part,
)
from .views import Collection

RETRIES = 3  # a task whose worker died runs again, an actor that died restarts, this often


def connect(address: str | None = None) -> Any:
    """The ``ray`` module, joined to the cluster at ``address`` (None: a Ray started here),
    or to the one this process already joined."""
    if importlib.util.find_spec("ray") is None:
        raise ConfigError("--engine ray needs Ray: pip install 'pairsift[ray]'")
    import ray

    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, logging_level="warning")
    return ray


class RayEngine:
    """Runs every kind of stage on a Ray cluster (``address``; None: a local Ray)."""

    def __init__(self, address: str | None = None, gpus_per_worker: float = 0.0):
        self.address = address
        self.gpus_per_worker = gpus_per_worker

    def execute(self, ws: Workspace, stage: Stage, run: str, inputs: dict[str, Any], *,
                progress: bool) -> StageSummary:
        ray = connect(self.address)
        kind = {"map": self.map, "global": self.global_, "decide": self.decide}[stage.kind]
        return kind(ray, ws, stage, run, inputs, progress)

    def ingest(self, stage: Any, workspace: str | Path | Workspace, *, progress: bool) -> Any:
        return LocalEngine().ingest(stage, workspace, progress=progress)

    def map(self, ray: Any, ws: Workspace, stage: MapStage, run: str, inputs: dict[str, Any],
            progress: bool) -> StageSummary:
        todo = map_todo(ws, stage, run, inputs)
        summary = map_summary(ws, stage, run, todo)
        args = (str(ws.root), stage, run, inputs)
        with ExitStack() as stack:
            if _loads_model(stage) and todo:
                pool = stack.enter_context(self._actors(ray, MapWorker, len(todo), *args))
                done = pool.map_unordered(lambda actor, part: actor.map_part.remote(part), todo)
            else:
                task = ray.remote(map_part).options(num_cpus=1, max_retries=RETRIES)
                done = _completed(ray, [task.remote(*args, part) for part in todo])
            advance = stack.enter_context(progress_bar(stage.name, summary.samples,
                                                       enabled=progress))
            for samples, failed in done:
                advance(samples)
                summary.failed += failed
        summary.details = stage.summarize(Collection(ws, stage.name, run, inputs))
        return summary

    def global_(self, ray: Any, ws: Workspace, stage: GlobalStage, run: str,
                inputs: dict[str, Any], progress: bool) -> StageSummary:
        data = Collection(ws, stage.name, run, inputs)
        stage.setup(inputs)
        tasks = stage.plan(data)
        todo = [i for i in range(len(tasks)) if not task_path(ws, stage, inputs, i).exists()]
        args = (str(ws.root), stage, run, inputs)
        with self._actors(ray, CollectionWorker, max(len(todo), len(data.parts)),
                          *args) as pool:
            with progress_bar(stage.name, len(todo), unit="tasks", enabled=progress) as advance:
                for _ in pool.map_unordered(lambda actor, i: actor.run_task.remote(i), todo):
                    advance(1)
            state = stage.combine(data, (load_task(task_path(ws, stage, inputs, i))
                                         for i in range(len(tasks))))
            dropped = self._write_parts(ray, pool, data, state, progress)
        summary = state_summary(stage, data, dropped)
        summary.details = stage.summarize(data, state)
        return summary

    def decide(self, ray: Any, ws: Workspace, stage: DecideStage, run: str,
               inputs: dict[str, Any], progress: bool) -> StageSummary:
        data = Collection(ws, stage.name, run, inputs)
        state = stage.prepare(data)
        shared = ray.put(state)
        task = ray.remote(decide_part).options(num_cpus=1, max_retries=RETRIES)
        refs = [task.remote(str(ws.root), stage, run, inputs, shared, part)
                for part in data.parts]
        dropped = []
        with progress_bar(stage.name, len(refs), unit="parts", enabled=progress) as advance:
            for n in _completed(ray, refs):
                dropped.append(n)
                advance(1)
        summary = state_summary(stage, data, dropped)
        summary.details = stage.summarize(data, state)
        return summary

    @staticmethod
    def _write_parts(ray: Any, pool: Any, data: Collection, state: Any,
                     progress: bool) -> list[int]:
        """Every part written by the actors from one shared copy of the state."""
        shared = ray.put(state)
        dropped = []
        with progress_bar(f"{data.stage} (write)", len(data.parts), unit="parts",
                          enabled=progress) as advance:
            for n in pool.map_unordered(lambda actor, part: actor.write_part.remote(part, shared),
                                        data.parts):
                dropped.append(n)
                advance(1)
        return dropped

    @contextmanager
    def _actors(self, ray: Any, cls: type, work: int, *args: Any) -> Iterator[Any]:
        """A pool of ``cls`` actors, one per CPU (or per ``gpus_per_worker`` of a GPU) of the
        cluster and at most one per unit of work; killed on exit so the next stage gets the
        resources at once."""
        from ray.util import ActorPool

        gpus = self.gpus_per_worker
        resources = ray.cluster_resources()
        slots = int(resources.get("GPU", 0) // gpus) if gpus else int(resources.get("CPU", 1))
        if slots < 1:
            raise ConfigError(f"--gpus-per-worker {gpus:g}: the Ray cluster has "
                              f"{resources.get('GPU', 0):g} GPUs")
        actor = ray.remote(cls).options(num_cpus=1, num_gpus=gpus, max_restarts=RETRIES,
                                        max_task_retries=RETRIES)
        actors = [actor.remote(*args, on_gpu=gpus > 0) for _ in range(max(1, min(work, slots)))]
        try:
            yield ActorPool(actors)
        finally:
            for handle in actors:
                ray.kill(handle)


class MapWorker:
    """One map stage on one Ray worker: ``setup`` (the model) once, then part after part."""

    def __init__(self, root: str, stage: MapStage, run: str, inputs: dict[str, Any], *,
                 on_gpu: bool = False):
        if on_gpu:
            _use_gpu(stage)
        self.ws = Workspace.open(root)
        self.stage, self.run, self.inputs = stage, run, inputs
        stage.setup(inputs)
        self.pool = (ThreadPoolExecutor(LocalEngine.threads(stage), "pairsift")
                     if stage.per_sample else None)

    def map_part(self, part: int) -> tuple[int, int]:
        """(samples, failed samples) of the part, computed and written."""
        failed = run_map_part(self.ws, self.stage, self.run, self.inputs, part, pool=self.pool,
                              advance=lambda n: None)
        return self.ws.part_rows(part), failed

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()


def map_part(root: str, stage: MapStage, run: str, inputs: dict[str, Any],
             part: int) -> tuple[int, int]:
    """One part of a map stage without a model, as one Ray task."""
    worker = MapWorker(root, stage, run, inputs)
    try:
        return worker.map_part(part)
    finally:
        worker.close()


def decide_part(root: str, stage: DecideStage, run: str, inputs: dict[str, Any], state: Any,
                part: int) -> int:
    """One part of a decide stage, as one Ray task; returns the rows it drops."""
    return write_state_part(stage, Collection(Workspace.open(root), stage.name, run, inputs),
                            state, part)


class CollectionWorker:
    """One global stage on one Ray worker: the collection view (its caches), and
    the plan a global stage's tasks and parts read (made once: plans are deterministic)."""

    def __init__(self, root: str, stage: GlobalStage, run: str, inputs: dict[str, Any], *,
                 on_gpu: bool = False):
        if on_gpu:
            _use_gpu(stage)
        stage.setup(inputs)
        self.stage = stage
        self.data = Collection(Workspace.open(root), stage.name, run, inputs)
        self.tasks: list[Any] | None = None

    def _plan(self) -> list[Any]:
        if self.tasks is None:
            self.tasks = self.stage.plan(self.data)
        return self.tasks

    def run_task(self, i: int) -> None:
        """Task ``i`` of the plan, checkpointed where the driver reads it."""
        run_task(self.stage, self.data, self._plan(), i)

    def write_part(self, part: int, state: Any) -> int:
        self._plan()  # part_output may read what plan set (FairDeDup's subgroup names)
        return write_state_part(self.stage, self.data, state, part)


def _loads_model(stage: Stage) -> bool:
    """A stage whose ``setup`` loads something is worth an actor: loaded once, many parts."""
    return type(stage).setup is not Stage.setup


def _use_gpu(stage: Stage) -> None:
    """On an actor given a GPU, a stage left on the CPU runs on it (Ray sets which GPU)."""
    if stage.options.get("device") == "cpu":
        stage.options["device"] = "cuda"


def _completed(ray: Any, refs: list[Any]) -> Iterator[Any]:
    """Results of ``refs`` as each finishes."""
    pending = list(refs)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        yield ray.get(done[0])
