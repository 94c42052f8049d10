"""What a stage sees of the workspace: one part (:class:`PartData`) or the whole collection
(:class:`Collection`), both reading exactly the runs recorded as the stage's inputs.

Rows are addressed by a *global row index*: parts in order, rows in part order. Collection
arrays are numpy over that index, a few bytes per sample; anything with Python objects per row
(``to_pylist``, dicts) is per part only.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..errors import WorkspaceError
from ..uids import uid_codes
from ..workspace import EmbeddingRows, Workspace, cli_name


class _Reads:
    """Signal, decision and embedding reads shared by both views, pinned to the inputs."""

    def __init__(self, ws: Workspace, stage: str, run: str, inputs: dict[str, Any]):
        self.ws = ws
        self.stage = stage
        self.run = run
        self.inputs = inputs

    @property
    def model(self) -> str:
        """The embedding model this run reads (``inputs['model']``)."""
        if "model" not in self.inputs:
            raise WorkspaceError(f"{self.stage} reads no embeddings")
        return self.inputs["model"]

    def input_run(self, stage: str) -> str:
        """The run of ``stage`` this run reads: its input, or this run's own outputs."""
        run = self.run if stage == self.stage else (self.inputs.get(stage)
                                                    or self.ws.current_run(stage))
        if run is None:
            raise WorkspaceError(f"{self.stage} needs {stage!r}: run "
                                 f"`pairsift {cli_name(stage)}` first")
        return run

    def _signal_table(self, stage: str, part: int, columns: list[str] | None) -> pa.Table:
        path = self.ws.signal_path(stage, self.input_run(stage), part)
        if not path.exists():
            raise WorkspaceError(f"{path} is missing: run `pairsift {cli_name(stage)}` to "
                                 "finish it")
        return pq.read_table(path, columns=columns)

    def _dropped(self, part: int, stages: list[str]) -> np.ndarray:
        mask = np.zeros(self.ws.part_rows(part), bool)
        for stage in stages:
            table = self.ws.part_decisions(part, stage, ["verdict"], run=self.input_run(stage))
            mask |= pc.equal(table.column("verdict"), "drop").to_numpy(zero_copy_only=False)
        return mask


class PartData(_Reads):
    """One part: its rows (the columns the stage declared), signals and embeddings."""

    def __init__(self, ws: Workspace, stage: str, run: str, inputs: dict[str, Any], part: int,
                 columns: tuple[str, ...] = ("uid",)):
        super().__init__(ws, stage, run, inputs)
        self.part = part
        self.columns = list(dict.fromkeys(("uid", *columns)))

    @cached_property
    def rows(self) -> pa.Table:
        return self.ws.read_part(self.part, self.columns)

    @property
    def num_rows(self) -> int:
        return self.ws.part_rows(self.part)

    @property
    def uids(self) -> pa.ChunkedArray:
        return self.rows.column("uid")

    def column(self, name: str) -> pa.ChunkedArray:
        if name not in self.columns:
            return self.ws.read_part(self.part, [name]).column(name)
        return self.rows.column(name)

    def signal(self, stage: str, columns: list[str] | None = None) -> pa.Table:
        """The part's signals from ``stage``'s input run (rows aligned with the part)."""
        return self._signal_table(stage, self.part, columns)

    def values(self, stage: str, column: str, dtype: Any = np.float32) -> np.ndarray:
        """A numeric signal column as numpy (nulls become NaN)."""
        array = self.signal(stage, [column]).column(column)
        return array.to_numpy(zero_copy_only=False).astype(dtype)

    def embeddings(self, space: str) -> np.ndarray:
        from ..models import model_slug

        return self.ws.embeddings(model_slug(self.model), space, self.part)

    def dropped(self, stages: list[str]) -> np.ndarray:
        return self._dropped(self.part, stages)

    def signal_exists(self) -> bool:
        return self.ws.signal_path(self.stage, self.run, self.part).exists()


