"""Report: render the workspace's HTML report and write it atomically."""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from ..reporting import render_report
from ..workspace import Workspace, atomic_write


def report(workspace: str | Path, out: str | Path | None = None, *, max_thumbnails: int = 12,
           borderline: int = 8, progress: bool = True) -> Path:
    """Write one self-contained HTML page (default ``WS/report/index.html``) and return its path.

    ``max_thumbnails`` caps each gallery (one per drop reason) and ``borderline`` the samples
    shown on each side of a threshold, so the page stays small whatever the workspace's size.

    >>> from pairsift.pipeline.report import report  # doctest: +SKIP
    >>> report("ws")  # doctest: +SKIP
    PosixPath('/.../ws/report/index.html')
    """
    if max_thumbnails < 0 or borderline < 0:
        raise ConfigError("max_thumbnails and borderline must be >= 0")
    ws = Workspace.open(workspace)
    path = Path(out) if out is not None else ws.root / "report" / "index.html"
    if path.is_dir():
        path = path / "index.html"
    page = render_report(ws, max_thumbnails=max_thumbnails, borderline=borderline,
                         progress=progress)
    atomic_write(path, lambda tmp: tmp.write_text(page, encoding="utf-8"))
    return path.resolve()
