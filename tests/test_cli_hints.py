"""Every command that a message or the README tells users to run exists, spelled as the CLI
spells it (issue 15 item 9: hints named `pairsift clip_score` and `pairsift parrot`)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer

from pairsift.cli import app
from pairsift.stage import stage_names
from pairsift.workspace import Workspace, WorkspaceError, cli_name

ROOT = Path(__file__).resolve().parents[1]
QUOTED = re.compile(r"`+(pairsift [^`]+?)`+")  # `pairsift x` in messages, ``pairsift x`` in docs
README_LINE = re.compile(r"^\s*(pairsift [^#\n]+)", re.MULTILINE)  # the README's shell lines


def _suggested_commands() -> list[tuple[str, str]]:
    found = [(f"{path.relative_to(ROOT)}", m.group(1))
             for path in sorted((ROOT / "src" / "pairsift").rglob("*.py"))
             for m in QUOTED.finditer(path.read_text())
             if "{" not in m.group(1)]  # a hint made from a stage name: checked below
    readme = (ROOT / "README.md").read_text()
    found += [("README.md", m.group(1)) for m in (*QUOTED.finditer(readme),
                                                   *README_LINE.finditer(readme))]
    found += [("stage registry", f"pairsift {cli_name(name)}") for name in stage_names()]
    return found


def _runs_a_command(line: str) -> bool:
    """The words after ``pairsift`` lead through command groups to a command (what follows
    it is arguments and options); a group alone or an unknown name does not. ``a|b`` names
    alternatives, as the README's headings do."""
    return _leads_to_command(typer.main.get_command(app), line.split()[1:])


def _leads_to_command(node: typer.core.TyperCommand | typer.core.TyperGroup | None,
                      words: list[str]) -> bool:
    if not isinstance(node, typer.core.TyperGroup):
        return node is not None
    if not words:
        return False  # a group alone only prints its help
    return all(_leads_to_command(node.commands.get(name), words[1:])
               for name in words[0].split("|"))


SUGGESTED = _suggested_commands()


def test_hints_were_found():
    assert len(SUGGESTED) > 20
    assert any(where == "stage registry" for where, _ in SUGGESTED)


@pytest.mark.parametrize(("where", "line"), SUGGESTED, ids=[f"{w}: {c}" for w, c in SUGGESTED])
def test_suggested_command_exists(where, line):
    assert _runs_a_command(line), f"{where} suggests `{line}`, which is not a pairsift command"


def test_missing_signal_hint_names_its_command(tmp_path):
    ws = Workspace.open(tmp_path / "ws", create=True)
    with pytest.raises(WorkspaceError, match=r"run `pairsift parrot spot` first"):
        ws.signals("parrot-spot")
    with pytest.raises(WorkspaceError, match=r"run `pairsift score` first"):
        ws.signals("score")
