"""The demo: build a small corpus offline, curate it end to end, report the funnel."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..synth import make_corpus
from ..workspace import Workspace, atomic_write


@dataclass
class DemoResult:
    directory: Path
    workspace: Path
    export: Path
    report: Path
    errors: Counter
    funnel: list[tuple[str, int]]  # step, samples left after it
    dropped_examples: list[dict] = field(default_factory=list)


RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "demo.yaml"


def demo(directory: str | Path = "pairsift-demo", *, model: str = "default", top: float = 0.75,
         progress: bool = True) -> DemoResult:
    """Make a corpus from photos shipped in installed packages and curate it, offline, with the
    demo recipe (written to ``DIR/demo.yaml``): ingest → embed → CLIP score (keep the top
    ``top``) → exact dedup → semantic dedup → export → report. Re-running resumes: finished
    steps are skipped.
    """
    from .run import run

    directory = Path(directory).resolve()
    corpus_dir = directory / "corpus"
    if not (corpus_dir / "captions.csv").exists():
        make_corpus(corpus_dir, layout="folder")
    recipe = directory / "demo.yaml"
    text = RECIPE.read_text().replace("model: default", f"model: {model}").replace(
        "keep_fraction: 0.75", f"keep_fraction: {top}")
    atomic_write(recipe, lambda tmp: tmp.write_text(text))
    result = run(recipe, directory / "workspace", progress=progress)
    ws = Workspace.open(result.workspace)
    ingested = result.summaries[0]
    return DemoResult(directory=directory, workspace=ws.root, export=result.exports[0].out,
                      report=result.report, errors=ingested.errors,
                      funnel=_funnel(ws, ingested, result.exports[0].exported, top),
                      dropped_examples=_lowest_scores(ws, 5))


def _funnel(ws: Workspace, ingested: Any, exported: int, top: float) -> list[tuple[str, int]]:
    """Samples left after each step, each decision adding its drops to the earlier ones'."""
    threshold = ws.run_record("filter-clip-score")["summary"]["threshold"]
    eps = ws.run_record("dedup-semantic")["summary"]["eps"]
    labels = {"filter-clip-score": f"CLIP score in the top {top:.0%} (>= {threshold:.3f})",
              "dedup-exact": "no exact duplicate",
              "dedup-semantic": f"no semantic duplicate (SemDeDup, eps={eps:g})"}
    left = dict.fromkeys(labels, 0)
    for part in ws.part_ids():
        dropped = np.zeros(ws.part_rows(part), bool)
        for stage in labels:
            dropped |= ws.dropped(part, [stage])
            left[stage] += int((~dropped).sum())
    return [("samples in", ingested.total), ("readable", ingested.samples),
            *((labels[s], n) for s, n in left.items()), ("exported (WebDataset)", exported)]


def _lowest_scores(ws: Workspace, n: int) -> list[dict]:
    """The dropped samples with the lowest CLIP scores, with their captions (n per part at
    most are kept while reading, so memory stays per part)."""
    best: list[dict] = []
    for part in ws.part_ids():
        scores = ws.part_signals(part)["score"].column("clip_score").to_numpy(
            zero_copy_only=False)
        rows = np.flatnonzero(ws.dropped(part) & ~np.isnan(scores))
        rows = rows[np.argsort(scores[rows], kind="stable")[:n]]
        table = ws.read_part(part, ["uid", "key", "caption"]).take(rows)
        best += [{**r, "clip_score": float(s)} for r, s in zip(table.to_pylist(), scores[rows],
                                                                 strict=True)]
        best = sorted(best, key=lambda r: r["clip_score"])[:n]
    return best
