"""CLIP score (a map stage over stored embeddings) and the filter decisions made on it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from ..engine.local import run_signal_stage
from ..models import model_slug
from ..stages.score import STAGE, clip_score_decisions, clip_scores, resolve_threshold
from ..workspace import Workspace, WorkspaceError, config_hash
from .decisions import FilterSummary, record_decisions

SIGNAL = "clip_score"


@dataclass
class ThresholdSummary(FilterSummary):
    threshold: float


def current_model(ws: Workspace) -> str:
    try:
        return ws.run_config("embed")["model"]
    except WorkspaceError:
        raise WorkspaceError(f"{ws.root}: no embeddings yet; run `pairsift embed` first") from None


def score(workspace: str | Path, *, model: str | None = None, progress: bool = True) -> int:
    """Write ``clip_score`` (cosine of image and caption embeddings) for every part.

    Returns the number of parts scored (parts already scored with this model are skipped).
    """
    ws = Workspace.open(workspace)
    model = model or current_model(ws)
    slug = model_slug(model)

    def compute(part: int, rows: pa.Table, advance) -> tuple[pa.Table, list[dict]]:
        scores = clip_scores(ws.embeddings(slug, "image", part), ws.embeddings(slug, "text", part))
        advance(rows.num_rows)
        return pa.table({"uid": rows.column("uid"), SIGNAL: scores}), []

    return run_signal_stage(ws, SIGNAL, {"model": model}, compute, columns=["uid"],
                            progress=progress)


def filter_clip_score(workspace: str | Path, *, threshold: float | None = None,
                      top: float | None = None, nan_policy: str = "exclude") -> ThresholdSummary:
    """Decide keep/drop on CLIP score: ``>= threshold``, or DataComp's top fraction ``top``.

    ``nan_policy`` (with ``top``): ``exclude`` takes the fraction of the scored samples,
    ``datacomp`` of all samples, unscored ones included, as DataComp's code does.
    """
    ws = Workspace.open(workspace)
    config = {"threshold": threshold, "top": top, "nan_policy": nan_policy,
              "scores": ws.current_run(SIGNAL)}
    table = ws.signals(SIGNAL, ["uid", SIGNAL])
    scores = table.column(SIGNAL).to_numpy(zero_copy_only=False).astype(np.float32)
    cut = resolve_threshold(scores, threshold=threshold, fraction=top, nan_policy=nan_policy)
    decisions = clip_score_decisions(table.column("uid").combine_chunks(), scores, cut,
                                     fraction=top, config_hash=config_hash(config))
    s = record_decisions(ws, STAGE, config, decisions, {"threshold": cut})
    return ThresholdSummary(s.stage, s.kept, s.dropped, cut)

