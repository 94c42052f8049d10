"""The demo: build a small corpus offline, run the spine on it, report the funnel."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..synth import make_corpus
from ..workspace import Workspace
from .embed import embed
from .export import dropped_uids, export
from .ingest import ingest
from .score import filter_clip_score, score


@dataclass
class DemoResult:
    directory: Path
    workspace: Path
    export: Path
    inputs: int
    readable: int
    errors: Counter
    kept: int
    exported: int
    threshold: float
    dropped_examples: list[dict] = field(default_factory=list)


def demo(directory: str | Path = "pairsift-demo", *, model: str = "default", top: float = 0.75,
         progress: bool = True) -> DemoResult:
    """Make a corpus from photos shipped in installed packages and curate it, offline.

    Re-running on the same directory resumes: finished steps are not recomputed.
    """
    directory = Path(directory).resolve()
    corpus_dir = directory / "corpus"
    if not (corpus_dir / "captions.csv").exists():
        make_corpus(corpus_dir, layout="folder")
    ws_dir = directory / "workspace"
    summary = ingest(corpus_dir / "images", ws_dir, name="demo",
                     captions=corpus_dir / "captions.csv", progress=progress)
    embed(ws_dir, model=model, progress=progress)
    score(ws_dir)
    decided = filter_clip_score(ws_dir, top=top)
    exported = export(ws_dir, directory / "export", format="webdataset")
    return DemoResult(
        directory=directory, workspace=ws_dir, export=directory / "export",
        inputs=summary.total, readable=summary.samples, errors=summary.errors,
        kept=decided.kept, exported=exported.exported, threshold=decided.threshold,
        dropped_examples=_lowest_scores(Workspace.open(ws_dir), 5),
    )


def _lowest_scores(ws: Workspace, n: int) -> list[dict]:
    """The dropped samples with the lowest CLIP scores, with their captions."""
    dropped = dropped_uids(ws)
    scores = {r["uid"]: r["clip_score"] for r in ws.signals("clip_score").to_pylist()}
    rows = [r for _, t in ws.iter_parts(["uid", "key", "caption"]) for r in t.to_pylist()
            if r["uid"] in dropped]
    rows.sort(key=lambda r: (scores.get(r["uid"]) is None, scores.get(r["uid"]) or 0.0))
    return [{**r, "clip_score": scores.get(r["uid"])} for r in rows[:n]]
