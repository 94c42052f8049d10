"""The demo: build a small corpus offline, curate it end to end, report the funnel."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..synth import make_corpus
from ..workspace import Workspace
from .embed import embed
from .export import dropped_uids, export
from .hashdedup import dedup_exact
from .ingest import ingest
from .report import report
from .score import filter_clip_score, score
from .semantic import SEMDEDUP, cluster, dedup_semantic


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
    decided = filter_clip_score(ws_dir, top=top)
    funnel.append((f"CLIP score in the top {top:.0%} (>= {decided.threshold:.3f})",
                   _left(ws, [decided.stage])))
    exact = dedup_exact(ws_dir, progress=progress)
    funnel.append(("no exact duplicate", _left(ws, [decided.stage, exact.stage])))
    cluster(ws_dir, target_size=20, progress=progress)
    semantic = dedup_semantic(ws_dir, progress=progress)
    funnel.append((f"no semantic duplicate (SemDeDup, eps={semantic.eps:g})",
                   _left(ws, [decided.stage, exact.stage, SEMDEDUP])))
    exported = export(ws_dir, directory / "export", format="webdataset")
    funnel.append(("exported (WebDataset)", exported.exported))
    page = report(ws_dir, progress=progress)
    return DemoResult(directory=directory, workspace=ws_dir, export=directory / "export",
                      report=page, errors=summary.errors, funnel=funnel,
                      dropped_examples=_lowest_scores(ws, 5))


def _left(ws: Workspace, stages: list[str]) -> int:
    """Samples that no decision of ``stages`` drops. Only the steps done so far count: on a
    re-run the workspace already holds every step's decisions from the first run."""
    dropped: set[str] = set()
    for stage in stages:
        decisions = pq.read_table(ws.decision_path(stage), columns=["uid", "verdict"])
        drops = decisions.filter(pc.equal(decisions.column("verdict"), "drop"))
        dropped.update(drops.column("uid").to_pylist())
    return ws.num_samples() - len(dropped)


def _lowest_scores(ws: Workspace, n: int) -> list[dict]:
    """The samples with the lowest CLIP scores that were dropped, with their captions."""
    dropped = dropped_uids(ws)
    scores = {r["uid"]: r["clip_score"] for r in ws.signals("clip_score").to_pylist()}
    rows = [r for _, t in ws.iter_parts(["uid", "key", "caption"]) for r in t.to_pylist()
            if r["uid"] in dropped and not math.isnan(scores[r["uid"]])]
    rows.sort(key=lambda r: scores[r["uid"]])
    return [{**r, "clip_score": scores[r["uid"]]} for r in rows[:n]]
