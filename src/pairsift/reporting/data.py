"""What the report reads from a workspace, as numpy columns over one global row index.

Every readable sample has a row index (parts in order, rows in part order). Decisions and
signals are stored per part with rows aligned with the part's, so "dropped by stage" masks
(1 byte a sample) and signal columns (4 bytes a sample for float32) are concatenations of
per-part arrays, and sections combine them without joins. Nothing holds a value per sample
for the whole collection beyond such arrays (and a 4-byte subgroup code for the fairness
table): drop reasons are counted part by part, the
samples a gallery shows are located from those counts, and only their rows, evidence and
duplicates are read. Uids are never gathered: a uid is found by scanning one part's uid
column at a time.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..workspace import Workspace

ROW_COLUMNS = ["uid", "key", "source", "container", "shard", "offset", "length", "caption"]
SUBGROUP = "subgroup"

Reason = tuple[str, str | None]  # (verdict, reason) of decisions that do not keep a sample


@dataclass(frozen=True)
class StageDecisions:
    """One stage's decisions, summarised in one pass over its parts."""

    dropped: np.ndarray  # bool per row: the verdict is "drop"
    reasons: dict[Reason, np.ndarray]  # samples not kept, per part, most common first
    decided: int  # decision rows (every row of every part)


class ReportData:
    """Cached, column-wise reads of one workspace for the report's sections."""

    def __init__(self, ws: Workspace):
        self.ws = ws
        self._decisions: dict[str, StageDecisions] = {}

    @cached_property
    def part_ids(self) -> list[int]:
        return self.ws.part_ids()

    @cached_property
    def starts(self) -> np.ndarray:
        """The row index of each part's first row, and the number of rows last."""
        return np.concatenate([[0], np.cumsum(self.ws.part_sizes(), dtype=np.int64)])

    @property
    def n(self) -> int:
        return int(self.starts[-1])

    @cached_property
    def errors(self) -> pa.Table:
        return self.ws.errors()

    @cached_property
    def ingest_errors(self) -> int:
        return int(pc.sum(pc.equal(self.errors.column("stage"), "ingest")).as_py() or 0)

    # -- runs --------------------------------------------------------------------------------
    def run_record(self, stage: str) -> dict[str, Any] | None:
        """The manifest record of the current run of ``stage``."""
        return self.ws.run_record(stage) if self.ws.current_run(stage) else None

    @cached_property
    def decision_stages(self) -> list[str]:
        """Decision stages in the order their current runs were recorded (the funnel order)."""
        return self.ws.decision_stages()

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
        if stage not in self.decision_stages:
            return {}
        dropped = self.dropped(stage)
        if not dropped.any():
            return {}
        row = int(np.argmax(dropped))
        k = int(np.searchsorted(self.starts, row, side="right")) - 1
        evidence = self.ws.part_decisions(self.part_ids[k], stage, ["evidence"])
        return json.loads(evidence.column("evidence")[row - int(self.starts[k])].as_py() or "{}")

    # -- decisions ---------------------------------------------------------------------------
    def decisions(self, stage: str) -> StageDecisions:
        if stage not in self._decisions:
            self._decisions[stage] = self._read_decisions(stage)
        return self._decisions[stage]

    def _read_decisions(self, stage: str) -> StageDecisions:
        """Drop mask and per-part counts of each (verdict, reason), one part at a time.

        Reasons come in order of first appearance, then most common first (a stable sort).
        """
        dropped, counts, decided = np.zeros(self.n, bool), {}, 0
        for k, part in enumerate(self.part_ids):
            table = self.ws.part_decisions(part, stage, ["verdict", "reason"])
            verdict = table.column("verdict")
            start = int(self.starts[k])
            dropped[start:start + table.num_rows] = pc.fill_null(
                pc.equal(verdict, "drop"), False).to_numpy(zero_copy_only=False)
            decided += table.num_rows
            groups = table.filter(pc.not_equal(verdict, "keep")).group_by(
                ["verdict", "reason"], use_threads=False).aggregate([([], "count_all")])
            for group in groups.to_pylist():
                per_part = counts.setdefault((group["verdict"], group["reason"]),
                                             np.zeros(len(self.part_ids), np.int64))
                per_part[k] = group["count_all"]
        ranked = sorted(counts.items(), key=lambda item: -int(item[1].sum()))
        return StageDecisions(dropped, dict(ranked), decided)

    def dropped(self, stage: str) -> np.ndarray:
        """Bool per row: the stage's current decision drops the sample."""
        return self.decisions(stage).dropped

    def dropped_any(self) -> np.ndarray:
        mask = np.zeros(self.n, bool)
        for stage in self.decision_stages:
            mask |= self.dropped(stage)
        return mask

    def picked(self, stage: str, picks: dict[Reason, np.ndarray]
               ) -> dict[Reason, tuple[np.ndarray, list[str | None]]]:
        """Row index and evidence of picked samples: ``picks`` gives, per (verdict, reason),
        ranks among the samples with that verdict and reason (sorted, in row order).

        Only the parts holding a chosen sample are read, each once.
        """
        counts = self.decisions(stage).reasons
        located = {key: _locate(ranks, counts[key]) for key, ranks in picks.items()}
        rows: dict[Reason, list[np.ndarray]] = {key: [] for key in picks}
        evidence: dict[Reason, list[str | None]] = {key: [] for key in picks}
        for k in sorted({int(k) for parts, _ in located.values() for k in parts}):
            table = self.ws.part_decisions(self.part_ids[k], stage,
                                           ["verdict", "reason", "evidence"])
            for key, (parts, local) in located.items():
                if not (parts == k).any():
                    continue
                positions = np.flatnonzero(_matches(table, key))[local[parts == k]]
                rows[key].append(positions + self.starts[k])
                evidence[key] += table.column("evidence").take(positions).to_pylist()
        return {key: (np.concatenate(rows[key]) if rows[key] else np.zeros(0, np.int64),
                      evidence[key]) for key in picks}

    # -- signals -----------------------------------------------------------------------------
    def signal(self, stage: str, column: str) -> np.ndarray | None:
        """The column of the stage's current run, one value per row; None if it is not there.

        Read on each call (a float32 column is 4 bytes a sample): sections ask once or twice.
        """
        paths = self._signal_paths(stage, column)
        if paths is None:
            return None
        tables = [pq.read_table(p, columns=[column]) for p in paths]
        # an empty part's column may have been written as Arrow's null type: promote it
        table = pa.concat_tables(tables, promote_options="default")
        return table.column(column).to_numpy(zero_copy_only=False)

    def _signal_paths(self, stage: str, column: str) -> list[Path] | None:
        """Every part's signal file of the stage's current run, if all hold ``column``."""
        run = self.ws.current_run(stage)
        if run is None:
            return None
        paths = [self.ws.signal_path(stage, run, p) for p in self.part_ids]
        if not paths or not all(p.exists() for p in paths):
            return None
        return paths if column in pq.read_schema(paths[0]).names else None

    def subgroup_codes(self) -> tuple[list[str], np.ndarray] | None:
        """Subgroup names and each row's index into them (int32), from a ``subgroup`` column
        of the parts or of any signal stage, first found; a missing value is "(none)"."""
        columns = self._subgroup_columns()
        if columns is None:
            return None
        names: dict[str, int] = {}
        codes = np.empty(self.n, np.int32)
        for start, column in zip(self.starts[:-1], columns, strict=True):
            if not len(column):
                continue
            if pa.types.is_null(column.type):  # a column with no value at all
                column = column.cast(pa.string())
            encoded = pc.dictionary_encode(column.combine_chunks(), null_encoding="encode")
            lookup = np.array([names.setdefault("(none)" if v is None else str(v), len(names))
                               for v in encoded.dictionary.to_pylist()], np.int32)
            codes[start:start + len(column)] = lookup[encoded.indices.to_numpy()]
        return list(names), codes

    def subgroups(self) -> np.ndarray | None:
        """The subgroup label of each row (8 bytes a row: labels are shared str objects)."""
        found = self.subgroup_codes()
        if found is None:
            return None
        names, codes = found
        return np.array(names, dtype=object)[codes]

    def _subgroup_columns(self) -> Iterator[pa.ChunkedArray] | None:
        if self.part_ids and SUBGROUP in pq.read_schema(self.ws.part_path(
                self.part_ids[0])).names:
            return (t.column(SUBGROUP) for _, t in self.ws.iter_parts([SUBGROUP]))
        for stage in self.ws.signal_stages():
            paths = self._signal_paths(stage, SUBGROUP)
            if paths is not None:
                return (pq.read_table(p, columns=[SUBGROUP]).column(SUBGROUP) for p in paths)
        return None

    # -- rows --------------------------------------------------------------------------------
    def find(self, uids: Iterable[str]) -> dict[str, int]:
        """Row index of each of ``uids`` that a readable sample has.

        Scans one part's uid column at a time and stops once every uid is found.
        """
        wanted = pa.array(sorted({u for u in uids if u}), pa.string())
        found: dict[str, int] = {}
        for k, part in enumerate(self.part_ids):
            if len(found) == len(wanted):
                break
            column = self.ws.read_part(part, ["uid"]).column("uid")
            hits = pc.index_in(column, value_set=wanted).is_valid()
            rows = np.flatnonzero(hits.to_numpy(zero_copy_only=False))
            for row, uid in zip(rows, column.take(rows).to_pylist(), strict=True):
                found.setdefault(uid, int(row + self.starts[k]))  # the first of equal uids
        return found

    def rows(self, indices: list[int]) -> dict[int, dict[str, Any]]:
        """Location and caption of the given rows, reading only the parts that hold them."""
        wanted = sorted({int(i) for i in indices if i >= 0})
        out: dict[int, dict[str, Any]] = {}
        for k, part in enumerate(self.part_ids):
            start, stop = int(self.starts[k]), int(self.starts[k + 1])
            local = [i - start for i in wanted if start <= i < stop]
            if local:
                table = self.ws.read_part(part, ROW_COLUMNS).take(pa.array(local, pa.int64()))
                for i, row in zip(local, table.to_pylist(), strict=True):
                    out[i + start] = row
        return out


def _locate(ranks: np.ndarray, per_part: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Part index and rank within the part of each rank among all parts' samples."""
    ends = np.cumsum(per_part)
    parts = np.searchsorted(ends, ranks, side="right")
    return parts, ranks - (ends - per_part)[parts]


def _matches(table: pa.Table, key: Reason) -> np.ndarray:
    """Bool per row: the decision has this verdict and reason (a null reason matches null)."""
    verdict, reason = key
    same = (pc.is_null(table.column("reason")) if reason is None
            else pc.equal(table.column("reason"), reason))
    both = pc.and_(pc.equal(table.column("verdict"), verdict), same)
    return pc.fill_null(both, False).to_numpy(zero_copy_only=False)
