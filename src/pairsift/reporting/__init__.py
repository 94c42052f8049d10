"""The HTML report: one self-contained page that shows what curation did to a workspace.

``render_report(ws)`` returns the page; :func:`pairsift.pipeline.report.report` writes it.
Sections live in :mod:`.sections` (one builder per section, None when its data is absent).
"""

from .render import render_report
from .sections import SIGNALS, Section, SignalSpec, builders

__all__ = ["SIGNALS", "Section", "SignalSpec", "builders", "render_report"]
