"""An on-disk cache for arrays that take seconds to compute and depend only on named inputs.

Entries live in the user's cache folder: ``$PAIRSIFT_CACHE``, else ``$XDG_CACHE_HOME/pairsift``,
else ``~/.cache/pairsift``. An entry's file name is a digest of everything it depends on, so a
new package version or prompt set gets a new file. Files are written atomically and checked on
load (zip CRC, key, shape, dtype, finite values): anything else is recomputed, never trusted.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np


def cache_dir() -> Path:
    """``$PAIRSIFT_CACHE``, else ``$XDG_CACHE_HOME/pairsift``, else ``~/.cache/pairsift``."""
    if folder := os.environ.get("PAIRSIFT_CACHE"):
        return Path(folder).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "pairsift"


def cache_path(name: str, key: dict) -> Path:
    """Where the entry ``name`` computed from ``key`` (JSON-serialisable) is stored."""
    return cache_dir() / f"{name}-{hashlib.sha256(_key_text(key).encode()).hexdigest()[:32]}.npz"


def cached_array(name: str, key: dict, compute: Callable[[], np.ndarray], *,
                 shape: tuple[int, ...], dtype: type = np.float32) -> np.ndarray:
    """``compute()``, or the array stored under ``name`` and ``key`` by an earlier call.

    A stored array is used only if it was written for the same key with ``shape`` and
    ``dtype``; otherwise it is recomputed and the entry replaced. A cache folder that cannot
    be written only costs the recomputation next time (with a warning).
    """
    path = cache_path(name, key)
    array = _load(path, _key_text(key), shape, np.dtype(dtype))
    if array is None:
        array = np.ascontiguousarray(compute(), dtype=dtype)
        _save(path, _key_text(key), array)
    return array


def cached_bytes(name: str, key: dict, compute: Callable[[], bytes]) -> bytes:
    """``compute()``, or the bytes stored under ``name`` and ``key`` by an earlier call (e.g. an
    exported ONNX graph); same checks and atomic writes as :func:`cached_array`."""
    path = cache_path(name, key)
    array = _load(path, _key_text(key), None, np.dtype(np.uint8))
    if array is None:
        array = np.frombuffer(compute(), np.uint8)
        _save(path, _key_text(key), array)
    return array.tobytes()


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file, to key cache entries derived from model weights."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _key_text(key: dict) -> str:
    return json.dumps(key, sort_keys=True, ensure_ascii=False)


def _load(path: Path, key: str, shape: tuple[int, ...] | None, dtype: np.dtype
          ) -> np.ndarray | None:
    """The stored array, or None if absent, damaged, or not what was asked (``shape`` None:
    any 1-d array)."""
    try:
        with np.load(path, allow_pickle=False) as stored:
            if str(stored["key"]) != key:
                return None
            array = stored["array"]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile):
        return None  # truncated, corrupt (zip CRC) or not ours: recompute
    if shape is None and array.ndim != 1 or shape is not None and array.shape != shape:
        return None
    if array.dtype != dtype or not np.isfinite(array).all():
        return None
    return array


def _save(path: Path, key: str, array: np.ndarray) -> None:
    """Write to a temporary file beside ``path`` and rename it: readers never see half a file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, array=array, key=np.array(key))
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
    except OSError as exc:
        warnings.warn(f"cannot write the cache file {path} ({exc}); set $PAIRSIFT_CACHE to a "
                      "writable folder to keep it", stacklevel=3)
