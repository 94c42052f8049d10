"""The workspace: pairsift's single source of truth on disk (docs/design.md §3).

```
ws/
  pairsift.json                              manifest: sources, parts, models, stage runs
  parts/part-00000.parquet                   one row per readable sample
  errors/<stage>-00000.parquet               samples that could not be used, with a reason
  embeddings/<model>/<space>/part-00000.npy  float16, row i == row i of the part
  signals/<stage>/<run>/part-00000.parquet   uid + the stage's columns
  decisions/<stage>.parquet                  uid, stage, verdict, reason, evidence, config_hash
```

Every file is written atomically (temp file, fsync, rename), so a part's output exists whole or
not at all and a killed run resumes by skipping what exists. Errors are stored per part rather
than in one ``errors.parquet`` so that each part's outputs stay independent and ingest stays
linear; :meth:`Workspace.errors` reads them as one table.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

FORMAT_VERSION = 1
MANIFEST = "pairsift.json"
# The command that writes each signal stage, named in the error when it has not run.
SIGNAL_COMMANDS = {"clip_score": "pairsift score", "hashes": "pairsift dedup exact",
                   "cluster": "pairsift cluster", "semdedup": "pairsift dedup semantic",
                   "fairdedup": "pairsift dedup fair", "parrot": "pairsift parrot spot",
                   "parrot_relative": "pairsift parrot relative"}

PART_SCHEMA = pa.schema(
    [
        ("uid", pa.string()),
        ("key", pa.string()),
        ("source", pa.string()),
        ("container", pa.string()),  # file | tar | parquet
        ("shard", pa.string()),  # absolute path of the file holding the image
        ("offset", pa.int64()),  # byte offset in a tar, row index in a parquet file, 0 for files
        ("length", pa.int64()),  # image bytes
        ("caption", pa.string()),
        ("caption_issue", pa.string()),  # missing_caption | invalid_utf8 | null
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("format", pa.string()),
        ("sha256", pa.string()),
        ("meta", pa.string()),  # the source's own per-sample json, verbatim
    ]
)

ERROR_SCHEMA = pa.schema(
    [
        ("source", pa.string()),
        ("shard", pa.string()),
        ("key", pa.string()),
        ("uid", pa.string()),
        ("stage", pa.string()),
        ("reason", pa.string()),
        ("message", pa.string()),
    ]
)

DECISION_SCHEMA = pa.schema(
    [
        ("uid", pa.string()),
        ("stage", pa.string()),
        ("verdict", pa.string()),  # keep | drop | flag
        ("reason", pa.string()),
        ("evidence", pa.string()),  # json
        ("config_hash", pa.string()),
    ]
)


class WorkspaceError(Exception):
    """A workspace is missing, malformed or asked for something it does not hold."""


def config_hash(config: dict[str, Any]) -> str:
    """Stable short hash of a stage configuration (key order does not matter)."""
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Any) -> None:
    """Call ``write(tmp_path)``, fsync the result and rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def write_table(path: Path, table: pa.Table) -> None:
    atomic_write(path, lambda tmp: pq.write_table(table, tmp))


