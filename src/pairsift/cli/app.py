"""The typer app, its command groups, and the helpers every command shares."""

from __future__ import annotations

import functools
import warnings
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ..errors import PairsiftError

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="Curate web image-text pairs for CLIP-style training.")
GROUPS = {
    "dedup": typer.Typer(no_args_is_help=True, help="Find duplicates and drop all but one."),
    "filter": typer.Typer(no_args_is_help=True, help="Decide keep/drop from a signal."),
    "parrot": typer.Typer(no_args_is_help=True,
                          help="Parrot captions: text in images that the caption repeats."),
}
for _name, _group in GROUPS.items():
    app.add_typer(_group, name=_name)
console = Console()

Workspace = Annotated[Path, typer.Option("--workspace", "-w", envvar="PAIRSIFT_WORKSPACE",
                                         help="Workspace directory (or $PAIRSIFT_WORKSPACE).")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]


def friendly_errors(fn):
    """User errors print as one line (exit 2); option renames print what replaced them."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", FutureWarning)
            try:
                return fn(*args, **kwargs)
            except PairsiftError as exc:
                console.print(f"[red]error:[/red] {exc}", soft_wrap=True)
                raise typer.Exit(2) from None
            finally:
                for w in caught:
                    if issubclass(w.category, FutureWarning):
                        console.print(f"[yellow]note:[/yellow] {w.message}", soft_wrap=True)
                    else:
                        warnings.showwarning(w.message, w.category, w.filename, w.lineno)

    return wrapper


def counts_table(title: str, rows: list[tuple[str, int]]) -> Table:
    table = Table(title=title, show_header=False)
    for label, count in rows:
        table.add_row(label, f"{count:,}")
    return table
