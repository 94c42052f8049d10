"""Stages: one object type and one registry for every command that computes or decides
(docs/design.md §4).

A stage has a ``name`` (the recipe key; the CLI command is the name with its first dash as a
space, ``dedup-semantic`` → ``pairsift dedup semantic``; the Python function is the name with
underscores, ``pairsift.dedup_semantic``), declared :class:`~pairsift.params.Param` options
validated when the object is built, the stages whose outputs it reads, and one of four kinds:

- ``map``: ``prepare`` (per sample, on the engine's thread pool) → ``process`` (per batch, e.g. a
  model) → ``assemble`` (per part). Independent per part, so parts resume and scale out.
- ``global``: ``plan`` independent tasks over the collection (batches of clusters), ``run_task``
  each (checkpointed by the engine), ``combine`` the results, then write ``part_output`` per part.
- ``decide``: ``prepare`` one state from the collection (a threshold), then ``decide`` per part.
- ``source``: ingest, which makes the parts everything else reads.

A stage never opens workspace files, prints, or knows about threads or Ray: the engine hands it
its inputs (:mod:`pairsift.engine.views`) and persists what it returns, atomically, per part.
The object holds only its options until ``setup()``, so it pickles to a worker.

>>> from pairsift.stage import get_stage
>>> stage = get_stage("filter-clip-score")(top=0.3)  # doctest: +SKIP
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Container, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pyarrow as pa

from .errors import ConfigError
from .params import Param, validate

if TYPE_CHECKING:
    from .engine.views import Collection, PartData
    from .workspace import Workspace

KINDS = ("source", "map", "global", "decide")
_REGISTRY: dict[str, type[Stage]] = {}
Dependencies = tuple[tuple[str, ...], tuple[str, ...]]  # (required, optional) stages
# pairsift.stages.<module> registers its stages on import, in the order commands are listed
_MODULES = ("ingest", "embed", "score", "hashdedup", "cluster", "semdedup", "fairdedup",
            "parrot", "textguard", "basicfilter", "imagebased", "recaption", "mix",
            "finetune")


class Stage(ABC):
    """Base class: options validated at construction, inputs resolved against a workspace."""

    name: ClassVar[str]
    kind: ClassVar[str]
    params: ClassVar[tuple[Param, ...]] = ()
    requires: ClassVar[tuple[str, ...]] = ()  # stages whose current run it reads (must exist)
    uses: ClassVar[tuple[str, ...]] = ()  # stages it reads when they have run
    reason: ClassVar[str | None] = None  # the drop reason, for stages that decide
    version: ClassVar[int] = 1  # bump when the stage computes something else: new run ids
    reads_embeddings: ClassVar[bool] = False  # reads the model's stored embeddings
    auto: ClassVar[bool] = False  # may run with default options when a stage requires it

    def __init__(self, **options: Any):
        self.options = validate(self.name, self.params, options)
        self.check()

    def check(self) -> None:  # noqa: B027 - a hook, often unneeded
        """Rules between options (e.g. "eps or keep_fraction, not both"); raise ConfigError."""

    @property
    def config(self) -> dict[str, Any]:
        """The options that change what the stage computes (part of the run id)."""
        runtime = {p.name for p in self.params if p.runtime}
        return {k: v for k, v in self.options.items() if k not in runtime}

    @property
    def decides(self) -> bool:
        return self.reason is not None

    def dependencies(self, present: Container[str] = ()) -> Dependencies:
        """(required, optional) upstream stages of this configuration; ``present``: the
        stages that have a current run (or that a recipe's earlier steps make), for a stage
        whose needs depend on what already ran."""
        return self.requires, self.uses

    def extra_inputs(self, ws: Workspace) -> dict[str, Any]:
        """Other things a run depends on (a labels file's digest), part of the run id."""
        return {}

    def __getitem__(self, option: str) -> Any:
        return self.options[option]

    def __repr__(self) -> str:
        given = ", ".join(f"{k}={v!r}" for k, v in self.options.items() if v is not None)
        return f"{type(self).__name__}({given})"

    def __getstate__(self) -> dict[str, Any]:
        """Only the options travel to a worker; models are built there by ``setup``."""
        return {"options": self.options}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.options = state["options"]

    def setup(self, inputs: dict[str, Any]) -> None:  # noqa: B027 - a hook, often unneeded
        """Load models once per worker, before the first part or task. ``inputs`` are the
        run's resolved inputs (e.g. the model when the option was left unset)."""


def fail(message: str) -> None:
    raise ConfigError(message)


# -- map ----------------------------------------------------------------------------------------
SKIP = object()  # prepare's answer for a sample with nothing to compute


@dataclass
class Sample:
    """One row of a part for a per-sample ``prepare``: its columns and its image bytes."""

    row: dict[str, Any]
    data: bytes | None = None


@dataclass
class PartOutput:
    """What a stage returns for one part; the engine writes each piece atomically."""

    signals: pa.Table | None = None  # the stage's columns, one row per part row (uid added)
    embeddings: dict[str, np.ndarray] | None = None  # space -> rows aligned with the part
    embeddings_model: str | None = None  # the model slug the embeddings are stored under
    decisions: Decisions | None = None


@dataclass
class Decisions:
    """A decide stage's verdicts for one part: which rows drop, why, and the evidence.

    ``evidence`` maps a name to one value per row; it is stored (as JSON) for dropped rows only,
    and for the kept rows in ``noted`` (a kept sample whose caption was replaced).
    ``reason`` is one reason for all drops or one per row.
    """

    drop: np.ndarray
    reason: str | Sequence[str]
    evidence: dict[str, Sequence[Any] | np.ndarray] = field(default_factory=dict)
    noted: np.ndarray | None = None  # kept rows that carry a reason and evidence too


class MapStage(Stage):
    """Independent per part. Per-sample stages define ``prepare`` (and ``process`` for batched
    model work); vectorised ones only ``assemble``."""

    kind = "map"
    columns: ClassVar[tuple[str, ...]] = ("uid",)  # part columns read
    needs_image: ClassVar[bool] = False  # prepare gets the image bytes
    per_sample: ClassVar[bool] = False  # the engine calls prepare/process per sample/batch
    batch: ClassVar[int] = 64  # samples per process() call, unless a 'batch_size' option says

    def prepare(self, sample: Sample) -> Any:
        """Per-sample work (decode, OCR, hashing); runs on the engine's threads. Return
        :data:`SKIP` for a sample with nothing to compute (its result is None, no error)."""
        return sample

    def sample_table(self, part: PartData) -> pa.Table:
        """The columns each Sample's row carries (the part's; a stage may join signals)."""
        return part.rows

    def process(self, items: list[Any]) -> Sequence[Any]:
        """Batched work on prepared samples (a model's forward pass); one result per item."""
        return items

    @abstractmethod
    def assemble(self, part: PartData, results: list[Any] | None) -> PartOutput:
        """The part's outputs. ``results`` has one entry per row (None where the sample
        failed and became an error row), or is None for stages without per-sample work."""

    def batch_size(self) -> int:
        return int(self.options.get("batch_size") or self.batch)

    def part_done(self, part: PartData) -> bool:
        """Whether this run already wrote the part (the output file is the marker)."""
        return part.signal_exists()

    def summarize(self, data: Collection) -> dict[str, Any]:
        """Figures over every part once all are done (read from the stored outputs)."""
        return {}


# -- global -------------------------------------------------------------------------------------
class GlobalStage(Stage):
    """Needs the collection, but decomposes into independent tasks (clusters, batches of them)."""

    kind = "global"
    # the options the tasks' results depend on (None: all of them). SemDeDup's scores do not
    # depend on eps, so a new eps re-decides from the finished tasks instead of re-scoring.
    task_options: ClassVar[tuple[str, ...] | None] = None

    def plan(self, data: Collection) -> list[Any]:
        """Small, picklable task descriptions; each one's result is checkpointed."""
        return []

    def run_task(self, data: Collection, task: Any) -> dict[str, np.ndarray]:
        """One task's result: arrays, saved as the task's checkpoint. Stages that plan no task
        (their work fits in ``combine``) never get here."""
        raise TypeError(f"{self.name} planned a task but defines no run_task")

    def combine(self, data: Collection, results: Iterable[dict[str, np.ndarray]]) -> Any:
        """One state from every task's result (arrays of a few bytes per sample)."""
        return list(results)

    @abstractmethod
    def part_output(self, data: Collection, state: Any, part: int) -> PartOutput:
        """One part's signals and decisions from the combined state. It may run on another
        worker (the Ray engine): it reads ``state`` and what ``plan`` set on the stage, never
        what ``combine`` set, and changes neither."""

    def summarize(self, data: Collection, state: Any) -> dict[str, Any]:
        return {}


# -- decide -------------------------------------------------------------------------------------
class DecideStage(Stage):
    """Vectorised over signal columns per part; ``prepare`` computes what needs every part
    first (a top-fraction's cut), then ``decide`` runs part by part."""

    kind = "decide"

    def prepare(self, data: Collection) -> Any:
        return None

    @abstractmethod
    def decide(self, part: PartData, state: Any) -> Decisions:
        """One part's verdicts (``state``: what ``prepare`` computed)."""

    def summarize(self, data: Collection, state: Any) -> dict[str, Any]:
        return {}


# -- summaries ----------------------------------------------------------------------------------
@dataclass
class StageSummary:
    """What a stage run did, the same type for every stage.

    Stage-specific figures (a threshold, ε, a sweep, cluster sizes) are in ``details`` and also
    readable as attributes: ``summary.threshold``.
    """

    stage: str
    run: str
    cached: bool = False  # the run had finished before with this config: nothing recomputed
    samples: int = 0
    failed: int = 0  # samples that became error rows in this run
    parts_done: int = 0
    parts_skipped: int = 0
    kept: int | None = None
    dropped: int | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        details = self.__dict__.get("details", {})
        if name in details:
            return details[name]
        raise AttributeError(f"{type(self).__name__} of {self.__dict__.get('stage')!r} has no "
                             f"{name!r}; details: {sorted(details)}")

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if k != "details"} | self.details


# -- registry -----------------------------------------------------------------------------------
def register(cls: type[Stage]) -> type[Stage]:
    """Class decorator: make a stage available to the CLI, the API, recipes and engines."""
    if cls.kind not in KINDS:
        raise TypeError(f"{cls.__name__}.kind must be one of {KINDS}")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise TypeError(f"two stages are named {cls.name!r}")
    _REGISTRY[cls.name] = cls
    return cls


def _load_all() -> None:
    import importlib

    for module in _MODULES:
        importlib.import_module(f"pairsift.stages.{module}")


def stage_names() -> list[str]:
    _load_all()
    return list(_REGISTRY)


def get_stage(name: str) -> type[Stage]:
    """The stage class registered under ``name`` (``dedup-semantic``; ``dedup_semantic`` and
    ``dedup semantic`` are accepted too)."""
    _load_all()
    key = name.strip().replace("_", "-").replace(" ", "-")
    if key not in _REGISTRY:
        import difflib

        close = difflib.get_close_matches(key, list(_REGISTRY), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"unknown stage {name!r}{hint}; stages are: {', '.join(_REGISTRY)}")
    return _REGISTRY[key]


def python_name(stage: str) -> str:
    return stage.replace("-", "_")


def option_lines(cls: type[Stage]) -> list[str]:
    """One help line per option, for docs and ``--help``."""
    return [f"{p.name}: {p.help} ({p.describe()}; default {p.default!r})" for p in cls.params]

