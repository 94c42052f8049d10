"""The ``pairsift`` command line: one command per registered stage (made from its declared
options) plus the commands that are not stages (export, explain, report, search, run...).

Only user errors (:class:`pairsift.errors.PairsiftError`) become one-line messages; anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

from . import commands, stages  # noqa: E402, F401 - register the commands on the app
from .app import app

__all__ = ["app"]
