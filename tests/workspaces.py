"""Runs written straight into a workspace, as stages write them: for tests of what reads
signals and decisions (report, export, filters) without running the stage that makes them."""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
import pyarrow as pa

from pairsift import Workspace
from pairsift.workspace import DECISION_SCHEMA, config_hash, write_table


def fake_run(ws: Workspace, stage: str, config: dict, *,
             signals: Callable[[int, pa.Table], dict] | None = None,
             drops: Callable[[int, pa.Table], dict[str, dict]] | None = None,
             reason: str = "", summary: dict | None = None,
             inputs: dict | None = None) -> str:
    """A finished run of ``stage``: ``signals(part, rows)`` gives the part's columns, and
    ``drops(part, rows)`` maps each dropped uid to its evidence. ``rows`` holds uid and key."""
    run = config_hash(config)
    ws.begin_run(stage, run, {"kind": "test", "config": config, "options": config,
                              "inputs": inputs or {}})
    for part, rows in ws.iter_parts(["uid", "key"]):
        if signals is not None:
            write_table(ws.signal_path(stage, run, part), pa.table({
                "uid": rows.column("uid"), **signals(part, rows)}))
        if drops is not None:
            dropped = drops(part, rows)
            uids = rows.column("uid").to_pylist()
            drop = np.array([u in dropped for u in uids], bool)
            write_table(ws.decision_path(stage, run, part), pa.table({
                "uid": rows.column("uid"), "stage": [stage] * len(uids),
                "verdict": np.where(drop, "drop", "keep").tolist(),
                "reason": [reason if d else "" for d in drop],
                "evidence": [json.dumps(dropped.get(u, {})) for u in uids],
                "config_hash": [run] * len(uids)}, schema=DECISION_SCHEMA))
    ws.finish_run(stage, run, summary or {})
    return run
