"""The report's plots: matplotlib figures embedded as SVG data URIs.

Figures are built with ``matplotlib.figure.Figure`` (never pyplot), so no GUI backend is
selected and a user's pyplot state is left alone; the style lives in an ``rc_context`` that is
undone after each figure. SVG keeps text as text (small, sharp at any zoom); an ``<img>`` data
URI keeps each plot's ids and styles out of the page.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from contextlib import contextmanager

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator, ScalarFormatter, StrMethodFormatter

KEPT, DROPPED, INK, MUTED = "#3b6fb6", "#e07b39", "#1f2933", "#7b8794"
STYLE = {
    "svg.fonttype": "none",  # text stays text: smaller files, selectable labels
    "svg.hashsalt": "pairsift",  # stable ids: the same data gives the same file
    "font.family": "sans-serif",
    "font.size": 9,
    "axes.edgecolor": MUTED,
    "axes.labelcolor": INK,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "axes.grid.axis": "y",
    "grid.color": "#e4e7eb",
    "xtick.color": MUTED,
    "ytick.color": MUTED,
    "legend.frameon": False,
}
MAX_BINS = 60
SKEW = 20  # tallest bar / median bar above which counts go on a log scale


@contextmanager
def _figure(width: float = 6.4, height: float = 2.6) -> Iterator[Figure]:
    with matplotlib.rc_context(STYLE):
        yield Figure(figsize=(width, height), layout="constrained")


def _uri(fig: Figure) -> str:
    buffer = io.BytesIO()
    with matplotlib.rc_context(STYLE):
        fig.savefig(buffer, format="svg", metadata={"Date": None})
    return "data:image/svg+xml;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def histogram(values: np.ndarray, *, xlabel: str, threshold: float | None = None,
              dropped: np.ndarray | None = None) -> str:
    """Histogram of the finite values; with a ``dropped`` mask, kept and dropped are stacked.

    Colours come from the decisions themselves, not from the side of the threshold, so ties
    at the threshold and samples without a value are never drawn on the wrong side.
    """
    finite = np.isfinite(values)
    shown = values[finite]
    lo, hi = (float(shown.min()), float(shown.max())) if shown.size else (0.0, 1.0)
    bins = int(np.clip(2 * np.sqrt(shown.size), 10, MAX_BINS))  # few samples, wide bins
    edges = np.linspace(lo, hi if hi > lo else lo + 1e-6, bins + 1)
    if threshold is not None and lo < threshold < hi:
        edges = np.unique(np.append(edges, threshold))  # no bar straddles the threshold
    gone = np.zeros(shown.size, bool) if dropped is None else dropped[finite]
    kept_counts = np.histogram(shown[~gone], edges)[0]
    drop_counts = np.histogram(shown[gone], edges)[0]
    with _figure(width=6.8) as fig:
        ax = fig.add_subplot()
        for counts, bottom, color in ((kept_counts, 0, KEPT), (drop_counts, kept_counts, DROPPED)):
            ax.bar(edges[:-1], counts, bottom=bottom, width=np.diff(edges), align="edge",
                   color=color, linewidth=0)
        if threshold is not None:
            _threshold_line(ax, threshold, right_half=threshold > (lo + hi) / 2)
        if dropped is not None:
            ax.legend(handles=[Patch(color=KEPT, label="kept"),
                               Patch(color=DROPPED, label="dropped")],
                      loc="lower right", bbox_to_anchor=(1, 1), ncols=2, borderaxespad=0)
        ax.set_xlabel(xlabel)
        _count_axis(ax, kept_counts + drop_counts, "samples")
        return _uri(fig)


def _count_axis(ax: Axes, counts: np.ndarray, label: str) -> None:
    """Integer ticks; a log scale when one bar dwarfs the rest (e.g. CoTR's spike at 0)."""
    filled = counts[counts > 0]
    if filled.size and filled.max() > SKEW * np.median(filled):
        ax.set_yscale("log")
        ax.set_ylim(0.5, filled.max() * 2)  # below 1, so a bar of one sample shows
        ax.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
        ax.set_ylabel(f"{label} (log scale)")
    else:
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(label)


def _threshold_line(ax: Axes, threshold: float, right_half: bool) -> None:
    """A dashed line labelled on the side with more room."""
    ax.axvline(threshold, color=INK, linestyle="--", linewidth=1.2)
    ax.annotate(f"threshold {threshold:.4g}", (threshold, 1), xycoords=("data", "axes fraction"),
                xytext=(-4 if right_half else 4, -2), textcoords="offset points", va="top",
                ha="right" if right_half else "left", color=INK)


def sweep(eps: np.ndarray, kept: np.ndarray, chosen: float | None) -> str:
    """SemDeDup's ε sweep: the kept fraction for every ε, with the chosen ε marked."""
    with _figure(width=4.4) as fig:
        ax = fig.add_subplot()
        ax.plot(eps, kept, color=KEPT, linewidth=1.8)
        if chosen is not None:
            at = float(np.interp(chosen, eps, kept))
            ax.axvline(chosen, color=INK, linestyle="--", linewidth=1.2)
            ax.plot([chosen], [at], "o", color=DROPPED)
            ax.annotate(f"ε={chosen:.4g}: keeps {at:.1%}", (chosen, at), xytext=(6, 6),
                        textcoords="offset points", color=INK)
        ax.set_xscale("log")
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("ε (duplicate if similarity > 1 − ε)")
        ax.set_ylabel("kept fraction")
        ax.grid(True, axis="both")
        return _uri(fig)


def cluster_sizes(sizes: np.ndarray) -> str:
    """How many clusters have each size; log-spaced bins once sizes span orders of magnitude."""
    top = int(sizes.max())
    with _figure(width=6.8) as fig:
        ax = fig.add_subplot()
        if top <= MAX_BINS:
            ax.hist(sizes, bins=np.arange(0.5, top + 1.5), color=KEPT)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        else:
            ax.hist(sizes, bins=np.unique(np.geomspace(1, top + 1, MAX_BINS + 1).round()),
                    color=KEPT)
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.set_xlabel("cluster size (samples)")
        ax.set_ylabel("clusters")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        return _uri(fig)
