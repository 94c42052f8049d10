"""The workspace: pairsift's single source of truth on disk (docs/design.md §3).

```
ws/
  pairsift.json                                manifest: sources, parts, models, runs, current
  parts/part-00000.parquet                     one row per readable sample
  errors/<stage>-00000.parquet                 samples a stage could not use, with a reason
  embeddings/<model>/<space>/part-00000.npy    float16, row i == row i of the part
  signals/<stage>/<run>/part-00000.parquet     uid + the stage's columns, rows as in the part
  decisions/<stage>/<run>/part-00000.parquet   uid, verdict, reason, evidence, rows as in the part
  tasks/<stage>/<run>/task-00000.npz           a global stage's finished tasks (resume)
  locks/<stage>.lock                           held while a run of that stage is in progress
```

Every file is written atomically (temp file, fsync, rename), so a part's output exists whole or
not at all, and the file is the completion marker: a killed run resumes by skipping what
exists. The manifest is small and changes only when a run starts or finishes, or an ingest
commits its parts; each change re-reads it under a file lock, so two processes on one workspace
never lose each other's updates. A run becomes the stage's *current* run only when it finishes.
Nothing outside this module indexes the manifest: ask the workspace.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .errors import WorkspaceBusyError, WorkspaceError

__all__ = ["DECISION_SCHEMA", "ERROR_SCHEMA", "PART_SCHEMA", "Workspace", "WorkspaceError",
           "atomic_write", "config_hash", "fsync", "write_array", "write_table"]

FORMAT_VERSION = 2
MANIFEST = "pairsift.json"

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
        ("caption_issue", pa.string()),  # missing_caption | invalid_utf8 | ... | null
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
        ("verdict", pa.string()),  # keep | drop
        ("reason", pa.string()),  # "" when kept
        ("evidence", pa.string()),  # json object; "{}" when kept
        ("config_hash", pa.string()),  # the run id
    ]
)


def config_hash(config: dict[str, Any]) -> str:
    """Stable short hash of a stage configuration (key order does not matter)."""
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def jsonable(value: Any) -> Any:
    """``json.dumps`` default for what run summaries hold: numpy values, dataclasses, paths.

    Long arrays (a cluster size per cluster) are recorded as their summary statistics, so the
    manifest stays small whatever the collection's size.
    """
    if isinstance(value, np.ndarray):
        if value.size > 64:
            return {"count": int(value.size), "min": value.min().item(),
                    "median": float(np.median(value)), "max": value.max().item()}
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, Path | set | frozenset):
        return str(value) if isinstance(value, Path) else sorted(value)
    raise TypeError(f"cannot record {type(value).__name__} in the manifest")


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def fsync(path: Path) -> None:
    """Flush a file, or a folder's entries (the names in it), to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Any) -> None:
    """Call ``write(tmp_path)``, fsync the result and rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(tmp)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync(path.parent)


def write_table(path: Path, table: pa.Table, metadata: dict[str, str] | None = None) -> None:
    if metadata:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})
    atomic_write(path, lambda tmp: pq.write_table(table, tmp))


def write_array(path: Path, array: np.ndarray) -> None:
    def save(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.save(f, array)

    atomic_write(path, save)


def part_name(part: int) -> str:
    return f"part-{part:05d}"


@contextmanager
def _flock(path: Path, *, blocking: bool, note: str = "") -> Iterator[bool]:
    """Hold an exclusive lock on ``path``; yields False when non-blocking and already held."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            if note:
                f.truncate(0)
                f.write(note)
                f.flush()
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class Workspace:
    """A pairsift workspace directory. Create it with ``open(root, create=True)``."""

    def __init__(self, root: Path, manifest: dict[str, Any]):
        self.root = root
        self._manifest = manifest

    # -- lifecycle -------------------------------------------------------------------------
    @classmethod
    def open(cls, root: str | Path, *, create: bool = False) -> Workspace:
        root = Path(root).resolve()
        path = root / MANIFEST
        if path.exists():
            ws = cls(root, {})
            ws.refresh()
            return ws
        if not create:
            raise WorkspaceError(
                f"{root} is not a pairsift workspace (no {MANIFEST}); "
                "create one with `pairsift ingest SOURCE --workspace DIR`"
            )
        if root.exists() and any(root.iterdir()):
            raise WorkspaceError(
                f"{root} exists and is not empty; choose a new directory for the workspace"
            )
        ws = cls(root, {})
        with ws.update() as manifest:
            if not manifest:  # another process may have created it meanwhile
                manifest.update(format=FORMAT_VERSION, created=_now(), sources={}, parts={},
                                models={}, runs=[], current={}, recipes=[])
        return ws

    @property
    def manifest(self) -> dict[str, Any]:
        """A read-only snapshot of the manifest as of the last refresh or update."""
        return self._manifest

    def refresh(self) -> None:
        path = self.root / MANIFEST
        manifest = json.loads(path.read_text()) if path.exists() else {}
        if manifest.get("format") == 1:
            from .migrate import migrate_v1

            with _flock(self.root / "locks" / "manifest.lock", blocking=True):
                migrate_v1(self.root)  # re-reads under the lock: one process migrates
            manifest = json.loads(path.read_text())
        if manifest and manifest.get("format") != FORMAT_VERSION:
            raise WorkspaceError(
                f"{path}: workspace format {manifest.get('format')!r} is newer than this "
                f"pairsift ({FORMAT_VERSION}); upgrade pairsift"
            )
        self._manifest = manifest

    @contextmanager
    def update(self) -> Iterator[dict[str, Any]]:
        """Change the manifest: re-read it under the workspace lock, yield it, write it."""
        with _flock(self.root / "locks" / "manifest.lock", blocking=True):
            path = self.root / MANIFEST
            manifest = json.loads(path.read_text()) if path.exists() else {}
            yield manifest
            blob = json.dumps(manifest, indent=1, sort_keys=True, default=jsonable).encode()
            atomic_write(path, lambda tmp: tmp.write_bytes(blob))
            self._manifest = manifest

    @contextmanager
    def lock(self, stage: str, command: str | None = None) -> Iterator[None]:
        """Hold ``stage``'s run lock: a second run of the same stage refuses with the holder."""
        path = self.root / "locks" / f"{stage}.lock"
        note = json.dumps({"pid": os.getpid(), "started": _now(), "command": command or stage})
        with _flock(path, blocking=False, note=note) as held:
            if not held:
                holder = _read_json(path)
                raise WorkspaceBusyError(
                    f"another `pairsift {holder.get('command', stage)}` (pid "
                    f"{holder.get('pid', '?')}, started {holder.get('started', '?')}) is running "
                    f"on {self.root}; wait for it to finish, or work in another workspace"
                )
            yield

    # -- sources and parts -----------------------------------------------------------------
    def sources(self) -> dict[str, dict[str, Any]]:
        return self._manifest.get("sources", {})

    def part_ids(self) -> list[int]:
        return sorted(int(p) for p in self._manifest.get("parts", {}))

    def part_rows(self, part: int) -> int:
        return int(self._manifest["parts"][str(part)]["rows"])

    def part_source(self, part: int) -> str:
        return self._manifest["parts"][str(part)]["source"]

    def part_sizes(self) -> np.ndarray:
        return np.array([self.part_rows(p) for p in self.part_ids()], np.int64)

    def part_path(self, part: int) -> Path:
        return self.root / "parts" / f"{part_name(part)}.parquet"

    def read_part(self, part: int, columns: list[str] | None = None) -> pa.Table:
        return pq.read_table(self.part_path(part), columns=columns)

    def num_samples(self) -> int:
        return sum(p["rows"] for p in self._manifest.get("parts", {}).values())

    def iter_parts(self, columns: list[str] | None = None) -> Iterator[tuple[int, pa.Table]]:
        for part in self.part_ids():
            yield part, self.read_part(part, columns)

    def uids(self) -> pa.Array:
        """Every readable sample's uid, in part order (36 bytes a sample, as Arrow strings)."""
        columns = [t.column("uid") for _, t in self.iter_parts(["uid"])]
        return pa.chunked_array(columns, pa.string()).combine_chunks()

    def parts_fingerprint(self) -> str:
        """Names the set of parts: a run made from other parts is stale."""
        return config_hash({"parts": [[p, self.part_rows(p)] for p in self.part_ids()]})

    def image_columns(self) -> dict[str, str | None]:
        """Per source, the parquet column holding image bytes (None: the reader's default)."""
        return {n: s["options"].get("image_column") for n, s in self.sources().items()}

    def find_uid(self, uid: str) -> tuple[int, int] | None:
        """(part, row) of a readable sample, reading one uid column at a time."""
        for part in self.part_ids():
            uids = self.read_part(part, ["uid"]).column("uid")
            found = pc.index(uids, uid).as_py()
            if found >= 0:
                return part, found
        return None

    # -- ingest ----------------------------------------------------------------------------
    def write_part(self, part: int, rows: pa.Table, errors: pa.Table, source: str,
                   unit: str) -> dict[str, Any]:
        """Write one ingested unit (errors, then rows); returns its manifest record.

        The part file carries its source and unit in its metadata, so a part written by a
        killed ingest is found again (``orphan_parts``) without a manifest write per part.
        """
        record = {"source": source, "unit": unit, "rows": rows.num_rows,
                  "errors": errors.num_rows}
        self.write_errors("ingest", part, errors)
        write_table(self.part_path(part), rows.cast(PART_SCHEMA),
                    {"pairsift.part": json.dumps(record)})
        return record

    def orphan_parts(self) -> dict[int, dict[str, Any]]:
        """Parts on disk that the manifest does not list (an ingest killed before it committed)."""
        known = set(self.part_ids())
        found = {}
        for path in sorted((self.root / "parts").glob("part-*.parquet")):
            part = int(path.stem.split("-")[1])
            if part not in known:
                meta = pq.read_schema(path).metadata or {}
                if b"pairsift.part" in meta:
                    found[part] = json.loads(meta[b"pairsift.part"])
        return found

    def next_part_id(self) -> int:
        on_disk = [int(p.stem.split("-")[1]) for p in (self.root / "parts").glob("part-*.parquet")]
        return max([*self.part_ids(), *on_disk], default=-1) + 1

    def commit_parts(self, source: str, source_record: dict[str, Any],
                     parts: dict[int, dict[str, Any]], *, complete: bool) -> None:
        """Record a source and the parts ingested from it, in one manifest update."""
        with self.update() as manifest:
            record = manifest["sources"].setdefault(source, source_record)
            for part, info in parts.items():
                manifest["parts"][str(part)] = info
                record["units"][info["unit"]] = part
            record["complete"] = complete
            record["ignored_files"] = source_record.get("ignored_files", 0)

    # -- errors ----------------------------------------------------------------------------
    def write_errors(self, stage: str, part: int, errors: pa.Table) -> None:
        path = self.root / "errors" / f"{stage}-{part:05d}.parquet"
        if errors.num_rows or path.exists():
            write_table(path, errors.cast(ERROR_SCHEMA))

    def errors(self, stage: str | None = None) -> pa.Table:
        pattern = f"{stage}-*.parquet" if stage else "*.parquet"
        files = sorted((self.root / "errors").glob(pattern))
        if not files:
            return ERROR_SCHEMA.empty_table()
        return pa.concat_tables(pq.read_table(f).cast(ERROR_SCHEMA) for f in files)

    # -- embeddings ------------------------------------------------------------------------
    def models(self) -> dict[str, dict[str, Any]]:
        return self._manifest.get("models", {})

    def current_model(self) -> str:
        """The model of the last finished ``embed`` run: what every later stage reads."""
        if self.current_run("embed") is None:
            raise WorkspaceError(f"{self.root}: no embeddings yet; run `pairsift embed` first")
        return self.run_config("embed")["model"]

    def embedding_path(self, model: str, space: str, part: int) -> Path:
        return self.root / "embeddings" / model / space / f"{part_name(part)}.npy"

    def has_embeddings(self, model: str, spaces: list[str], part: int) -> bool:
        return all(self.embedding_path(model, s, part).exists() for s in spaces)

    def write_embeddings(self, model: str, arrays: dict[str, np.ndarray], part: int) -> None:
        for space, array in arrays.items():
            write_array(self.embedding_path(model, space, part), array.astype(np.float16))

    def embeddings(self, model: str, space: str, part: int) -> np.ndarray:
        """Memory-mapped float16 embeddings of one part (rows aligned with the part).

        ``space`` is any name :mod:`pairsift.spaces` knows: a stored space, or a head's
        (``visual+arcface:NAME``), computed from the stored one on first read and kept.
        """
        from . import spaces

        folder, head = spaces.resolve(self, model, space)
        path = self.embedding_path(model, folder, part)
        if head is not None and not path.exists():
            write_array(path, head.apply(self.embeddings(model, head.base, part)).astype(
                np.float16))
        if not path.exists():
            raise WorkspaceError(self._missing_embeddings(model, space, path))
        return np.load(path, mmap_mode="r")

    def _missing_embeddings(self, model: str, space: str, path: Path) -> str:
        record = self.models().get(model, {})
        if record and not record.get("dim") and space in ("image", "text"):
            return (f"model {record.get('name', model)!r} is visual-only (no text tower): it "
                    f"has no {space!r} embeddings. What needs text (CLIP score, text search, "
                    f"parrot captions) needs an image-text model; image-image commands use "
                    f"its 'visual' space")
        return f"{path} is missing: run `pairsift embed --model {model}` on this workspace"

    def embedding_rows(self, model: str, space: str) -> EmbeddingRows:
        """All parts' embeddings of one space as one row-indexable (memory-mapped) matrix."""
        return EmbeddingRows([self.embeddings(model, space, p) for p in self.part_ids()])

    # -- runs ------------------------------------------------------------------------------
    def begin_run(self, stage: str, run: str, record: dict[str, Any]) -> None:
        """Record that a run started; it becomes current only in ``finish_run``."""
        with self.update() as manifest:
            runs = manifest["runs"]
            known = next((r for r in runs if r["stage"] == stage and r["run"] == run), None)
            if known is None:
                runs.append({"stage": stage, "run": run, **record, "started": _now(),
                             "status": "running"})
            else:
                known.update(record, status="running", restarted=_now())

    def finish_run(self, stage: str, run: str, summary: dict[str, Any],
                   models: dict[str, Any] | None = None) -> None:
        with self.update() as manifest:
            for record in manifest["runs"]:
                if record["stage"] == stage and record["run"] == run:
                    record.update(finished=_now(), status="finished", summary=summary)
            manifest["current"][stage] = run
            manifest["models"].update(models or {})

    def make_current(self, stage: str, run: str) -> None:
        """Make a finished run the stage's current one again (its files are kept)."""
        if self.current_run(stage) != run:
            with self.update() as manifest:
                manifest["current"][stage] = run

    def clear_stage(self, stage: str) -> str | None:
        """Forget a stage's current run (``pairsift undo``): its signals, decisions, task
        checkpoints and per-run embedding spaces (``embeddings/<model>/<space>-<run>``, such
        as recaption's caption embeddings) are removed, and running it again recomputes it."""
        run = self.current_run(stage)
        with self.update() as manifest:
            manifest["current"].pop(stage, None)
            for record in manifest["runs"]:
                if record["stage"] == stage and record["run"] == run:
                    record["status"] = "undone"
        if run is not None:
            for kind in ("signals", "decisions"):
                shutil.rmtree(self.root / kind / stage / run, ignore_errors=True)
            shutil.rmtree(self.root / "tasks" / stage, ignore_errors=True)
            for space in self.root.glob(f"embeddings/*/*-{run}"):
                shutil.rmtree(space, ignore_errors=True)
        return run

    def current_run(self, stage: str) -> str | None:
        return self._manifest.get("current", {}).get(stage)

    def run_record(self, stage: str, run: str | None = None) -> dict[str, Any] | None:
        run = run or self.current_run(stage)
        return next((r for r in self._manifest.get("runs", [])
                     if r["stage"] == stage and r["run"] == run), None)

    def run_config(self, stage: str) -> dict[str, Any]:
        record = self.run_record(stage) if self.current_run(stage) else None
        if record is None:
            raise WorkspaceError(f"{stage!r} has not run in {self.root}: run "
                                 f"`pairsift {cli_name(stage)}` first")
        return record["config"]

    def current_stages(self) -> list[str]:
        """Stages with a current run, in the order their runs started (the funnel order)."""
        current = self._manifest.get("current", {})
        order = {r["stage"]: i for i, r in enumerate(self._manifest.get("runs", []))
                 if current.get(r["stage"]) == r["run"]}
        return sorted(current, key=lambda s: (order.get(s, len(order)), s))

    def task_dir(self, stage: str, run: str) -> Path:
        return self.root / "tasks" / stage / run

    def record_recipe(self, text: str, digest: str) -> None:
        """Record a recipe run (the same recipe again moves to the end: the latest last)."""
        with self.update() as manifest:
            recipes = [r for r in manifest.setdefault("recipes", []) if r["hash"] != digest]
            manifest["recipes"] = [*recipes, {"hash": digest, "text": text, "started": _now()}]

    def recipes(self) -> list[dict[str, Any]]:
        return self._manifest.get("recipes", [])

    # -- signals ---------------------------------------------------------------------------
    def signal_path(self, stage: str, run: str, part: int) -> Path:
        return self.root / "signals" / stage / run / f"{part_name(part)}.parquet"

    def signals(self, stage: str, columns: list[str] | None = None) -> pa.Table:
        """All parts of the current run of ``stage``, in part order (small workspaces only:
        stages and exports read per part)."""
        run = self.current_run(stage)
        if run is None:
            raise WorkspaceError(f"no signals of {stage!r}: run `pairsift {cli_name(stage)}` "
                                 "first")
        paths = [self.signal_path(stage, run, p) for p in self.part_ids()]
        missing = [p for p in paths if not p.exists()]
        if missing:
            raise WorkspaceError(f"{missing[0]} is missing: run `pairsift {cli_name(stage)}` "
                                 "again to finish it")
        return pa.concat_tables(pq.read_table(p, columns=columns) for p in paths)

    def signal_stages(self) -> list[str]:
        """Stages whose current run wrote per-part signals."""
        return [s for s in self.current_stages()
                if (self.root / "signals" / s / self.current_run(s)).is_dir()]

    def part_signal(self, stage: str, part: int, columns: list[str] | None = None
                    ) -> pa.Table | None:
        """One stage's current signals for one part (None: the part came after its run)."""
        path = self.signal_path(stage, self.current_run(stage), part)
        return pq.read_table(path, columns=columns) if path.exists() else None

    def part_signals(self, part: int) -> dict[str, pa.Table]:
        """Every current stage's signals for one part (rows aligned with the part)."""
        paths = {s: self.signal_path(s, self.current_run(s), part) for s in self.signal_stages()}
        return {stage: pq.read_table(path) for stage, path in paths.items() if path.exists()}

    # -- decisions -------------------------------------------------------------------------
    def decision_path(self, stage: str, run: str, part: int) -> Path:
        return self.root / "decisions" / stage / run / f"{part_name(part)}.parquet"

    def write_decisions(self, stage: str, run: str, part: int, decisions: pa.Table) -> None:
        write_table(self.decision_path(stage, run, part), decisions.cast(DECISION_SCHEMA))

    def decision_stages(self) -> list[str]:
        """Stages whose current run decided keep/drop, in funnel order."""
        return [s for s in self.current_stages()
                if (self.root / "decisions" / s / self.current_run(s)).is_dir()]

    def part_decisions(self, part: int, stage: str, columns: list[str] | None = None,
                       run: str | None = None, *, missing_ok: bool = False) -> pa.Table | None:
        """One stage's decisions for one part (rows aligned with the part). ``missing_ok``:
        None for a part added after the stage ran (undecided) instead of an error."""
        path = self.decision_path(stage, run or self.current_run(stage), part)
        if not path.exists():
            if missing_ok:
                return None
            raise WorkspaceError(f"{path} is missing: run `pairsift {cli_name(stage)}` again "
                                 "to decide every part")
        return pq.read_table(path, columns=columns)

    def dropped(self, part: int, stages: list[str] | None = None) -> np.ndarray:
        """Bool per row of the part: some current decision (of ``stages``) drops it.

        A part added after a stage ran has no decision of it yet: nothing there is dropped
        by that stage until it runs again (``export`` runs it again first).
        """
        mask = np.zeros(self.part_rows(part), bool)
        for stage in self.decision_stages() if stages is None else stages:
            table = self.part_decisions(part, stage, ["verdict"], missing_ok=True)
            if table is not None:
                mask |= pc.equal(table.column("verdict"), "drop").to_numpy(zero_copy_only=False)
        return mask

    def num_dropped(self) -> int:
        return int(sum(self.dropped(p).sum() for p in self.part_ids()))

    def stage_decisions(self, stage: str, columns: list[str] | None = None) -> pa.Table:
        """One stage's decisions over every part (tests and small workspaces)."""
        tables = [self.part_decisions(p, stage, columns) for p in self.part_ids()]
        return pa.concat_tables(tables) if tables else DECISION_SCHEMA.empty_table()

    def decisions(self) -> pa.Table:
        """Every current decision of every part (tests and small workspaces)."""
        tables = [self.stage_decisions(s) for s in self.decision_stages()]
        return pa.concat_tables(tables) if tables else DECISION_SCHEMA.empty_table()


def cli_name(stage: str) -> str:
    """``dedup-semantic`` → ``dedup semantic``: the CLI spelling of a stage name."""
    group, _, rest = stage.partition("-")
    return f"{group} {rest}" if rest and group in ("dedup", "filter", "parrot") else stage


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}


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
