"""`pairsift demo` as README shows it: offline, end to end, resumable (issue 3)."""

from __future__ import annotations

import tarfile

from typer.testing import CliRunner

from pairsift import Workspace
from pairsift.cli import app


def test_demo_runs_offline_end_to_end_and_resumes(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["demo", str(tmp_path / "demo"), "-q"])
    assert result.exit_code == 0, result.output
    for line in ("samples in", "readable", "unreadable: truncated", "CLIP score in the top 75%",
                 "no exact duplicate", "no semantic duplicate", "exported"):
        assert line in result.output
    ws = Workspace.open(tmp_path / "demo" / "workspace")
    stages = set(ws.decision_stages())
    assert stages == {"filter-clip-score", "dedup-exact", "dedup-semantic"}
    shards = sorted((tmp_path / "demo" / "export").glob("*.tar"))
    with tarfile.open(shards[0]) as tf:
        assert any(n.endswith(".json") for n in tf.getnames())
    assert (ws.root / "report" / "index.html").stat().st_size > 10_000

    embedded = ws.embedding_path("default", "image", ws.part_ids()[0]).stat().st_mtime_ns
    again = runner.invoke(app, ["demo", str(tmp_path / "demo"), "-q"])
    assert again.exit_code == 0, again.output
    assert ws.embedding_path("default", "image", ws.part_ids()[0]).stat().st_mtime_ns == embedded
    assert Workspace.open(ws.root).num_samples() == ws.num_samples()  # nothing ingested twice


def test_cli_errors_name_the_problem(tmp_path):
    result = CliRunner().invoke(app, ["embed", "-w", str(tmp_path / "nowhere")])
    assert result.exit_code == 2
    assert "not a pairsift workspace" in result.output
