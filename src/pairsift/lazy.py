"""Modules imported on first use, so commands that never touch a model start fast.

``torch = lazy("torch")`` at module level costs nothing; the first attribute access does a
normal, complete ``import torch`` (unlike ``importlib.util.LazyLoader``, which breaks packages
like torch that import their own submodules while initialising).
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class _LazyModule:
    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        module: ModuleType = importlib.import_module(self._name)
        return getattr(module, attr)

    def __repr__(self) -> str:
        return f"<lazy module {self._name!r}>"


def lazy(name: str) -> Any:
    return _LazyModule(name)
