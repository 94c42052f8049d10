"""Recipes: a whole curation in one YAML file, validated before anything runs (docs/design.md §4).

```yaml
sources:                       # ingest options per source; paths relative to the recipe
  - {path: shards/, name: pool}
model: default                 # the model option of every stage that takes one
stages:                        # stage name: its options (the CLI flags, underscores)
  - embed: {}
  - score: {}
  - filter-clip-score: {keep_fraction: 0.3}
  - dedup-exact: {}
  - cluster: {k: 1000}
  - dedup-semantic: {eps: 0.07}
export:                        # optional: one or more exports of the kept samples
  - {out: subset/, format: webdataset}
report: {}                     # optional: the HTML report ({out: FILE} to choose where)
```

Every entry is checked first — unknown keys, stages and options, wrong values, a stage whose
input no earlier step makes and the workspace does not have — and the error names the line.
Running it again skips every step that already finished with the same options and inputs, so a
killed ``pairsift run`` resumes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError, PairsiftError
from .params import unknown_option
from .stage import Stage, get_stage

TOP_LEVEL = ("sources", "model", "stages", "export", "report")
SOURCE_KEYS = ("path", "name", "kind", "captions", "image_column", "caption_column",
               "chunk_size", "max_pixels", "threads")
EXPORT_KEYS = ("out", "format", "shard_size", "overwrite")
LINE = "__line__"


class _LineLoader(yaml.SafeLoader):
    """Records the line of every mapping, so errors can point into the file."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        mapping = super().construct_mapping(node, deep=deep)
        mapping[LINE] = node.start_mark.line + 1
        return mapping


@dataclass
class Step:
    """One validated step: a built stage (options checked) and where it was written."""

    line: int
    stage: Stage


@dataclass
class Recipe:
    path: Path
    text: str
    sources: list[Step] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    exports: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    report: dict[str, Any] | None = None

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()[:12]


def load_recipe(path: str | Path, base: str | Path | None = None) -> Recipe:
    """Parse and validate a recipe; relative paths resolve against ``base`` (default: the
    recipe's folder). Raises ConfigError naming ``file:line`` for the first problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the recipe: {exc.strerror}") from None
    try:
        data = yaml.load(text, Loader=_LineLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a recipe is a mapping with {', '.join(TOP_LEVEL)}")
    return _Parser(path, Path(base) if base is not None else path.parent).parse(data, text)


class _Parser:
    def __init__(self, path: Path, base: Path):
        self.path, self.base = path, base

    def fail(self, line: int | None, message: str) -> ConfigError:
        return ConfigError(f"{self.path}:{line}: {message}" if line else f"{self.path}: "
                           f"{message}")

    def checked(self, entry: dict[str, Any], line: int | None, what: str,
                keys: tuple[str, ...], needs: str | None = None) -> int | None:
        """``entry``'s line (taken out of it); fails on a key not in ``keys``, or without
        ``needs``."""
        where = entry.pop(LINE, line)
        for key in entry:
            if key not in keys:
                raise self.fail(where, unknown_option(what, key, list(keys)))
        if needs is not None and needs not in entry:
            raise self.fail(where, f"{what} needs `{needs}`")
        return where

    def parse(self, data: dict[str, Any], text: str) -> Recipe:
        line = self.checked(data, None, "a recipe", TOP_LEVEL)
        recipe = Recipe(self.path, text)
        model = data.get("model")
        recipe.sources = [self.source(entry, line) for entry in self.listed(data, "sources")]
        for entry in self.listed(data, "stages"):
            recipe.steps.append(self.stage(entry, line, model))
        recipe.exports = [self.export(entry, line) for entry in self.listed(data, "export")]
        if data.get("report") is not None:
            report = data["report"] if isinstance(data["report"], dict) else {}
            recipe.report = {k: v for k, v in report.items() if k != LINE}
        if not recipe.steps and not recipe.sources:
            raise self.fail(line, "the recipe has no sources and no stages")
        return recipe

    def listed(self, data: dict[str, Any], key: str) -> list[Any]:
        value = data.get(key) or []
        return value if isinstance(value, list) else [value]

    def resolve(self, value: Any) -> str:
        path = Path(str(value)).expanduser()
        return str(path if path.is_absolute() else self.base / path)

    def source(self, entry: Any, line: int | None) -> Step:
        entry = {"path": entry} if isinstance(entry, str) else dict(entry)
        where = self.checked(entry, line, "a source", SOURCE_KEYS, needs="path")
        options = {k: v for k, v in entry.items() if k != "path"}
        if options.get("captions"):
            options["captions"] = self.resolve(options["captions"])
        return Step(where, self.build("ingest", {"sources": [self.resolve(entry["path"])],
                                                 **options}, where))

    def stage(self, entry: Any, line: int | None, model: str | None) -> Step:
        if isinstance(entry, str):
            entry = {entry: {}}
        if not isinstance(entry, dict):
            raise self.fail(line, f"a stage entry is `- name: {{options}}`, not {entry!r}")
        where = entry.pop(LINE, line)
        if len(entry) != 1:
            raise self.fail(where, f"one stage per entry, got {sorted(entry)}")
        (name, options), = entry.items()
        options = dict(options or {})
        options.pop(LINE, None)
        try:
            cls = get_stage(name)
        except ConfigError as exc:
            raise self.fail(where, str(exc)) from None
        if cls.kind == "source":
            raise self.fail(where, "ingest is written under `sources:`, not as a stage")
        if model is not None and "model" in {p.name for p in cls.params}:
            options.setdefault("model", model)
        for key in ("labels", "reference"):  # file options are relative to the recipe too
            if options.get(key):
                options[key] = self.resolve(options[key])
        return Step(where, self.build(cls.name, options, where))

    def build(self, name: str, options: dict[str, Any], line: int | None) -> Stage:
        try:
            return get_stage(name)(**options)
        except PairsiftError as exc:
            raise self.fail(line, str(exc)) from None

    def export(self, entry: Any, line: int | None) -> tuple[int | None, dict[str, Any]]:
        entry = dict(entry)
        where = self.checked(entry, line, "an export", EXPORT_KEYS, needs="out")
        entry["out"] = self.resolve(entry["out"])
        return where, entry
