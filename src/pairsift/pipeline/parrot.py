"""Parrot-caption reports that are not stages: per-group rates and the encoder audit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..engine.threads import progress_bar
from ..errors import ConfigError
from ..models import load_encoder
from ..stages import parrot as algo
from ..stages.parrot_audit import STYLES, WORDS, AuditResult, audit_figure, sync_scores
from ..workspace import Workspace

GROUPINGS = ("source", "cluster")


def parrot_rates(workspace: str | Path, *, by: str = "source",
                 threshold: float = 0.0) -> list[dict]:
    """Text and parrot-caption rates per source or per cluster (signal ``cluster``)."""
    if by not in GROUPINGS:
        raise ConfigError(f"rates are by {' or '.join(GROUPINGS)}, not {by!r}")
    ws = Workspace.open(workspace)
    groups, words, cotr = [], [], []
    for part in ws.part_ids():
        spots = ws.part_signals(part)
        if algo.SPOT not in spots:
            ws.signals(algo.SPOT)  # raises the "run `pairsift parrot spot`" message
        if by == "cluster" and "cluster" not in spots:
            ws.signals("cluster")
        groups.append(spots["cluster"].column("cluster") if by == "cluster"
                      else ws.read_part(part, ["source"]).column("source"))
        words.append(pc.list_value_length(spots[algo.SPOT].column("ocr_text")).fill_null(0)
                     .to_numpy(zero_copy_only=False))
        cotr.append(spots[algo.SPOT].column("cotr").to_numpy(zero_copy_only=False))
    if not groups:
        return []
    return algo.group_rates(pa.chunked_array([g for c in groups for g in c.chunks]),
                            np.concatenate(words), np.concatenate(cotr), threshold)


def parrot_audit(*, model: str = "default", device: str = "cpu", out: str | Path | None = None,
                 words: list[str] | None = None, progress: bool = True) -> AuditResult:
    """The synthetic text benchmark (docs/algorithms.md §4.1) for encoder ``model``; with
    ``out``, writes ``parrot_audit.json`` (numbers) and ``parrot_audit.png`` (plot) there."""
    words = list(dict.fromkeys(words or WORDS))
    # The bar starts before the model loads, which takes most of a short audit's time.
    with progress_bar("parrot audit", len(words) * len(STYLES), unit="images",
                      enabled=progress) as advance:
        result = sync_scores(load_encoder(model, device), words, advance=advance)
    if out is not None:
        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "parrot_audit.json").write_text(json.dumps(result.summary(), indent=1))
        audit_figure(result).savefig(folder / "parrot_audit.png", dpi=120)
    return result