def write_array(path: Path, array: np.ndarray) -> None:
    def save(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.save(f, array)

    atomic_write(path, save)


def part_name(part: int) -> str:
    return f"part-{part:05d}"


class Workspace:
    """A pairsift workspace directory. Create it with :meth:`create`, open it with :meth:`open`."""

    def __init__(self, root: Path, manifest: dict[str, Any]):
        self.root = root
        self.manifest = manifest

    # -- lifecycle -------------------------------------------------------------------------
    @classmethod
    def open(cls, root: str | Path, *, create: bool = False) -> Workspace:
        root = Path(root).resolve()
        path = root / MANIFEST
        if path.exists():
            manifest = json.loads(path.read_text())
            if manifest.get("format") != FORMAT_VERSION:
                raise WorkspaceError(
                    f"{path}: workspace format {manifest.get('format')!r} is not "
                    f"{FORMAT_VERSION}; re-ingest into a new workspace"
                )
            return cls(root, manifest)
        if not create:
            raise WorkspaceError(
                f"{root} is not a pairsift workspace (no {MANIFEST}); "
                "create one with `pairsift ingest SOURCE --workspace DIR`"
            )
        if root.exists() and any(root.iterdir()):
            raise WorkspaceError(
                f"{root} exists and is not empty; choose a new directory for the workspace"
            )
        ws = cls(root, {"format": FORMAT_VERSION, "created": _now(), "sources": {},
                        "parts": {}, "models": {}, "runs": [], "current": {}})
        ws.save()
        return ws

    def save(self) -> None:
        blob = json.dumps(self.manifest, indent=1, sort_keys=True).encode()
        atomic_write(self.root / MANIFEST, lambda tmp: tmp.write_bytes(blob))

    # -- parts -----------------------------------------------------------------------------
    def part_ids(self) -> list[int]:
        return sorted(int(p) for p in self.manifest["parts"])

    def part_path(self, part: int) -> Path:
        return self.root / "parts" / f"{part_name(part)}.parquet"

    def next_part_id(self) -> int:
        return max(self.part_ids(), default=-1) + 1

    def read_part(self, part: int, columns: list[str] | None = None) -> pa.Table:
        return pq.read_table(self.part_path(part), columns=columns)

    def add_part(self, part: int, rows: pa.Table, errors: pa.Table, record: dict) -> None:
        """Persist one ingested unit: errors first, then rows, then the manifest entry.

        The manifest entry is the completion marker: a unit without one is redone on resume.
        """
        self.write_errors("ingest", part, errors)
        write_table(self.part_path(part), rows.cast(PART_SCHEMA))
        self.manifest["parts"][str(part)] = {**record, "rows": rows.num_rows,
                                             "errors": errors.num_rows}
        self.save()

    def image_columns(self) -> dict[str, str | None]:
        """Per source, the parquet column holding image bytes (None: the reader's default)."""
        return {n: s["options"].get("image_column") for n, s in self.manifest["sources"].items()}

    def num_samples(self) -> int:
        return sum(p["rows"] for p in self.manifest["parts"].values())

    def iter_parts(self, columns: list[str] | None = None) -> Iterator[tuple[int, pa.Table]]:
        for part in self.part_ids():
            yield part, self.read_part(part, columns)

    def uids(self) -> pa.Array:
        tables = [t.column("uid") for _, t in self.iter_parts(["uid"])]
        return pa.chunked_array(tables, pa.string()).combine_chunks()

    # -- errors ----------------------------------------------------------------------------
    def write_errors(self, stage: str, part: int, errors: pa.Table) -> None:
        path = self.root / "errors" / f"{stage}-{part:05d}.parquet"
        if errors.num_rows or path.exists():
            write_table(path, errors.cast(ERROR_SCHEMA))

    def errors(self) -> pa.Table:
        files = sorted((self.root / "errors").glob("*.parquet"))
        if not files:
            return ERROR_SCHEMA.empty_table()
        return pa.concat_tables(pq.read_table(f).cast(ERROR_SCHEMA) for f in files)

    # -- embeddings ------------------------------------------------------------------------
    def embedding_path(self, model: str, space: str, part: int) -> Path:
        return self.root / "embeddings" / model / space / f"{part_name(part)}.npy"

    def has_embeddings(self, model: str, spaces: list[str], part: int) -> bool:
        return all(self.embedding_path(model, s, part).exists() for s in spaces)

    def write_embeddings(self, model: str, arrays: dict[str, np.ndarray], part: int) -> None:
        for space, array in arrays.items():
            write_array(self.embedding_path(model, space, part), array.astype(np.float16))

    def embeddings(self, model: str, space: str, part: int) -> np.ndarray:
        """Memory-mapped float16 embeddings of one part (rows aligned with the part)."""
        path = self.embedding_path(model, space, part)
        if not path.exists():
            raise WorkspaceError(
                f"{path} is missing: run `pairsift embed --model {model}` on this workspace"
            )
        return np.load(path, mmap_mode="r")

    def embedding_rows(self, model: str, space: str) -> EmbeddingRows:
        """All parts' embeddings of one space as one row-indexable (memory-mapped) matrix."""
        return EmbeddingRows([self.embeddings(model, space, p) for p in self.part_ids()])

    # -- runs, signals and decisions -------------------------------------------------------
    def start_run(self, stage: str, config: dict[str, Any]) -> str:
        """Record a stage run; the config hash names its outputs (re-runs with it resume)."""
        run = config_hash(config)
        runs = self.manifest["runs"]
        if not any(r["stage"] == stage and r["run"] == run for r in runs):
            runs.append({"stage": stage, "run": run, "config": config, "started": _now()})
        self.manifest["current"][stage] = run
        self.save()
        return run

    def finish_run(self, stage: str, run: str, summary: dict[str, Any]) -> None:
        for record in self.manifest["runs"]:
            if record["stage"] == stage and record["run"] == run:
                record.update(finished=_now(), summary=summary)
        self.save()

    def current_run(self, stage: str) -> str | None:
        return self.manifest["current"].get(stage)

    def run_config(self, stage: str) -> dict[str, Any]:
        run = self.current_run(stage)
        for record in self.manifest["runs"]:
            if record["stage"] == stage and record["run"] == run:
                return record["config"]
        raise WorkspaceError(f"stage {stage!r} has not run in {self.root}")

    def signal_path(self, stage: str, run: str, part: int) -> Path:
        return self.root / "signals" / stage / run / f"{part_name(part)}.parquet"

    def signals(self, stage: str, columns: list[str] | None = None) -> pa.Table:
        """All parts of the current run of ``stage``, in part order."""
        run = self.current_run(stage)
        if run is None:
            command = SIGNAL_COMMANDS.get(stage)
            hint = f"; run `{command}` first" if command else ""
            raise WorkspaceError(f"{self.root}: no signals for {stage!r}{hint}")
        paths = [self.signal_path(stage, run, p) for p in self.part_ids()]
        missing = [p for p in paths if not p.exists()]
        if missing:
            raise WorkspaceError(
                f"{missing[0]} is missing: the {stage!r} run did not finish; run it again"
            )
        return pa.concat_tables(pq.read_table(p, columns=columns) for p in paths)

    def signal_stages(self) -> list[str]:
        """Stages that wrote per-part signals and have a current run."""
        folder = self.root / "signals"
        names = [p.name for p in folder.iterdir()] if folder.exists() else []
        return sorted(n for n in names if self.current_run(n))

    def part_signals(self, part: int) -> dict[str, pa.Table]:
        """Every current stage's signals for one part (rows aligned with the part)."""
        paths = {s: self.signal_path(s, self.current_run(s), part) for s in self.signal_stages()}
        return {stage: pq.read_table(path) for stage, path in paths.items() if path.exists()}

    def decision_path(self, stage: str) -> Path:
        return self.root / "decisions" / f"{stage}.parquet"

    def write_decisions(self, stage: str, decisions: pa.Table) -> None:
        write_table(self.decision_path(stage), decisions.cast(DECISION_SCHEMA))

    def decision_stages(self) -> list[str]:
        return sorted(p.stem for p in (self.root / "decisions").glob("*.parquet"))

    def decisions(self) -> pa.Table:
        tables = [pq.read_table(self.decision_path(s)) for s in self.decision_stages()]
        return pa.concat_tables(tables) if tables else DECISION_SCHEMA.empty_table()


class EmbeddingRows:
    """Rows of several memory-mapped parts addressed as one matrix, without concatenating.

    Supports ``len``, ``shape``, slices and integer index arrays; only the rows asked for are
    read, so a cluster's members can be gathered from every part in bounded memory.
    """

    def __init__(self, parts: list[np.ndarray]):
        self._parts = parts
        self._starts = np.cumsum([0] + [len(p) for p in parts])
        dims = {p.shape[1] for p in parts}
        if len(dims) > 1:
            raise WorkspaceError(f"parts disagree on the embedding width: {sorted(dims)}")
        self.shape = (int(self._starts[-1]), dims.pop() if dims else 0)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: slice | np.ndarray) -> np.ndarray:
        rows = np.arange(len(self))[index] if isinstance(index, slice) else np.asarray(index)
        out = np.empty((len(rows), self.shape[1]), np.float16)
        part_of = np.searchsorted(self._starts, rows, side="right") - 1
        for part in np.unique(part_of):
            mask = part_of == part
            local = rows[mask] - self._starts[part]
            out[mask] = self._parts[part][np.sort(local)][np.argsort(np.argsort(local))]
        return out
