"""The Python API: one function per CLI command, with the same names.

Each stage's function is made from its registry entry, so its keyword options are exactly the
stage's declared options (the CLI flags and recipe keys): ``pairsift.dedup_semantic(ws,
eps=0.1)`` is ``pairsift dedup semantic -w ws --eps 0.1`` is ``- dedup-semantic: {eps: 0.1}``.
Every stage function returns a :class:`~pairsift.stage.StageSummary` (``ingest``: an
``IngestSummary``).

>>> import pairsift
>>> summary = pairsift.demo("demo-dir", progress=False)  # doctest: +SKIP
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .engine.runner import ENGINE_PARAMS, executor, run_stage
from .stage import Stage, get_stage, option_lines, python_name, stage_names


def stage_function(name: str) -> Callable[..., Any]:
    """``pairsift.<name>(workspace, **options)``: build the stage, then run it."""
    cls = get_stage(name)

    renamed = {alias: p.name for p in cls.params for alias in p.aliases}

    def call(*args: Any, **options: Any) -> Any:
        for old in [k for k in options if k in renamed]:
            warnings.warn(f"{name}: option {old!r} is now called {renamed[old]!r}",
                          FutureWarning, stacklevel=2)
            options[renamed[old]] = options.pop(old)
        bound = signature.bind(*args, **options)
        bound.apply_defaults()
        values = dict(bound.arguments)
        workspace, progress = values.pop("workspace"), values.pop("progress")
        engine = executor(**{p.name: values.pop(p.name) for p in ENGINE_PARAMS})
        if cls.kind == "source":
            sources = values["sources"]
            values["sources"] = [str(s) for s in (
                [sources] if isinstance(sources, str | Path) else sources)]
        return run_stage(cls(**values), workspace, engine=engine, progress=progress)

    signature = _signature(cls)
    call.__signature__ = signature  # type: ignore[attr-defined]
    call.__name__ = call.__qualname__ = python_name(name)
    call.__doc__ = _doc(cls)
    call.__module__ = __name__
    return call


def _signature(cls: type[Stage]) -> inspect.Signature:
    keyword = inspect.Parameter.KEYWORD_ONLY
    positional = inspect.Parameter.POSITIONAL_OR_KEYWORD
    params = [inspect.Parameter("workspace", positional, annotation="str | Path")]
    for p in cls.params:
        if cls.kind == "source" and p.name == "sources":
            params.insert(0, inspect.Parameter("sources", positional, annotation="list[str]"))
        else:
            params.append(inspect.Parameter(p.name, keyword, default=p.default,
                                            annotation=p.kind.__name__))
    params += [inspect.Parameter(p.name, keyword, default=p.default, annotation=p.kind.__name__)
               for p in ENGINE_PARAMS]
    params.append(inspect.Parameter("progress", keyword, default=True, annotation="bool"))
    return inspect.Signature(params)


def _doc(cls: type[Stage]) -> str:
    options = "\n".join(f"    {line}" for line in option_lines(cls))
    return f"{inspect.cleandoc(cls.__doc__ or cls.name)}\n\nOptions:\n{options}\n"


_STAGES = {python_name(n): stage_function(n) for n in stage_names()}
globals().update(_STAGES)

# Commands that are not stages, imported on first use (they pull in scipy, matplotlib,
# webdataset: seconds that the CLI's help should not pay).
COMMANDS = {
    "calibrate": "search", "classify": "search", "index": "search", "search": "search",
    "serve": "search", "demo": "demo", "explain": "explain", "export": "export",
    "parrot_audit": "parrot", "parrot_rates": "parrot", "report": "report", "run": "run",
    "undo": "run",
    "evaluate": "evaluate", "clip_benchmark": "evaluate", "train": "train", "compare": "compare",
}
__all__ = sorted([*_STAGES, *COMMANDS])


def __getattr__(name: str) -> Any:
    if name not in COMMANDS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    function = getattr(importlib.import_module(f".pipeline.{COMMANDS[name]}", __package__),
                       name)
    globals()[name] = function
    return function
