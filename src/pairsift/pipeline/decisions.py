"""Decision tables shared by every filter and dedup command (docs/design.md §4: data, not code)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from ..workspace import DECISION_SCHEMA, Workspace, config_hash


@dataclass
class FilterSummary:
    stage: str
    kept: int
    dropped: int


def decision_table(stage: str, uids: Sequence[str], drop: np.ndarray, reason: str,
                   evidence: Callable[[int], dict], config: dict) -> pa.Table:
    """One row per sample; ``evidence(i)`` is called for dropped rows only."""
    digest = config_hash(config)
    return pa.Table.from_pylist([
        {"uid": uid, "stage": stage, "verdict": "drop" if d else "keep",
         "reason": reason if d else "", "evidence": json.dumps(evidence(i)) if d else "{}",
         "config_hash": digest}
        for i, (uid, d) in enumerate(zip(uids, drop, strict=True))
    ], DECISION_SCHEMA)


def record_decisions(ws: Workspace, stage: str, config: dict, decisions: pa.Table,
                     summary: dict | None = None) -> FilterSummary:
    """Write a stage's decisions (replacing its previous ones) and log the run."""
    run = ws.start_run(stage, config)
    ws.write_decisions(stage, decisions)
    dropped = decisions.column("verdict").to_pylist().count("drop")
    ws.finish_run(stage, run, {"dropped": dropped, **(summary or {})})
    return FilterSummary(stage, decisions.num_rows - dropped, dropped)
