"""Explain: everything the workspace recorded about one sample."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.compute as pc

from ..workspace import Workspace, WorkspaceError


def explain(workspace: str | Path, uid: str) -> dict[str, Any]:
    """The sample's row, every current signal, every decision and every error for ``uid``.

    Reads one uid column at a time to find the sample, then only its part's files.
    """
    ws = Workspace.open(workspace)
    uid = uid.strip().lower()
    report: dict[str, Any] = {"uid": uid, "sample": None, "signals": {}, "decisions": [],
                              "errors": []}
    found = ws.find_uid(uid)
    if found is not None:
        part, row = found
        report["sample"] = {"part": part, **ws.read_part(part).slice(row, 1).to_pylist()[0]}
        for stage, signals in ws.part_signals(part).items():
            values = signals.slice(row, 1).to_pylist()[0]
            report["signals"][stage] = {k: v for k, v in values.items() if k != "uid"}
        for stage in ws.decision_stages():
            decision = ws.part_decisions(part, stage).slice(row, 1).to_pylist()[0]
            decision["evidence"] = json.loads(decision["evidence"] or "{}")
            report["decisions"].append(decision)
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
