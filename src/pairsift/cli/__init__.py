"""The ``pairsift`` command line: one command per registered stage (made from its declared
options) plus the commands that are not stages (export, explain, report, search, run...).

Only user errors (:class:`pairsift.errors.PairsiftError`) become one-line messages; anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

from . import stages  # noqa: F401 - stage commands first: --help lists them first
from .app import app

# isort: split
from . import commands  # noqa: F401 - then the other commands

__all__ = ["app"]
