"""The demo: build a small corpus offline, curate it end to end, report the funnel."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..synth import make_corpus
from ..workspace import Workspace
from .export import export
from .report import report


@dataclass
class DemoResult:
    directory: Path
    workspace: Path
    export: Path
    report: Path
    errors: Counter
    funnel: list[tuple[str, int]]  # step, samples left after it
    dropped_examples: list[dict] = field(default_factory=list)


def demo(directory: str | Path = "pairsift-demo", *, model: str = "default", top: float = 0.75,
         progress: bool = True) -> DemoResult:
    """Make a corpus from photos shipped in installed packages and curate it, offline:
    ingest → embed → CLIP score (keep the top ``top``) → exact dedup → semantic dedup →
    export → report. Re-running on the same directory resumes; finished work is not redone.
    """
    from ..api import cluster, dedup_exact, dedup_semantic, embed, filter_clip_score, ingest, score

    directory = Path(directory).resolve()
    corpus_dir = directory / "corpus"
    if not (corpus_dir / "captions.csv").exists():
        make_corpus(corpus_dir, layout="folder")
    ws_dir = directory / "workspace"
    summary = ingest(corpus_dir / "images", ws_dir, name="demo",
                     captions=corpus_dir / "captions.csv", progress=progress)
    embed(ws_dir, model=model, progress=progress)
    score(ws_dir, progress=progress)
    funnel = [("samples in", summary.total), ("readable", summary.samples)]
    ws = Workspace.open(ws_dir)
    decided = filter_clip_score(ws_dir, keep_fraction=top, progress=progress)
    funnel.append((f"CLIP score in the top {top:.0%} (>= {decided.threshold:.3f})",
                   _left(ws)))
    dedup_exact(ws_dir, progress=progress)
    funnel.append(("no exact duplicate", _left(ws)))
    cluster(ws_dir, target_size=20, progress=progress)
    semantic = dedup_semantic(ws_dir, progress=progress)
    funnel.append((f"no semantic duplicate (SemDeDup, eps={semantic.eps:g})", _left(ws)))
    exported = export(ws_dir, directory / "export", format="webdataset")
    funnel.append(("exported (WebDataset)", exported.exported))
    page = report(ws_dir, progress=progress)
    return DemoResult(directory=directory, workspace=ws_dir, export=directory / "export",
                      report=page, errors=summary.errors, funnel=funnel,
                      dropped_examples=_lowest_scores(ws, 5))


def _left(ws: Workspace) -> int:
    ws.refresh()
    return ws.num_samples() - ws.num_dropped()


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
