"""The Python API: one function per CLI command, with the same names.

>>> import pairsift
>>> summary = pairsift.demo("demo-dir", progress=False)  # doctest: +SKIP
"""

from __future__ import annotations

from .pipeline.demo import demo
from .pipeline.embed import embed
from .pipeline.explain import explain
from .pipeline.export import export
from .pipeline.fairdedup import dedup_fair
from .pipeline.hashdedup import dedup_exact, dedup_perceptual
from .pipeline.ingest import ingest
from .pipeline.parrot import (
    filter_parrot,
    filter_simple_fix,
    filter_text_dominated,
    parrot_audit,
    parrot_rates,
    parrot_relative,
    parrot_spot,
)
from .pipeline.report import report
from .pipeline.score import filter_clip_score, score
from .pipeline.search import calibrate, classify, index, search, serve
from .pipeline.semantic import cluster, dedup_semantic

__all__ = ["calibrate", "classify", "cluster", "dedup_exact", "dedup_fair", "dedup_perceptual",
           "dedup_semantic", "demo", "embed", "explain", "export", "filter_clip_score",
           "filter_parrot", "filter_simple_fix", "filter_text_dominated", "index", "ingest",
           "parrot_audit", "parrot_rates", "parrot_relative", "parrot_spot", "report", "score",
           "search", "serve"]
