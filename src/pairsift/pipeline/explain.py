"""Explain: everything the workspace recorded about one sample."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.compute as pc

from ..workspace import Workspace, WorkspaceError


def explain(workspace: str | Path, uid: str) -> dict[str, Any]:
    """The sample's row, every current signal, every decision and every error for ``uid``."""
    ws = Workspace.open(workspace)
    uid = uid.strip().lower()
    report: dict[str, Any] = {"uid": uid, "sample": None, "signals": {}, "decisions": [],
                              "errors": []}
    for part in ws.part_ids():
        uids = ws.read_part(part, ["uid"]).column("uid").to_pylist()
        if uid in uids:
            i = uids.index(uid)
            report["sample"] = {"part": part, **ws.read_part(part).slice(i, 1).to_pylist()[0]}
            for stage, signals in ws.part_signals(part).items():
                row = signals.slice(i, 1).to_pylist()[0]
                report["signals"][stage] = {k: v for k, v in row.items() if k != "uid"}
            break
    decisions = ws.decisions()
    for row in decisions.filter(pc.equal(decisions.column("uid"), uid)).to_pylist():
        row["evidence"] = json.loads(row["evidence"]) if row["evidence"] else {}
        report["decisions"].append(row)
    errors = ws.errors()
    report["errors"] = errors.filter(pc.equal(errors.column("uid"), uid)).to_pylist()
    if report["sample"] is None and not report["errors"]:
        raise WorkspaceError(f"uid {uid} is not in {ws.root}")
    report["verdict"] = _verdict(report)
    return report


def _verdict(report: dict[str, Any]) -> str:
    if report["sample"] is None:
        return "error"
    return "drop" if any(d["verdict"] == "drop" for d in report["decisions"]) else "keep"
