"""The errors a user can act on. The CLI prints these as one line; anything else is a bug and
keeps its traceback.

``ConfigError`` and ``SourceError`` are also ``ValueError`` so that callers catching the
built-in keep working.
"""

from __future__ import annotations


class PairsiftError(Exception):
    """Something the user can fix: the message names the file or option, and the fix."""


class ConfigError(PairsiftError, ValueError):
    """A stage option, recipe or command argument is invalid; nothing has been written."""


class SourceError(PairsiftError, ValueError):
    """A source cannot be read as given; the message names the file and the fix."""


class WorkspaceError(PairsiftError):
    """A workspace is missing, malformed or asked for something it does not hold."""


class WorkspaceBusyError(WorkspaceError):
    """Another process holds a lock this run needs (the same stage on the same workspace)."""
