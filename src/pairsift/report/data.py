"""What the report reads from a workspace, as numpy columns over one global row index.

Every readable sample has a row index (parts in order, rows in part order). Signals and
"dropped by stage" masks are arrays over that index, so sections combine them without joins
and memory stays linear in the number of samples. Only the columns a section asks for are
read, and each is read once.
"""

from __future__ import annotations

import json
import math
from functools import cached_property
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..workspace import Workspace

ROW_COLUMNS = ["uid", "key", "source", "container", "shard", "offset", "length", "caption"]
SUBGROUP = "subgroup"


class ReportData:
    """Cached, column-wise reads of one workspace for the report's sections."""

    def __init__(self, ws: Workspace):
        self.ws = ws
        self._signals: dict[tuple[str, str], np.ndarray | None] = {}
        self._dropped: dict[str, np.ndarray] = {}
        self._decisions: dict[str, pa.Table] = {}

    @cached_property
    def uids(self) -> pa.Array:
        return self.ws.uids()

    @property
    def n(self) -> int:
        return len(self.uids)

    @cached_property
    def errors(self) -> pa.Table:
        return self.ws.errors()

    @cached_property
    def ingest_errors(self) -> int:
        return int(pc.sum(pc.equal(self.errors.column("stage"), "ingest")).as_py() or 0)

    # -- runs --------------------------------------------------------------------------------
    def run_record(self, stage: str) -> dict[str, Any] | None:
        """The manifest record of the current run of ``stage``."""
        run = self.ws.current_run(stage)
        return next((r for r in self.ws.manifest["runs"]
                     if r["stage"] == stage and r["run"] == run), None)

    @cached_property
    def decision_stages(self) -> list[str]:
        """Decision stages in the order their current runs were recorded (the funnel order)."""
        runs = self.ws.manifest["runs"]
        position = {r["stage"]: i for i, r in enumerate(runs)
                    if r["run"] == self.ws.current_run(r["stage"])}
        return sorted(self.ws.decision_stages(), key=lambda s: (position.get(s, math.inf), s))

    def setting(self, stage: str, *keys: str) -> Any:
        """A run parameter: from the run summary, its config, or a drop's evidence, first found.

        Summaries hold resolved values (a top fraction's threshold), so they come first.
        """
        record = self.run_record(stage) or {}
        for source in (record.get("summary") or {}, record.get("config") or {},
                       self._first_evidence(stage)):
            for key in keys:
                if source.get(key) is not None:
                    return source[key]
        return None

    def _first_evidence(self, stage: str) -> dict[str, Any]:
        if stage not in self.ws.decision_stages():
            return {}
        table = self.decisions(stage)
        drops = table.filter(pc.equal(table.column("verdict"), "drop"))
        return json.loads(drops.column("evidence")[0].as_py() or "{}") if len(drops) else {}

    # -- decisions ---------------------------------------------------------------------------
    def decisions(self, stage: str) -> pa.Table:
        if stage not in self._decisions:
            self._decisions[stage] = pq.read_table(
                self.ws.decision_path(stage), columns=["uid", "verdict", "reason", "evidence"])
        return self._decisions[stage]

    def dropped(self, stage: str) -> np.ndarray:
        """Bool per row: the stage's current decision drops the sample."""
        if stage not in self._dropped:
            table = self.decisions(stage)
            drops = table.filter(pc.equal(table.column("verdict"), "drop")).column("uid")
            mask = pc.is_in(self.uids, value_set=drops.combine_chunks())
            self._dropped[stage] = mask.to_numpy(zero_copy_only=False)
        return self._dropped[stage]

    def dropped_any(self) -> np.ndarray:
        mask = np.zeros(self.n, bool)
        for stage in self.decision_stages:
            mask |= self.dropped(stage)
        return mask

    # -- signals -----------------------------------------------------------------------------
    def signal(self, stage: str, column: str) -> np.ndarray | None:
        """The column of the stage's current run, one value per row; None if it is not there."""
        key = (stage, column)
        if key not in self._signals:
            self._signals[key] = self._read_signal(stage, column)
        return self._signals[key]

    def _read_signal(self, stage: str, column: str) -> np.ndarray | None:
        run = self.ws.current_run(stage)
        if run is None:
            return None
        paths = [self.ws.signal_path(stage, run, p) for p in self.ws.part_ids()]
        if not paths or not all(p.exists() for p in paths):
            return None
        if column not in pq.read_schema(paths[0]).names:
            return None
        tables = [pq.read_table(p, columns=["uid", column]) for p in paths]
        # an empty part's column may have been written as Arrow's null type: promote it
        table = pa.concat_tables(tables, promote_options="default")
        values = table.column(column)
        if not table.column("uid").equals(pa.chunked_array([self.uids])):
            values = values.take(pc.index_in(self.uids, value_set=table.column("uid")))
        return values.to_numpy(zero_copy_only=False)

    def subgroups(self) -> np.ndarray | None:
        """A ``subgroup`` column from the parts or from any signal stage, first found."""
        if self.ws.part_ids():
            first = self.ws.part_path(self.ws.part_ids()[0])
            if SUBGROUP in pq.read_schema(first).names:
                return pa.concat_arrays([t.column(SUBGROUP).combine_chunks() for _, t in
                                         self.ws.iter_parts([SUBGROUP])]).to_numpy(zero_copy_only=False)
        for stage in self.ws.signal_stages():
            values = self.signal(stage, SUBGROUP)
            if values is not None:
                return values
        return None

    # -- rows --------------------------------------------------------------------------------
    def index_of(self, uids: list[str]) -> np.ndarray:
        """Row index of each uid, -1 where the workspace has no such readable sample."""
        found = pc.index_in(pa.array(uids, pa.string()), value_set=self.uids)
        return found.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)

    def rows(self, indices: list[int]) -> dict[int, dict[str, Any]]:
        """Location and caption of the given rows, reading only the parts that hold them."""
        starts = np.cumsum([0] + [self.ws.manifest["parts"][str(p)]["rows"]
                                  for p in self.ws.part_ids()])
        wanted = sorted({int(i) for i in indices if i >= 0})
        out: dict[int, dict[str, Any]] = {}
        for k, part in enumerate(self.ws.part_ids()):
            local = [i - starts[k] for i in wanted if starts[k] <= i < starts[k + 1]]
            if local:
                table = self.ws.read_part(part, ROW_COLUMNS).take(pa.array(local, pa.int64()))
                for i, row in zip(local, table.to_pylist(), strict=True):
                    out[int(i + starts[k])] = row
        return out
