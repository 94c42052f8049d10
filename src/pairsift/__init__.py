"""pairsift: turn raw web image-text pairs into a smaller, cleaner, fairer CLIP training set."""

__version__ = "0.1.0"  # before the imports below: submodules read it

from typing import Any  # noqa: E402

from . import api  # noqa: E402
from .workspace import Workspace  # noqa: E402

__all__ = ["Workspace", *api.__all__]


def __getattr__(name: str) -> Any:
    """``pairsift.embed``, ``pairsift.export``...: the functions of :mod:`pairsift.api`."""
    if name in api.__all__:
        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
