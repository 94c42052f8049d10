"""`pairsift demo` as README shows it: offline, end to end, resumable (issue 3)."""

from __future__ import annotations

import io
import re
import tarfile
from itertools import pairwise

import pytest
from rich.console import Console
from typer.testing import CliRunner

from pairsift import Workspace, api
from pairsift.cli import app
from pairsift.cli import commands as cli_commands
from pairsift.pipeline.demo import DemoResult, demo


@pytest.fixture(scope="module")
def demo_twice(tmp_path_factory) -> tuple[DemoResult, DemoResult]:
    """The demo run, then run again on the same directory (everything already done)."""
    directory = tmp_path_factory.mktemp("demo") / "demo"
    return demo(directory, progress=False), demo(directory, progress=False)


def test_rerun_reports_the_same_funnel(demo_twice):
    """Issue 15 item 9: the re-run printed 18 at every step (every step's decisions existed)."""
    first, again = demo_twice
    assert again.funnel == first.funnel
    counts = [n for _, n in first.funnel]
    assert all(a > b for a, b in pairwise(counts[:-1])), first.funnel
    assert counts[-1] == counts[-2]  # everything left after the last filter is exported


def test_demo_runs_offline_end_to_end_and_resumes(demo_twice):
    first, _ = demo_twice
    ws = Workspace.open(first.workspace)
    assert set(ws.decision_stages()) == {"filter-clip-score", "dedup-exact", "dedup-semantic"}
    shards = sorted(first.export.glob("*.tar"))
    with tarfile.open(shards[0]) as tf:
        assert any(n.endswith(".json") for n in tf.getnames())
    assert first.report.stat().st_size > 10_000

    embedded = ws.embedding_path("default", "image", ws.part_ids()[0]).stat().st_mtime_ns
    result = CliRunner().invoke(app, ["demo", str(first.directory), "-q"])
    assert result.exit_code == 0, result.output
    for line in ("samples in", "readable", "unreadable: truncated", "CLIP score in the top 75%",
                 "no exact duplicate", "no semantic duplicate", "exported"):
        assert line in result.output
    assert ws.embedding_path("default", "image", ws.part_ids()[0]).stat().st_mtime_ns == embedded
    assert Workspace.open(ws.root).num_samples() == ws.num_samples()  # nothing ingested twice


def test_suggested_explain_commands_are_never_wrapped(demo_twice, monkeypatch):
    """Issue 15 item 9: on a narrow terminal the suggested command broke when pasted."""
    first, _ = demo_twice
    narrow = Console(file=io.StringIO(), width=40)
    monkeypatch.setattr(cli_commands, "console", narrow)
    monkeypatch.setattr(api, "demo", lambda *args, **kwargs: first)
    assert CliRunner().invoke(app, ["demo", str(first.directory)]).exit_code == 0
    lines = narrow.file.getvalue().splitlines()
    commands = [line.strip() for line in lines if "pairsift explain" in line]
    assert len(commands) == len(first.dropped_examples) > 0
    for command, example in zip(commands, first.dropped_examples, strict=True):
        assert re.fullmatch(rf"pairsift explain {example['uid']} -w \S+", command)
        assert command.endswith(str(first.workspace))


def test_cli_errors_name_the_problem(tmp_path):
    result = CliRunner().invoke(app, ["embed", "-w", str(tmp_path / "nowhere")])
    assert result.exit_code == 2
    assert "not a pairsift workspace" in result.output
