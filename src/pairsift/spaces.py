"""Embedding spaces by name: the stored ones and the ones derived from them by a trained head.

``embed`` stores ``image`` (the joint image-text space), ``text`` and, where the model has
one, ``visual``. A head trained by ``pairsift finetune --name NAME`` on one of the image spaces
makes the space ``BASE+arcface:NAME`` (e.g. ``visual+arcface:products``): its embedding of a
sample is the head applied to the stored ``BASE`` embedding, so nothing is re-encoded.
:meth:`pairsift.workspace.Workspace.embeddings` resolves every space name here, which is why
index, search, classify, calibrate, cluster and dedup accept a head's space without code of
their own.

A head is saved as one file, ``heads/NAME.npz`` (its affine layers and its record as JSON, in
the layout :mod:`pairsift.retrieval.arcface` owns), written atomically, beside ``NAME.json``
(the same record, readable) and ``NAME.png`` (score distributions before and after). Derived
embeddings are computed once per part and stored like the others, under a folder named after
the head's digest, so a retrained head never serves embeddings or an index made by the one it
replaced.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigError, WorkspaceError
from .retrieval.arcface import Head, head_bytes, head_from_bytes

if TYPE_CHECKING:
    from .workspace import Workspace

STORED = ("image", "visual", "text")
IMAGE_SPACES = ("image", "visual")  # what a head may be trained on
HEAD_KIND = "arcface"
SYNTHETIC_TEXT = "synthetic_text"  # recaption's caption embeddings, one space per run
_PER_RUN = re.compile(rf"^{SYNTHETIC_TEXT}-[0-9a-f]+$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_DERIVED = re.compile(rf"^(?P<base>{'|'.join(IMAGE_SPACES)})\+{HEAD_KIND}:(?P<name>.+)$")


def check_head_name(name: str) -> str:
    if not _NAME.match(name):
        raise ConfigError(f"a head name is 1-64 letters, digits, '.', '_' or '-' (starting "
                          f"with a letter or digit); got {name!r}")
    return name


def head_space(base: str, name: str) -> str:
    """The space a head named ``name`` trained on ``base`` makes: ``visual+arcface:NAME``."""
    return f"{base}+{HEAD_KIND}:{name}"


def parse(space: str) -> tuple[str, str | None]:
    """(stored base space, head name or None); ConfigError for a name that is neither."""
    if space in STORED or _PER_RUN.match(space):
        return space, None
    match = _DERIVED.match(space)
    if match is None:
        raise ConfigError(f"unknown embedding space {space!r}; spaces are {', '.join(STORED)} "
                          f"and those of trained heads, e.g. "
                          f"{head_space('visual', 'NAME')!r} (`pairsift finetune --name NAME`)")
    return match["base"], check_head_name(match["name"])


def heads_dir(ws: Workspace) -> Path:
    return ws.root / "heads"


def head_path(ws: Workspace, name: str) -> Path:
    return heads_dir(ws) / f"{check_head_name(name)}.npz"


def save_head(ws: Workspace, name: str, head: Head,
              files: dict[str, Callable[[Path], None]] | None = None) -> Head:
    """Write the head atomically under ``name``, its record as JSON beside it, ``files``
    (suffix -> writer of a temporary path, e.g. a plot) and remove what the head it replaces
    derived (embeddings, indexes). Returns it with its digest."""
    from .workspace import atomic_write

    path = head_path(ws, name)
    old = load_head(ws, name) if path.exists() else None
    atomic_write(path, lambda tmp: tmp.write_bytes(head_bytes(head)))
    saved = load_head(ws, name)
    blob = json.dumps({"digest": saved.digest, **head.record}, indent=1, sort_keys=True)
    atomic_write(path.with_suffix(".json"), lambda tmp: tmp.write_text(blob))
    for suffix, writer in (files or {}).items():
        writer(path.with_suffix(suffix))
    if old is not None and old.digest != saved.digest:
        for folder in ("embeddings", "index"):
            for stale in (ws.root / folder).glob(f"*/{storage_name(old, name)}"):
                shutil.rmtree(stale, ignore_errors=True)
    return saved


def load_head(ws: Workspace, name: str) -> Head:
    path = head_path(ws, name)
    if not path.exists():
        known = sorted(p.stem for p in heads_dir(ws).glob("*.npz"))
        raise WorkspaceError(f"{ws.root} has no head named {name!r} (heads: "
                             f"{', '.join(known) or 'none'}); train one with "
                             f"`pairsift finetune --name {name}`")
    stat = path.stat()
    return _read_head(str(path), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=16)
def _read_head(path: str, mtime_ns: int, size: int) -> Head:
    """Read once per file version (the key holds its mtime and size)."""
    return head_from_bytes(Path(path).read_bytes())


def storage_name(head: Head, name: str) -> str:
    """The folder of a head's embeddings and index: its space, made filesystem-safe, and its
    digest, so a retrained head gets new folders."""
    return f"{head.base}+{HEAD_KIND}-{name}-{head.digest[:8]}"


def resolve(ws: Workspace, model: str, space: str) -> tuple[str, Head | None]:
    """(folder name under ``embeddings/<model>/``, head or None) of ``space`` for ``model``."""
    base, name = parse(space)
    if name is None:
        return base, None
    head = load_head(ws, name)
    if head.record["model"] != model:
        raise WorkspaceError(f"head {name!r} was trained on model {head.record['model']!r}'s "
                             f"embeddings, not {model!r}'s: train one for this model")
    return storage_name(head, name), head


def space_inputs(ws: Workspace, space: str) -> dict[str, Any]:
    """What a run reading ``space`` depends on: the space, and the head's digest if any."""
    _, name = parse(space)
    return {"space": space} | ({} if name is None else {"head": load_head(ws, name).digest})
