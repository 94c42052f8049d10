"""Declared stage options, checked before anything is written (scikit-learn's idea of
``_param_validation``, at pairsift's size).

A stage lists its options as :class:`Param` objects; the same declaration validates the Python
call, generates the CLI flags and checks recipe entries, so the three can never disagree.

>>> p = Param("eps", float, None, "SemDeDup's epsilon", low=0, high=1, closed="neither")
>>> p.check(0.1, "dedup-semantic")
0.1
>>> p.check(2.0, "dedup-semantic")
Traceback (most recent call last):
...
pairsift.errors.ConfigError: The 'eps' option of dedup-semantic must be a number in (0, 1); got 2.0.
"""

from __future__ import annotations

import difflib
import math
import warnings
from dataclasses import dataclass
from numbers import Integral, Real
from pathlib import Path
from typing import Any

from .errors import ConfigError

_BRACKETS = {"both": "[]", "left": "[)", "right": "(]", "neither": "()"}


@dataclass(frozen=True)
class Param:
    """One option of a stage: its type, default, allowed values and help text.

    ``kind`` is ``bool``, ``int``, ``float``, ``str``, ``Path`` or ``list`` (a list of strings;
    a comma-separated string is accepted, as the CLI passes it). An option whose default is
    ``None`` may be left unset. ``runtime`` options (device, threads, batch size) change how a
    run goes, not what it computes, so they are not part of the run id.
    """

    name: str
    kind: type
    default: Any = None
    help: str = ""
    choices: tuple[str, ...] | None = None
    low: float | None = None
    high: float | None = None
    closed: str = "both"  # which ends of [low, high] are allowed: both | left | right | neither
    runtime: bool = False
    aliases: tuple[str, ...] = ()  # former names, still accepted with a warning

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def describe(self) -> str:
        """What a valid value looks like, for error messages and help."""
        if self.choices:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        noun = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
                Path: "a path", list: "a list of strings"}[self.kind]
        if self.low is None and self.high is None:
            return noun
        left, right = _BRACKETS[self.closed]
        low = "-inf" if self.low is None else f"{self.low:g}"
        high = "inf" if self.high is None else f"{self.high:g}"
        return f"{noun} in {left}{low}, {high}{right}"

    def check(self, value: Any, owner: str) -> Any:
        """The value converted to this option's kind; ConfigError when it is not valid."""
        if value is None:
            if self.default is None:
                return None
            self._fail(value, owner)
        converted = self._convert(value)
        if converted is None or not self._allowed(converted):
            self._fail(value, owner)
        return converted

    def _convert(self, value: Any) -> Any:
        if self.kind is bool:
            return value if isinstance(value, bool) else None
        if isinstance(value, bool):  # bool is an int in Python; never accept it as a number
            return None
        if self.kind is int:
            return int(value) if isinstance(value, Integral) else None
        if self.kind is float:
            return float(value) if isinstance(value, Real) and not math.isnan(value) else None
        if self.kind is str:
            return value if isinstance(value, str) else None
        if self.kind is Path:
            return str(Path(value)) if isinstance(value, str | Path) else None
        if self.kind is list:
            items = value.split(",") if isinstance(value, str) else value
            if isinstance(items, list | tuple) and all(isinstance(v, str) for v in items):
                return [v.strip() for v in items if v.strip()]
        return None

    def _allowed(self, value: Any) -> bool:
        if self.choices is not None and value not in self.choices:
            return False
        if self.low is not None and (value < self.low or (value == self.low and
                                                          self.closed in ("right", "neither"))):
            return False
        return self.high is None or not (value > self.high or (
            value == self.high and self.closed in ("left", "neither")))

    def _fail(self, value: Any, owner: str) -> None:
        raise ConfigError(f"The {self.name!r} option of {owner} must be {self.describe()}; "
                          f"got {value!r}.")


def validate(owner: str, params: tuple[Param, ...], options: dict[str, Any]) -> dict[str, Any]:
    """Every declared option, checked and with defaults filled in; unknown names are errors.

    A former name (``Param.aliases``) still works and warns with the name that replaced it.
    """
    by_name = {p.name: p for p in params}
    renamed = {alias: p.name for p in params for alias in p.aliases}
    given: dict[str, Any] = {}
    for name, value in options.items():
        if name in renamed:
            warnings.warn(f"{owner}: option {name!r} is now called {renamed[name]!r}",
                          FutureWarning, stacklevel=3)
            name = renamed[name]
        elif name not in by_name:
            raise ConfigError(unknown_option(owner, name, list(by_name)))
        given[name] = value
    return {p.name: p.check(given.get(p.name, p.default), owner) for p in params}


def unknown_option(owner: str, name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    listed = ", ".join(known) if known else "none"
    return f"{owner} has no option {name!r}{hint}; its options are: {listed}."
