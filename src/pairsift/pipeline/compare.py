"""``pairsift compare``: training runs side by side, data and model.

For each run folder written by ``pairsift train``: the export it trained on (samples, unique
caption word trigrams, share of synthetic captions) and its model (the metrics of every
``pairsift evaluate --out RUN`` result in the folder, and the parrot audit's Sync. Score,
computed once and kept in ``RUN/parrot-audit/``). Caption diversity as unique trigrams is how
Nguyen et al. (2023) compare raw and generated captions; a caption is synthetic where the
export's ``caption_source`` column says so (absent: every caption is the raw one).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..captionmetrics import TrigramCounter
from ..errors import ConfigError
from ..models import RUN_PREFIX, TRAIN_RECORD
from ..stages.mix import CAPTION_SOURCE, SYNTHETIC
from ..stages.parrot_audit import WORDS
from .parrot import parrot_audit
from .train import describe_export

AUDIT_DIR = "parrot-audit"
CHUNK = 10_000


@dataclass
class RunComparison:
    run: Path
    arch: str
    samples: int
    steps: int
    unique_trigrams: int
    synthetic_share: float
    sync_score: float | None
    metrics: dict[str, float] = field(default_factory=dict)


def compare(runs: Sequence[str | Path], *, audit: bool = True, audit_words: list[str] | None = None,
            device: str = "cpu", progress: bool = False) -> list[RunComparison]:
    """One :class:`RunComparison` per training run folder."""
    return [_compare_one(Path(r), audit, audit_words, device, progress) for r in runs]


def _compare_one(run: Path, audit: bool, words: list[str] | None, device: str,
                 progress: bool) -> RunComparison:
    try:
        record = json.loads((run / TRAIN_RECORD).read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{run} is not a `pairsift train` run (no {TRAIN_RECORD})") from exc
    trigrams, synthetic, captions = caption_stats(record["export"]["path"])
    metrics = {}
    for path in sorted(run.glob("evaluation-*.json")):
        result = json.loads(path.read_text())
        metrics.update({f"{result['task']}:{k}": v for k, v in result["metrics"].items()})
    return RunComparison(run, record["arch"], record["samples"], record["steps"], trigrams,
                         synthetic / captions if captions else float("nan"),
                         _sync_score(run, words, device, progress) if audit else None, metrics)


def _sync_score(run: Path, words: list[str] | None, device: str, progress: bool) -> float:
    """The run's parrot audit, computed once (for the same words) and kept in the run."""
    saved = run / AUDIT_DIR / "parrot_audit.json"
    if saved.exists():
        summary = json.loads(saved.read_text())
        if sorted(summary.get("asked", [])) == sorted(set(words or WORDS)):
            return summary["sync_score"]
    return parrot_audit(model=f"{RUN_PREFIX}{run}", device=device, out=run / AUDIT_DIR,
                        words=words, progress=progress).sync_score


def caption_stats(export: str | Path) -> tuple[int, int, int]:
    """(unique word trigrams, synthetic captions, captions) of an export, read in chunks;
    trigrams counted as ``mix --compare`` and the report count them (64-bit hashes)."""
    trigrams = TrigramCounter()
    synthetic = 0
    for captions, sources in _caption_chunks(export):
        trigrams.add(captions)
        synthetic += sum(s == SYNTHETIC for s in sources)
    return len(trigrams.unique()), synthetic, trigrams.captions


def _caption_chunks(export: str | Path) -> Iterator[tuple[list[str], list[str | None]]]:
    info = describe_export(export)
    if info.dataset_type == "csv":
        import pyarrow.csv as pacsv

        reader = pacsv.open_csv(info.train_data, parse_options=pacsv.ParseOptions(
            delimiter="\t", newlines_in_values=True))
        for batch in reader:
            captions = batch.column("title").to_pylist()
            sources = (batch.column(CAPTION_SOURCE).to_pylist()
                       if CAPTION_SOURCE in batch.schema.names else [None] * len(captions))
            yield [c or "" for c in captions], sources
        return
    import webdataset as wds

    samples = wds.WebDataset(info.train_data.split("::"), shardshuffle=False,
                             empty_check=False).decode().to_tuple("txt", "json")
    for batch in _chunks(samples, CHUNK):
        yield [t for t, _ in batch], [meta.get(CAPTION_SOURCE) for _, meta in batch]


def _chunks(items, size: int) -> Iterator[list]:
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