class Collection(_Reads):
    """Every part at once, as numpy arrays over the global row index."""

    def __init__(self, ws: Workspace, stage: str, run: str, inputs: dict[str, Any]):
        super().__init__(ws, stage, run, inputs)
        self.parts = ws.part_ids()
        self.sizes = ws.part_sizes()
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)]).astype(np.int64)
        self._cache: dict[Any, Any] = {}

    @property
    def n(self) -> int:
        return int(self.offsets[-1])

    def rows_of(self, part: int) -> slice:
        k = self.parts.index(part)
        return slice(int(self.offsets[k]), int(self.offsets[k + 1]))

    def part(self, part: int, columns: tuple[str, ...] = ("uid",)) -> PartData:
        return PartData(self.ws, self.stage, self.run, self.inputs, part, columns)

    def _cached(self, key: Any, compute: Any) -> Any:
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    def _concat(self, read: Any, dtype: Any) -> np.ndarray:
        """One numpy array over the collection from a per-part reader, filled part by part."""
        out = np.empty(self.n, dtype)
        for part, start, stop in zip(self.parts, self.offsets[:-1], self.offsets[1:],
                                     strict=True):
            out[start:stop] = read(part)
        return out

    def values(self, stage: str, column: str, dtype: Any = np.float32) -> np.ndarray:
        """A numeric signal column of ``stage`` over every row (nulls become NaN), kept for
        the run's next reads; :meth:`read_values` reads without keeping."""
        return self._cached(("signal", stage, column, np.dtype(dtype).str),
                            lambda: self.read_values(stage, column, dtype))

    def read_values(self, stage: str, column: str, dtype: Any = np.float32) -> np.ndarray:
        def read(part: int) -> np.ndarray:
            values = self._signal_table(stage, part, [column]).column(column)
            return values.to_numpy(zero_copy_only=False)

        return self._concat(read, dtype)

    def pixels(self) -> np.ndarray:
        """width × height of every row (int64), read part by part, not kept."""
        def read(part: int) -> np.ndarray:
            size = self.ws.read_part(part, ["width", "height"])
            return np.multiply(size["width"].to_numpy(), size["height"].to_numpy(),
                               dtype=np.int64)

        return self._concat(read, np.int64)

    def task_results(self, stage: str) -> list[dict[str, np.ndarray]]:
        """The checkpointed task results of the run of global ``stage`` this run reads (the
        cluster stage's centroids)."""
        from ..stage import get_stage
        from .units import load_task, task_id

        record = self.ws.run_record(stage, self.input_run(stage))
        upstream = get_stage(stage)(**record["options"])
        folder = self.ws.task_dir(stage, task_id(upstream, record["inputs"]))
        paths = sorted(folder.glob("task-*.npz"))
        if not paths:
            raise WorkspaceError(f"{folder} holds no results of {stage!r}: run "
                                 f"`pairsift {cli_name(stage)}` again")
        return [load_task(path) for path in paths]

    def uid_codes(self) -> np.ndarray:
        """Every uid as 16 bytes (see :mod:`pairsift.uids`)."""
        return self._cached("uids", lambda: self._concat(
            lambda p: uid_codes(self.ws.read_part(p, ["uid"]).column("uid")),
            uid_codes(pa.array([], pa.string())).dtype))

    def dropped(self, stages: list[str]) -> np.ndarray:
        """Bool per row: dropped by the input run of any of ``stages``."""
        return self._cached(("dropped", *stages),
                            lambda: self._concat(lambda p: self._dropped(p, stages), bool))

    def embeddings(self, space: str) -> EmbeddingRows:
        from ..models import model_slug

        return self.ws.embedding_rows(model_slug(self.model), space)

    def has_embedding(self, space: str) -> np.ndarray:
        """Bool per row: the sample has an embedding (a failed one is stored as zeros)."""

        def read(part: int) -> np.ndarray:
            from ..models import model_slug

            return embedded_rows(self.ws.embeddings(model_slug(self.model), space, part))

        return self._cached(("has_embedding", space), lambda: self._concat(read, bool))


    def save_head(self, name: str, head: Any, files: dict[str, Any] | None = None) -> Any:
        """Save a trained head under ``name`` (:func:`pairsift.spaces.save_head`)."""
        from ..spaces import save_head

        return save_head(self.ws, name, head, files)


def embedded_rows(rows: np.ndarray, chunk: int = 16_384) -> np.ndarray:
    """Bool per row: a finite, non-zero embedding (a failed sample is stored as zeros).
    Memory-mapped rows are read in chunks, never copied whole."""
    out = np.empty(len(rows), bool)
    for start in range(0, len(rows), chunk):
        norms = np.linalg.norm(np.asarray(rows[start:start + chunk], np.float32), axis=1)
        out[start:start + chunk] = np.isfinite(norms) & (norms > 0)
    return out
